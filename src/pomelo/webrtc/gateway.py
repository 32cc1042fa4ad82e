"""The WebRTC gateway: browser phones as SIP user agents inside the Pomelo process.

Each browser session (one WebSocket of an authenticated employee) becomes a phone of the
employee's SIP account. The gateway is an ordinary SIP UA towards Pomelo's own SIP server on
loopback UDP, so the B2BUA needs no special case: the session REGISTERs a contact of its own
(answering the registrar's digest challenge from the account's stored HA1), the B2BUA forks
calls to that contact like to any desk phone, and calls the page places arrive as INVITEs
authenticated as the account. Closing the socket unregisters the contact and hangs up.

Only the platform's SIP server may talk to the gateway's UA: requests from any other source
are refused, and a contact's user part is a random token per session, so a stale binding
left in the database by a crash reaches nobody (480).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Final, Protocol

from aiortc import RTCIceServer

from pomelo.core.errors import DomainError
from pomelo.media.session import RtpSession
from pomelo.pbx.sipcache import AccountInfo, TenantInfo
from pomelo.sip.digest import DigestError
from pomelo.sip.endpoint import SipEndpoint
from pomelo.sip.message import SipRequest, SipResponse
from pomelo.sip.transaction import ClientTransaction, ResponseCallback, ServerTransaction, new_tag
from pomelo.sip.transport import Source, Target
from pomelo.sip.uri import NameAddr, SipUri
from pomelo.webrtc.call import ALLOW, BrowserCall, CallError, CallState
from pomelo.webrtc.sipside import authorization, reachable_host

__all__ = [
    "GatewayUnavailable",
    "NoSipAccount",
    "PhoneSession",
    "RegistrationFailed",
    "WebRtcGateway",
]

log = logging.getLogger(__name__)

USER_AGENT: Final = "Pomelo WebRTC gateway"
_EVENT_QUEUE: Final = 256
_UNREGISTER_TIMEOUT: Final = 5.0
_RETRY_SECONDS: Final = 10.0

AccountsOfUser = Callable[[str, str], Awaitable[list[str]]]
OpenRtp = Callable[[], Awaitable[RtpSession]]


class AccountView(Protocol):
    """The part of :class:`~pomelo.pbx.sipcache.SipConfigCache` the gateway reads."""

    def account_by_id(self, account_id: str) -> AccountInfo | None: ...

    def tenant(self, tenant_id: str) -> TenantInfo | None: ...


class NoSipAccount(DomainError):
    error_id = "no-sip-account"


class RegistrationFailed(DomainError):
    error_id = "sip-registration-failed"


class GatewayUnavailable(DomainError):
    error_id = "phone-unavailable"


class WebRtcGateway:
    """Browser sessions, their calls, and the SIP UA they share."""

    def __init__(
        self,
        cache: AccountView,
        accounts_of_user: AccountsOfUser,
        open_rtp: OpenRtp,
        *,
        host: str | None = None,
        register_expires: int = 300,
        ice_servers: Sequence[RTCIceServer] = (),
    ) -> None:
        self._cache = cache
        self._accounts_of_user = accounts_of_user
        self.open_rtp = open_rtp
        self._host = host
        self.register_expires = register_expires
        self.ice_servers = tuple(ice_servers)
        self.endpoint: SipEndpoint | None = None
        self.pbx: Target | None = None
        self.sessions: dict[str, PhoneSession] = {}
        self.dialogs: dict[tuple[str, str], BrowserCall] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, pbx_host: str, pbx_port: int) -> None:
        """Open the UA's UDP socket for the SIP server at ``pbx_host:pbx_port``.

        The UA binds loopback by default whatever address the server uses: the server is
        in this process, and nothing outside the machine has any business with the UA.
        """
        host = reachable_host(pbx_host)
        own = self._host or ("::1" if ":" in host else "127.0.0.1")
        endpoint = SipEndpoint(self._on_request, on_ack=self._on_ack)
        transport = await endpoint.listen("UDP", own, 0)
        self.endpoint = endpoint
        self.pbx = Target(transport, (host, pbx_port))
        log.info("WebRTC gateway UA on %s:%s", *transport.sent_by)

    async def stop(self) -> None:
        for session in list(self.sessions.values()):
            await session.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.endpoint is not None:
            await self.endpoint.close()
            self.endpoint = None

    @property
    def running(self) -> bool:
        return self.endpoint is not None

    @property
    def address(self) -> tuple[str, int] | None:
        """The UA's own address: where its REGISTERs come from, where calls reach it."""
        if self.pbx is None:
            return None
        host, port = self.pbx.transport.sent_by
        return (host, port)

    def spawn(self, job: Coroutine[Any, Any, Any]) -> None:
        """Run signalling work that must not block a SIP callback; failures are logged."""
        task = asyncio.get_running_loop().create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("WebRTC gateway task failed", exc_info=task.exception())

    # -- sessions ---------------------------------------------------------------------------

    async def open_session(
        self, tenant_id: str, user_id: str, extension: str | None = None
    ) -> PhoneSession:
        """A registered phone for the employee's SIP account (the one with ``extension``, or
        the lowest one). Raises :class:`NoSipAccount`, :class:`RegistrationFailed`."""
        if not self.running:
            raise GatewayUnavailable("the SIP server is not running on this node")
        account, tenant = await self._account(tenant_id, user_id, extension)
        session = PhoneSession(self, account, tenant.sip_domain)
        self.sessions[session.token] = session
        try:
            await session.register()
        except BaseException:
            self.sessions.pop(session.token, None)
            raise
        return session

    async def _account(
        self, tenant_id: str, user_id: str, extension: str | None
    ) -> tuple[AccountInfo, TenantInfo]:
        tenant = self._cache.tenant(tenant_id)
        ids = await self._accounts_of_user(tenant_id, user_id)
        accounts = [a for a in map(self._cache.account_by_id, ids) if a is not None]
        usable = [a for a in accounts if a.enabled and a.tenant_id == tenant_id]
        if extension is not None:
            usable = [a for a in usable if a.extension == extension]
        if tenant is None or not usable:
            raise NoSipAccount("no enabled SIP account of yours to use as a phone")
        return min(usable, key=lambda a: (len(a.extension), a.extension)), tenant

    def forget(self, session: PhoneSession) -> None:
        if self.sessions.get(session.token) is session:
            del self.sessions[session.token]

    def contact(self, token: str) -> NameAddr:
        assert self.pbx is not None
        host, port = self.pbx.transport.sent_by
        return NameAddr(SipUri(host, user=token, port=port))

    # -- sending ----------------------------------------------------------------------------

    async def start_request(
        self, request: SipRequest, on_response: ResponseCallback
    ) -> ClientTransaction:
        endpoint, target = self._ready()
        return await endpoint.start_request(request, on_response, target=target)

    async def request(self, request: SipRequest) -> SipResponse:
        endpoint, target = self._ready()
        return await endpoint.request(request, target=target)

    async def send_ack(self, ack: SipRequest) -> None:
        endpoint, target = self._ready()
        await endpoint.send_ack(ack, target=target)

    def _ready(self) -> tuple[SipEndpoint, Target]:
        if self.endpoint is None or self.pbx is None:
            raise GatewayUnavailable("the WebRTC gateway is stopped")
        return self.endpoint, self.pbx

    # -- receiving --------------------------------------------------------------------------

    def _from_pbx(self, source: Source) -> bool:
        return self.pbx is not None and tuple(source.remote[:2]) == self.pbx.address

    def _on_request(self, tx: ServerTransaction) -> None:
        request = tx.request
        if not self._from_pbx(tx.source):
            tx.reply(403)
            return
        if request.to.tag:
            call = self.dialogs.get((request.call_id, request.to.tag))
            if call is None:
                tx.reply(481)
            else:
                call.on_request(tx)
            return
        if request.method == "OPTIONS":
            tx.reply(200, headers=[("Allow", ALLOW), ("Accept", "application/sdp")])
            return
        if request.method != "INVITE":
            tx.reply(405, headers=[("Allow", ALLOW)])
            return
        uri = request.uri
        session = self.sessions.get(uri.user or "") if isinstance(uri, SipUri) else None
        if session is None:
            tx.reply(480)
            return
        session.incoming(tx)

    def _on_ack(self, request: SipRequest, source: Source) -> None:
        if not self._from_pbx(source):
            return
        call = self.dialogs.get((request.call_id, request.to.tag or ""))
        if call is not None:
            call.on_ack(request)


