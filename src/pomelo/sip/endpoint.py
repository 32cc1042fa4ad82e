"""A SIP endpoint: transports + transaction layer + one request handler, wired together.

The PBX should not have to know that a response travels back over the connection its
request came on, or that a 2xx retransmission must be re-ACKed. This facade keeps that
plumbing in one place and offers the two calls a user agent core needs::

    async def on_request(tx: ServerTransaction) -> None:
        tx.reply(200)

    endpoint = SipEndpoint(on_request)
    await endpoint.listen("UDP", "127.0.0.1", 5060)
    response = await endpoint.request(options_request)

Handlers may be plain functions (cheapest) or coroutines (run as tasks). A handler that
raises gets its request answered ``500``; a CANCELled INVITE is answered ``487`` unless the
handler installed its own ``tx.on_cancel``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from pomelo.sip.message import SipRequest, SipResponse, Via, make_response
from pomelo.sip.transaction import (
    ClientInviteTransaction,
    ClientTransaction,
    ResponseCallback,
    Scheduler,
    ServerTransaction,
    Timers,
    TransactionLayer,
    new_branch,
)
from pomelo.sip.transport import (
    Source,
    Target,
    TcpTransport,
    TlsTransport,
    Transport,
    TransportError,
    TransportLayer,
    UdpTransport,
    WssTransport,
    WsTransport,
)

__all__ = ["RequestHandler", "SipEndpoint"]

log = logging.getLogger(__name__)

RequestHandler = Callable[[ServerTransaction], Awaitable[None] | None]


class SipEndpoint:
    """Transports, transactions and the transaction user's entry points in one object."""

    def __init__(
        self,
        on_request: RequestHandler,
        *,
        on_ack: Callable[[SipRequest, Source], None] | None = None,
        timers: Timers | None = None,
        scheduler: Scheduler | None = None,
        max_server_transactions: int = 50_000,
    ) -> None:
        self._handler = on_request
        self._on_ack = on_ack
        self.transports = TransportLayer()
        self.transactions = TransactionLayer(
            self._on_request,
            on_ack=on_ack,
            on_stray_response=self._on_stray_response,
            timers=timers,
            scheduler=scheduler,
            max_server_transactions=max_server_transactions,
        )
        self.transports.set_handlers(self.transactions.receive, self.transactions.connection_lost)
        self._tasks: set[asyncio.Future[Any]] = set()
        self._acks: dict[tuple[str, int], tuple[bytes, Target]] = {}

    # -- transports ---------------------------------------------------------------------

    async def listen(
        self,
        kind: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        **options: Any,
    ) -> Transport:
        """Open a UDP, TCP, TLS, WS or WSS listener (port 0 picks a free one)."""
        kind = kind.upper()
        transport: Transport
        if kind == "UDP":
            transport = UdpTransport(host, port, **options)
        elif kind == "TCP":
            transport = TcpTransport(host, port, **options)
        elif kind == "TLS":
            if ssl_context is None:
                raise ValueError("TLS needs a server ssl_context")
            transport = TlsTransport(host, port, server_context=ssl_context, **options)
        elif kind == "WS":
            transport = WsTransport(host, port, **options)
        elif kind == "WSS":
            if ssl_context is None:
                raise ValueError("WSS needs a server ssl_context")
            transport = WssTransport(host, port, ssl_context=ssl_context, **options)
        else:
            raise ValueError(f"unknown transport {kind!r}")
        return await self.transports.add(transport)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.transports.close()

    # -- client side --------------------------------------------------------------------

    async def start_request(
        self,
        request: SipRequest,
        on_response: ResponseCallback | None = None,
        *,
        target: Target | None = None,
    ) -> ClientTransaction:
        """Resolve the next hop, add our Via (unless the caller did) and start a client
        transaction. Raises :class:`TransportError` when no route or connection exists."""
        if target is None:
            target = await self.transports.resolve(request)
        if not request.vias:
            host, port = target.transport.sent_by
            params: dict[str, str | None] = {"branch": new_branch(), "rport": None}
            request.vias = [Via(target.transport.name, host, port, params)]
        return self.transactions.send_request(request, target, on_response)

    async def request(
        self,
        request: SipRequest,
        *,
        on_provisional: Callable[[SipResponse], None] | None = None,
        target: Target | None = None,
    ) -> SipResponse:
        """Send a request and wait for its final response.

        Timeouts come back as a synthetic ``408`` and transport failures as ``503``, so the
        caller handles one type. Cancelling the awaiting task CANCELs a pending INVITE.
        For an INVITE the 2xx is returned and the caller sends the ACK (:meth:`send_ack`).
        """
        loop = asyncio.get_running_loop()
        final: asyncio.Future[SipResponse] = loop.create_future()

        def on_response(tx: ClientTransaction, response: SipResponse) -> None:
            if response.status < 200:
                if on_provisional is not None:
                    on_provisional(response)
            elif not final.done():
                final.set_result(response)
            elif response.status < 300:
                self._resend_ack(response)

        try:
            tx = await self.start_request(request, on_response, target=target)
        except TransportError as exc:
            log.info("cannot send %r: %s", request, exc)
            if not request.vias:
                return make_response(request, 503, "Service Unavailable (no route)")
            return make_response(request, 503, "Service Unavailable (transport error)")
        try:
            return await asyncio.shield(final)
        except asyncio.CancelledError:
            if isinstance(tx, ClientInviteTransaction):
                tx.cancel()
            raise

    async def send_ack(self, ack: SipRequest, *, target: Target | None = None) -> None:
        """Send the ACK for a 2xx (outside any transaction, §13.2.2.4) and remember it for
        64·T1 so retransmitted 2xx responses are re-ACKed without bothering the caller."""
        if target is None:
            target = await self.transports.resolve(ack)
        if not ack.vias:
            host, port = target.transport.sent_by
            params: dict[str, str | None] = {"branch": new_branch(), "rport": None}
            ack.vias = [Via(target.transport.name, host, port, params)]
        data = ack.serialize()
        target.send(data)
        key = (ack.call_id, ack.cseq)
        self._acks[key] = (data, target)
        self.transactions._call_later(
            self.transactions.timers.timeout, lambda: self._acks.pop(key, None)
        )

    def _resend_ack(self, response: SipResponse) -> None:
        stored = self._acks.get((response.call_id, response.cseq))
        if stored is None:
            return
        data, target = stored
        try:
            target.send(data)
        except TransportError as exc:
            log.debug("re-ACK failed: %s", exc)

    def _on_stray_response(self, response: SipResponse, source: Source) -> None:
        if response.cseq_method == "INVITE" and 200 <= response.status < 300:
            self._resend_ack(response)

    # -- server side --------------------------------------------------------------------

    def _on_request(self, tx: ServerTransaction) -> None:
        if tx.is_invite:
            tx.on_cancel = _answer_487
        result = self._handler(tx)
        if result is None:
            return
        task = asyncio.ensure_future(result)
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._handler_done(tx, done))

    def _handler_done(self, tx: ServerTransaction, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        log.error("request handler failed for %r", tx.request, exc_info=exc)
        if not tx.final_sent and not tx.terminated:
            tx.reply(500)


def _answer_487(tx: ServerTransaction, cancel: SipRequest) -> None:
    tx.reply(487)
