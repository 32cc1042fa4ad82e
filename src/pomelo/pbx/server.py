"""The SIP server of the platform: one endpoint, requests dispatched by method.

It runs in the same asyncio process as the HTTP API. Every request first passes the security
gate (rate limit, bans): a scanner's flood costs a dictionary lookup and gets no answer at all,
so Pomelo never amplifies traffic towards a spoofed source.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Protocol

from pomelo.sip.endpoint import SipEndpoint
from pomelo.sip.message import SipRequest, SipResponse
from pomelo.sip.transaction import ServerTransaction
from pomelo.sip.transport import Source

log = logging.getLogger(__name__)

Handler = Callable[[ServerTransaction], Awaitable[None] | None]
AckHandler = Callable[[SipRequest, Source], None]

ALLOWED_METHODS = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, UPDATE, INFO, REFER, NOTIFY"


class SipGate(Protocol):
    """What the server asks the security layer before doing any work for a request."""

    def admit(self, ip: str, method: str) -> bool:
        """False: drop silently (banned source, or over its rate)."""

    def inspect(self, request: SipRequest, ip: str) -> bool:
        """After parsing: False drops silently (a scanner's signature bans its source)."""


class OpenGate:
    """Admits everything (tests of other parts, and before security is configured)."""

    def admit(self, ip: str, method: str) -> bool:
        return True

    def inspect(self, request: SipRequest, ip: str) -> bool:
        return True


class SipServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        gate: SipGate | None = None,
        transports: tuple[str, ...] = ("UDP", "TCP"),
        tls: tuple[int, ssl.SSLContext] | None = None,
        ws_port: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.gate: SipGate = gate if gate is not None else OpenGate()
        self._transports = transports
        self._tls = tls
        self._ws_port = ws_port
        self.tls_port: int | None = None
        self.ws_port: int | None = None
        self._handlers: dict[str, Handler] = {}
        self._ack_handler: AckHandler | None = None
        self.trusted_sources: set[tuple[str, int]] = set()
        """Exact (ip, port) sources inside this process (the WebRTC gateway's UA): they skip
        the rate limit and bans, which would otherwise make all browser phones share the
        loopback address's budget."""
        self.endpoint = SipEndpoint(self._on_request, on_ack=self._on_ack)
        transactions = self.endpoint.transactions
        # Gate requests before a transaction exists: a dropped request must leave no state and
        # trigger no automatic "100 Trying".
        self.endpoint.transports.set_handlers(self._gated_receive, transactions.connection_lost)

    def route(self, method: str, handler: Handler) -> None:
        self._handlers[method.upper()] = handler

    def on_ack(self, handler: AckHandler) -> None:
        self._ack_handler = handler

    async def start(self) -> None:
        for kind in self._transports:
            transport = await self.endpoint.listen(kind, self.host, self.port)
            self.port = transport.local_address[1]
            log.info("SIP listening on %s %s:%s", kind, self.host, self.port)
        if self._tls is not None:
            port, context = self._tls
            transport = await self.endpoint.listen("TLS", self.host, port, ssl_context=context)
            self.tls_port = transport.local_address[1]
            log.info("SIP listening on TLS %s:%s", self.host, self.tls_port)
        if self._ws_port is not None:
            transport = await self.endpoint.listen("WS", self.host, self._ws_port)
            self.ws_port = transport.local_address[1]
            log.info("SIP listening on WS %s:%s", self.host, self.ws_port)

    async def stop(self) -> None:
        await self.endpoint.close()

    def _gated_receive(self, message: SipRequest | SipResponse, source: Source) -> None:
        if isinstance(message, SipRequest):
            ip = source.remote[0]
            trusted = self.trusted_sources and (ip, source.remote[1]) in self.trusted_sources
            if not trusted and not (
                self.gate.admit(ip, message.method) and self.gate.inspect(message, ip)
            ):
                return
        self.endpoint.transactions.receive(message, source)

    def _on_request(self, tx: ServerTransaction) -> Awaitable[None] | None:
        request = tx.request
        handler = self._handlers.get(request.method)
        if handler is not None:
            return handler(tx)
        if request.method == "OPTIONS":
            tx.reply(200, headers=[("Allow", ALLOWED_METHODS), ("Accept", "application/sdp")])
            return None
        tx.reply(405, headers=[("Allow", ALLOWED_METHODS)])
        return None

    def _on_ack(self, request: SipRequest, source: Source) -> None:
        if self._ack_handler is not None:
            self._ack_handler(request, source)