class PhoneSession:
    """One browser phone: its registration, its call, the events for its page."""

    __slots__ = (
        "_refresher",
        "_reg_call_id",
        "_reg_cseq",
        "_reg_tag",
        "account",
        "call",
        "closed",
        "domain",
        "events",
        "gateway",
        "token",
    )

    def __init__(self, gateway: WebRtcGateway, account: AccountInfo, domain: str) -> None:
        self.gateway = gateway
        self.account = account
        self.domain = domain
        self.token = secrets.token_hex(12)
        self.call: BrowserCall | None = None
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue(_EVENT_QUEUE)
        self.closed = False
        self._reg_call_id = f"{secrets.token_hex(12)}@pomelo-webrtc"
        self._reg_tag = new_tag()
        self._reg_cseq = 0
        self._refresher: asyncio.Task[None] | None = None

    def contact(self) -> NameAddr:
        return self.gateway.contact(self.token)

    def emit(self, event: dict[str, Any]) -> None:
        """Queue an event for the page; a page that stopped reading loses events, not
        the server's memory."""
        try:
            self.events.put_nowait(event)
        except asyncio.QueueFull:
            log.warning("phone session of %s: page not reading, event dropped", self.account.id)

    def error(self, error_id: str, detail: str) -> None:
        self.emit({"type": "error", "error_id": error_id, "detail": detail})

    # -- registration -----------------------------------------------------------------------

    async def register(self) -> None:
        """Bind this session's contact to the account; keep it refreshed until closed."""
        expires = await self._register(self.gateway.register_expires)
        self._refresher = asyncio.get_running_loop().create_task(self._refresh(expires))

    async def _refresh(self, expires: int) -> None:
        while not self.closed:
            await asyncio.sleep(max(expires / 2, 1.0))
            try:
                expires = await self._register(self.gateway.register_expires)
            except (RegistrationFailed, GatewayUnavailable) as exc:
                self.error("registration-lost", exc.detail)
                expires = int(_RETRY_SECONDS * 2)

    async def _register(self, expires: int) -> int:
        """One REGISTER (with its digest round); the granted expiry."""
        response = await self._send_register(expires)
        if response.status == 423:
            minimum = (response.header("Min-Expires") or "").strip()
            if minimum.isdigit():
                response = await self._send_register(int(minimum))
        if response.status != 200:
            raise RegistrationFailed(f"the registrar answered {response.status}")
        return _granted(response, self.contact(), expires)

    async def _send_register(self, expires: int) -> SipResponse:
        request = self._register_request(expires)
        response = await self.gateway.request(request)
        if response.status not in (401, 407):
            return response
        header = "Authorization" if response.status == 401 else "Proxy-Authorization"
        try:
            value = authorization(response, "REGISTER", str(request.uri), self.account)
        except DigestError as exc:
            raise RegistrationFailed(f"cannot authenticate: {exc}") from exc
        retry = self._register_request(expires)
        retry.set_header(header, value)
        return await self.gateway.request(retry)

    def _register_request(self, expires: int) -> SipRequest:
        self._reg_cseq += 1
        aor = SipUri(self.domain, user=self.account.extension)
        return SipRequest(
            "REGISTER",
            SipUri(self.domain),
            from_=NameAddr(aor, params={"tag": self._reg_tag}),
            to=NameAddr(aor.copy()),
            call_id=self._reg_call_id,
            cseq=self._reg_cseq,
            contacts=[self.contact()],
            headers=[("Expires", str(expires)), ("User-Agent", USER_AGENT)],
        )

    # -- calls ------------------------------------------------------------------------------

    def incoming(self, tx: ServerTransaction) -> None:
        if self.closed or self.call is not None:
            tx.reply(486)
            return
        call = BrowserCall(self, "incoming")
        self.call = call
        call.ring(tx)

    def call_ended(self, call: BrowserCall) -> None:
        if self.call is call:
            self.call = None

    async def handle(self, message: dict[str, Any]) -> None:
        """One message from the page; problems are reported to it as ``error`` events."""
        kind = message.get("type")
        try:
            if kind == "ping":
                self.emit({"type": "pong"})
            elif kind == "call":
                await self._place(message)
            elif kind == "offer":
                await self._current().offer(_text(message, "sdp"))
            elif kind == "answer":
                call = self._current()
                call.accept()
                if "sdp" in message:
                    await call.offer(_text(message, "sdp"))
            elif kind == "decline":
                self._current().hangup("declined")
            elif kind == "hangup":
                self._current().hangup("hangup")
            elif kind == "dtmf":
                self._current().send_dtmf(_text(message, "digit"))
            else:
                raise CallError("unknown-message", f"unknown message type {kind!r}")
        except CallError as exc:
            self.error(exc.error_id, exc.detail)
        except Exception:
            # A bug must cost this call, not the page's connection or the process.
            log.exception("phone session of %s: %r failed", self.account.id, kind)
            self.error("internal-error", "the request failed; the call was ended")
            if self.call is not None:
                self.call.hangup("failed")

    async def _place(self, message: dict[str, Any]) -> None:
        if self.call is not None:
            raise CallError("busy", "hang up the current call first")
        call = BrowserCall(self, "outgoing")
        call.start_outgoing(_text(message, "to"))
        self.call = call
        self.emit({"type": "calling", "call": call.id, "to": call.to})
        if "sdp" in message:
            await call.offer(_text(message, "sdp"))

    def _current(self) -> BrowserCall:
        call = self.call
        if call is None or call.state is CallState.ENDED:
            raise CallError("no-call", "there is no call")
        return call

    async def close(self) -> None:
        """The page is gone: hang up, unregister, forget."""
        if self.closed:
            return
        self.closed = True
        if self.call is not None:
            self.call.hangup("page-closed")
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        try:
            async with asyncio.timeout(_UNREGISTER_TIMEOUT):
                await self._send_register(0)
        except (TimeoutError, GatewayUnavailable) as exc:
            log.info("phone session of %s: unregister failed: %s", self.account.id, exc)
        self.gateway.forget(self)


def _text(message: dict[str, Any], key: str) -> str:
    value = message.get(key)
    if not isinstance(value, str):
        raise CallError("bad-message", f"{key!r} must be a string")
    return value


def _granted(response: SipResponse, contact: NameAddr, asked: int) -> int:
    """The expiry the registrar gave our contact (it may shorten what we asked for)."""
    ours = str(contact.uri)
    for bound in response.contacts:
        if str(bound.uri) == ours:
            value = bound.params.get("expires")
            if value is not None and value.isdigit():
                return int(value)
    return asked
