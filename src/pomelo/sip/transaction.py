"""The RFC 3261 §17 transaction layer, with the RFC 6026 "Accepted" states.

A transaction is the request, its retransmissions and its responses. This layer is what makes
SIP over UDP reliable, so its timers follow the RFC to the letter:

* client INVITE: A (retransmit, T1 doubling with no cap, §17.1.1.2), B (64·T1 timeout),
  D (linger ≥ 32 s to re-ACK retransmitted non-2xx finals), M (RFC 6026 linger after 2xx);
* client non-INVITE: E (T1 doubling, capped at T2), F (64·T1 timeout), K (T4 linger);
* server INVITE: automatic ``100 Trying`` after 200 ms, G (final retransmit, capped at T2),
  H (64·T1 ACK wait), I (T4 linger), L (RFC 6026 linger after 2xx);
* server non-INVITE: J (64·T1 linger absorbing retransmitted requests).

On reliable transports retransmission timers never start and the linger timers are zero.

**How the transaction user (TU) is told things.** Everything is a plain callback invoked from
the event loop, so a timer firing costs one ``call_later`` and no task:

* client side: ``on_response(tx, response)`` for every response the TU must see; a timeout
  is reported as a synthetic ``408`` (``tx.timed_out`` is set) and a transport failure as a
  synthetic ``503`` (``tx.error`` holds the exception), as §8.1.3.1 asks UACs to treat them;
* server side: the layer's ``on_request(tx)`` for each new request; ``tx.on_cancel`` when a
  CANCEL matched it (the CANCEL is answered 200 here; answering the INVITE 487 is the TU's
  call); ``tx.on_terminated`` when it ends, with ``timed_out``/``error`` explaining why;
  ``on_ack`` for ACKs to 2xx, which belong to no transaction.

**2xx to INVITE.** Retransmitting a 2xx until its ACK arrives is the UAS core's job (§13.3.1.4)
but needs exactly a transaction's timers, so the server INVITE transaction does it in the
Accepted state and stops when the layer sees the matching ACK. On the client side the
transaction passes every 2xx up and the TU (the dialog) sends, and re-sends, the ACK.

Timers run on an injectable :class:`Scheduler` (an asyncio loop by default) so tests can
drive time by hand. Terminated transactions are dropped at once, and the number of live
server transactions is capped: beyond the cap new requests get ``503`` with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar, Protocol, TypeAlias

from pomelo.sip.message import MAGIC_COOKIE, SipRequest, SipResponse, Via, make_response
from pomelo.sip.transport import Connection, Source, Target, TransportError, send_response
from pomelo.sip.uri import NameAddr

__all__ = [
    "ClientInviteTransaction",
    "ClientNonInviteTransaction",
    "ClientTransaction",
    "ResponseCallback",
    "Scheduler",
    "ServerInviteTransaction",
    "ServerNonInviteTransaction",
    "ServerTransaction",
    "State",
    "Timers",
    "TransactionLayer",
    "build_ack",
    "build_cancel",
    "new_branch",
    "new_tag",
    "server_key",
]

log = logging.getLogger(__name__)

DIALOG_METHODS = frozenset(("INVITE", "SUBSCRIBE", "REFER", "NOTIFY"))
"""Methods whose 101–299 responses may create a dialog and so echo Record-Route (§12.1.1)."""


def new_branch() -> str:
    """A fresh RFC 3261 branch: magic cookie plus 80 random bits."""
    return MAGIC_COOKIE + secrets.token_hex(10)


def new_tag() -> str:
    """A From/To tag with 48 random bits (§19.3 asks for at least 32)."""
    return secrets.token_hex(6)


@dataclass(frozen=True, slots=True)
class Timers:
    """RFC 3261 timer values in seconds; every derived timer follows from these."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    d: float = 32.0
    """Timer D on unreliable transports; the RFC asks for at least 32 s."""
    trying: float = 0.2
    """Delay before the server INVITE transaction answers ``100 Trying`` on its own."""

    @property
    def timeout(self) -> float:
        """64·T1: timers B, F, H, J, L and M."""
        return 64 * self.t1


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """The one thing the layer needs from an event loop; ``asyncio`` loops qualify."""

    def call_later(self, delay: float, callback: Callable[[], object], /) -> TimerHandle: ...


class State(enum.Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


_CALLING = State.CALLING
_TRYING = State.TRYING
_PROCEEDING = State.PROCEEDING
_COMPLETED = State.COMPLETED
_CONFIRMED = State.CONFIRMED
_ACCEPTED = State.ACCEPTED
_TERMINATED = State.TERMINATED

ServerKey: TypeAlias = tuple[str, ...]
ClientKey: TypeAlias = tuple[str, str]
ResponseCallback: TypeAlias = Callable[["ClientTransaction", SipResponse], None]


def server_key(request: SipRequest) -> ServerKey:
    """§17.2.3 matching key: branch, sent-by and method, with ACK folded onto INVITE.

    Requests without the magic cookie (RFC 2543 peers) are keyed by Call-ID, CSeq number,
    From tag and top Via instead, which tells their transactions apart just as well.
    """
    via = request.vias[0]
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    sent_by = via.sent_by.lower()
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return (branch, sent_by, method)
    return (
        request.call_id,
        str(request.cseq),
        request.from_.tag or "",
        sent_by,
        branch or "",
        method,
    )


def _ack_key(request: SipRequest) -> tuple[str, int, str]:
    """Pairs an ACK for a 2xx with its INVITE: same Call-ID, CSeq number and From tag."""
    return (request.call_id, request.cseq, request.from_.tag or "")


def build_ack(request: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK a client INVITE transaction sends for a non-2xx final (§17.1.1.3).

    Same Request-URI, Call-ID, From and CSeq number as the INVITE, To from the response (it
    carries the tag), the INVITE's top Via only, and its Route headers.
    """
    return SipRequest(
        "ACK",
        request.uri.copy(),
        from_=request.from_.copy(),
        to=response.to.copy(),
        call_id=request.call_id,
        cseq=request.cseq,
        vias=[request.vias[0].copy()],
        routes=[route.copy() for route in request.routes],
    )


def build_cancel(request: SipRequest) -> SipRequest:
    """A CANCEL for ``request`` per §9.1: same branch, Request-URI, Call-ID, From, To, CSeq
    number, a single Via (the request's top one) and the request's Route headers."""
    return SipRequest(
        "CANCEL",
        request.uri.copy(),
        from_=request.from_.copy(),
        to=request.to.copy(),
        call_id=request.call_id,
        cseq=request.cseq,
        vias=[request.vias[0].copy()],
        routes=[route.copy() for route in request.routes],
    )


def _synthetic(request: SipRequest, status: int, reason: str | None = None) -> SipResponse:
    return make_response(request, status, reason)


# -- client transactions --------------------------------------------------------------------


class ClientTransaction:
    """State shared by both client state machines."""

    __slots__ = (
        "_data",
        "_interval",
        "_layer",
        "_retransmit",
        "_timeout",
        "error",
        "key",
        "last_response",
        "on_response",
        "reliable",
        "request",
        "state",
        "target",
        "timed_out",
    )

    is_invite: ClassVar[bool] = False

    def __init__(
        self,
        layer: TransactionLayer,
        request: SipRequest,
        target: Target,
        on_response: ResponseCallback | None,
    ) -> None:
        branch = request.branch
        if branch is None:
            raise ValueError("a client transaction needs a top Via with a branch")
        self._layer = layer
        self.request = request
        self.target = target
        self.on_response = on_response
        self.key: ClientKey = (branch, request.method)
        self.reliable = target.transport.reliable
        self.state = _TRYING
        self._data = request.serialize()
        self._interval = layer.timers.t1
        self._retransmit: TimerHandle | None = None
        self._timeout: TimerHandle | None = None
        self.last_response: SipResponse | None = None
        self.timed_out = False
        self.error: Exception | None = None

    @property
    def terminated(self) -> bool:
        return self.state is _TERMINATED

    def start(self) -> None:
        raise NotImplementedError

    def receive(self, response: SipResponse) -> None:
        raise NotImplementedError

    def _send(self, data: bytes) -> bool:
        try:
            self.target.send(data)
        except (TransportError, OSError) as exc:
            self.transport_failed(exc)
            return False
        return True

    def transport_failed(self, exc: Exception) -> None:
        """§17.1.4: a transport error ends the transaction; the TU sees a 503."""
        if self.state is _TERMINATED:
            return
        was_waiting = self.state in (_CALLING, _TRYING, _PROCEEDING)
        self.error = exc
        self._terminate()
        if was_waiting:
            self._report(_synthetic(self.request, 503, "Service Unavailable (transport error)"))

    def _report(self, response: SipResponse) -> None:
        self.last_response = response
        callback = self.on_response
        if callback is None:
            return
        try:
            callback(self, response)
        except Exception:
            log.exception("client transaction user failed on %r", response)

    def _cancel_timers(self) -> None:
        if self._retransmit is not None:
            self._retransmit.cancel()
            self._retransmit = None
        if self._timeout is not None:
            self._timeout.cancel()
            self._timeout = None

    def _terminate(self) -> None:
        self.state = _TERMINATED
        self._cancel_timers()
        self._layer._forget_client(self)

    def _timed_out(self) -> None:
        self._timeout = None
        if self.state in (_CALLING, _TRYING, _PROCEEDING):
            self.timed_out = True
            self._terminate()
            self._report(_synthetic(self.request, 408))
        elif self.state is not _TERMINATED:
            self._terminate()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.request.method} {self.key[0]} {self.state.value}>"


class ClientInviteTransaction(ClientTransaction):
    """§17.1.1 (Figure 5) as amended by RFC 6026: 2xx moves to Accepted, not Terminated."""

    __slots__ = ("_ack_data", "_cancel_pending", "cancel_transaction")

    is_invite = True

    def __init__(
        self,
        layer: TransactionLayer,
        request: SipRequest,
        target: Target,
        on_response: ResponseCallback | None,
    ) -> None:
        super().__init__(layer, request, target, on_response)
        self.state = _CALLING
        self._ack_data: bytes | None = None
        self._cancel_pending = False
        self.cancel_transaction: ClientTransaction | None = None

    def start(self) -> None:
        if not self._send(self._data):
            return
        layer = self._layer
        if not self.reliable:
            self._retransmit = layer._call_later(self._interval, self._timer_a)
        self._timeout = layer._call_later(layer.timers.timeout, self._timed_out)

    def _timer_a(self) -> None:
        self._retransmit = None
        if self.state is not _CALLING or not self._send(self._data):
            return
        self._interval *= 2  # no T2 cap for INVITE requests (§17.1.1.2)
        self._retransmit = self._layer._call_later(self._interval, self._timer_a)

    def receive(self, response: SipResponse) -> None:
        state = self.state
        status = response.status
        layer = self._layer
        if status < 200:
            if state is _CALLING:
                self.state = _PROCEEDING
                self._cancel_timers()
                if self._cancel_pending:
                    self._send_cancel()
                self._report(response)
            elif state is _PROCEEDING:
                self._report(response)
            return
        if status < 300:
            if state is _CALLING or state is _PROCEEDING:
                self.state = _ACCEPTED
                self._cancel_timers()
                self._timeout = layer._call_later(layer.timers.timeout, self._terminate)
                self._report(response)
            elif state is _ACCEPTED:
                self._report(response)  # a retransmitted 2xx: the TU re-sends its ACK
            return
        if state is _CALLING or state is _PROCEEDING:
            self.state = _COMPLETED
            self._cancel_timers()
            self._ack_data = build_ack(self.request, response).serialize()
            if not self._send(self._ack_data):
                return
            self._report(response)
            if self.state is not _COMPLETED:
                return
            if self.reliable:
                self._terminate()
            else:
                self._timeout = layer._call_later(layer.timers.d, self._terminate)
        elif state is _COMPLETED and self._ack_data is not None:
            self._send(self._ack_data)

    def cancel(self) -> ClientTransaction | None:
        """Cancel the INVITE (§9.1) and return the CANCEL's own client transaction.

        A CANCEL may only follow a provisional response, so before one arrives this only
        records the wish and the CANCEL goes out with the first 1xx. After a final response
        there is nothing to cancel and ``None`` is returned.
        """
        if self.state is _CALLING:
            self._cancel_pending = True
            return None
        if self.state is _PROCEEDING and self.cancel_transaction is None:
            return self._send_cancel()
        return self.cancel_transaction

    def _send_cancel(self) -> ClientTransaction:
        layer = self._layer
        cancel = build_cancel(self.request)
        self.cancel_transaction = layer.send_request(cancel, self.target)
        # §9.1: if the INVITE gets no final response within 64·T1 of the CANCEL, give up.
        if self._timeout is None and self.state is _PROCEEDING:
            self._timeout = layer._call_later(layer.timers.timeout, self._timed_out)
        return self.cancel_transaction


class ClientNonInviteTransaction(ClientTransaction):
    """§17.1.2 (Figure 6)."""

    __slots__ = ()

    def start(self) -> None:
        if not self._send(self._data):
            return
        layer = self._layer
        if not self.reliable:
            self._retransmit = layer._call_later(self._interval, self._timer_e)
        self._timeout = layer._call_later(layer.timers.timeout, self._timed_out)

    def _timer_e(self) -> None:
        self._retransmit = None
        state = self.state
        if (state is not _TRYING and state is not _PROCEEDING) or not self._send(self._data):
            return
        timers = self._layer.timers
        self._interval = min(2 * self._interval, timers.t2) if state is _TRYING else timers.t2
        self._retransmit = self._layer._call_later(self._interval, self._timer_e)

    def receive(self, response: SipResponse) -> None:
        state = self.state
        if state is not _TRYING and state is not _PROCEEDING:
            return  # Completed absorbs retransmitted finals
        if response.status < 200:
            self.state = _PROCEEDING
            self._report(response)
            return
        self.state = _COMPLETED
        self._cancel_timers()
        self._report(response)
        if self.state is not _COMPLETED:
            return
        if self.reliable:
            self._terminate()
        else:
            self._timeout = self._layer._call_later(self._layer.timers.t4, self._terminate)


# -- server transactions --------------------------------------------------------------------


class ServerTransaction:
    """State shared by both server state machines; the TU answers with :meth:`respond`."""

    __slots__ = (
        "_interval",
        "_last",
        "_layer",
        "_retransmit",
        "_tag",
        "_timeout",
        "cancelled",
        "error",
        "key",
        "on_cancel",
        "on_terminated",
        "reliable",
        "request",
        "source",
        "state",
        "timed_out",
    )

    is_invite: ClassVar[bool] = False

    def __init__(
        self, layer: TransactionLayer, request: SipRequest, source: Source, key: ServerKey
    ) -> None:
        self._layer = layer
        self.request = request
        self.source = source
        self.key = key
        self.reliable = source.transport.reliable
        self.state = _TRYING
        self._last: bytes | None = None
        self._retransmit: TimerHandle | None = None
        self._timeout: TimerHandle | None = None
        self._interval = layer.timers.t1
        self._tag: str | None = None
        self.cancelled = False
        self.timed_out = False
        self.error: Exception | None = None
        self.on_cancel: Callable[[ServerTransaction, SipRequest], None] | None = None
        self.on_terminated: Callable[[ServerTransaction], None] | None = None

    @property
    def local_tag(self) -> str:
        """The To tag for our responses: the request's own if in-dialog, else one fresh tag
        shared by every response of this transaction (1xx and 2xx must agree, §12.1.1)."""
        tag = self._tag
        if tag is None:
            tag = self._tag = self.request.to.tag or new_tag()
        return tag

    @property
    def terminated(self) -> bool:
        return self.state is _TERMINATED

    @property
    def final_sent(self) -> bool:
        state = self.state
        return state is not _TRYING and state is not _PROCEEDING

    def make_response(
        self,
        status: int,
        reason: str | None = None,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        contact: NameAddr | None = None,
    ) -> SipResponse:
        """A response to this request with our To tag, Record-Route copied when it may
        create a dialog, and the given extra headers, body and Contact."""
        request = self.request
        response = make_response(
            request,
            status,
            reason,
            None if status == 100 else self.local_tag,
            copy_record_route=100 < status < 300 and request.method in DIALOG_METHODS,
        )
        if contact is not None:
            response.contacts = [contact]
        for name, value in headers:
            response.add_header(name, value)
        response.body = body
        return response

    def reply(
        self,
        status: int,
        reason: str | None = None,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        contact: NameAddr | None = None,
    ) -> SipResponse | None:
        """Build and send a response; returns it, or ``None`` if the transaction was done."""
        response = self.make_response(status, reason, headers=headers, body=body, contact=contact)
        return response if self.respond(response) else None

    def respond(self, response: SipResponse) -> bool:
        """Send a response from the TU; ``False`` when the state no longer allows one
        (e.g. the INVITE was already answered 487 after a CANCEL)."""
        raise NotImplementedError

    def receive(self, request: SipRequest, source: Source) -> None:
        raise NotImplementedError

    def _send(self, data: bytes) -> bool:
        try:
            send_response(data, self.request.vias[0], self.source)
        except (TransportError, OSError) as exc:
            # §17.2.4 would try the next Via address; we report straight away.
            self.error = exc
            self._terminate()
            return False
        return True

    def _cancel_timers(self) -> None:
        if self._retransmit is not None:
            self._retransmit.cancel()
            self._retransmit = None
        if self._timeout is not None:
            self._timeout.cancel()
            self._timeout = None

    def _terminate(self) -> None:
        if self.state is _TERMINATED:
            return
        self.state = _TERMINATED
        self._cancel_timers()
        self._layer._forget_server(self)
        callback = self.on_terminated
        if callback is not None:
            try:
                callback(self)
            except Exception:
                log.exception("on_terminated callback failed for %r", self)

    def _timed_out(self) -> None:
        self._timeout = None
        self.timed_out = True
        self._terminate()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.request.method} {self.key[0]} {self.state.value}>"


class ServerInviteTransaction(ServerTransaction):
    """§17.2.1 (Figure 7) plus RFC 6026's Accepted state, which here also retransmits the
    2xx until the layer sees its ACK (the UAS core duty of §13.3.1.4)."""

    __slots__ = ("_trying",)

    is_invite = True

    def __init__(
        self, layer: TransactionLayer, request: SipRequest, source: Source, key: ServerKey
    ) -> None:
        super().__init__(layer, request, source, key)
        self.state = _PROCEEDING
        self._trying: TimerHandle | None = layer._call_later(layer.timers.trying, self._auto_100)

    def _auto_100(self) -> None:
        self._trying = None
        if self.state is _PROCEEDING and self._last is None:
            self.respond(make_response(self.request, 100))

    def respond(self, response: SipResponse) -> bool:
        if self.state is not _PROCEEDING:
            log.debug("%r: response %d after the final one ignored", self, response.status)
            return False
        if self._trying is not None:
            self._trying.cancel()
            self._trying = None
        data = response.serialize()
        self._last = data
        status = response.status
        layer = self._layer
        if status >= 300:
            self.state = _COMPLETED
            if not self.reliable:
                self._retransmit = layer._call_later(self._interval, self._timer_g)
            self._timeout = layer._call_later(layer.timers.timeout, self._timed_out)
        elif status >= 200:
            self.state = _ACCEPTED
            layer._accepted[_ack_key(self.request)] = self
            if not self.reliable:
                self._retransmit = layer._call_later(self._interval, self._timer_g)
            self._timeout = layer._call_later(layer.timers.timeout, self._timed_out)
        return self._send(data)

    def _timer_g(self) -> None:
        """Retransmit the final (Completed) or the 2xx (Accepted) with T1·2ⁿ capped at T2."""
        self._retransmit = None
        data = self._last
        if data is None or (self.state is not _COMPLETED and self.state is not _ACCEPTED):
            return
        if self._send(data):
            self._interval = min(2 * self._interval, self._layer.timers.t2)
            self._retransmit = self._layer._call_later(self._interval, self._timer_g)

    def receive(self, request: SipRequest, source: Source) -> None:
        state = self.state
        if request.method == "ACK":
            if state is _COMPLETED:
                self.state = _CONFIRMED
                self._cancel_timers()
                if self.reliable:
                    self._terminate()
                else:
                    self._timeout = self._layer._call_later(self._layer.timers.t4, self._terminate)
            elif state is _ACCEPTED:
                self.ack_received()
                self._layer._deliver_ack(request, source)
            return
        if state is _PROCEEDING:
            data = self._last
            if data is None:
                self.respond(make_response(self.request, 100))
            else:
                self._send(data)
        elif (state is _COMPLETED or state is _ACCEPTED) and self._last is not None:
            self._send(self._last)

    def ack_received(self) -> None:
        """The ACK for our 2xx arrived: stop retransmitting and end the transaction.

        RFC 6026 would linger until Timer L to absorb INVITE retransmissions, but once the
        ACK is here the client has long stopped retransmitting, and ending now keeps the
        live-transaction count (and the 503 cap) proportional to calls being set up.
        """
        if self.state is _ACCEPTED:
            self._terminate()

    def cancel_received(self, cancel: SipRequest) -> None:
        if self.state is not _PROCEEDING or self.cancelled:
            return
        self.cancelled = True
        callback = self.on_cancel
        if callback is not None:
            try:
                callback(self, cancel)
            except Exception:
                log.exception("on_cancel callback failed for %r", self)

    def _terminate(self) -> None:
        if self._trying is not None:
            self._trying.cancel()
            self._trying = None
        if self.state is _ACCEPTED:
            key = _ack_key(self.request)
            if self._layer._accepted.get(key) is self:
                del self._layer._accepted[key]
        super()._terminate()


class ServerNonInviteTransaction(ServerTransaction):
    """§17.2.2 (Figure 8), with a backstop: a TU that never answers cannot pin the entry."""

    __slots__ = ()

    def __init__(
        self, layer: TransactionLayer, request: SipRequest, source: Source, key: ServerKey
    ) -> None:
        super().__init__(layer, request, source, key)
        self._timeout = layer._call_later(layer.timers.timeout, self._timed_out)

    def respond(self, response: SipResponse) -> bool:
        state = self.state
        if state is not _TRYING and state is not _PROCEEDING:
            log.debug("%r: response %d after the final one ignored", self, response.status)
            return False
        data = response.serialize()
        self._last = data
        if response.status < 200:
            self.state = _PROCEEDING
            return self._send(data)
        self.state = _COMPLETED
        self._cancel_timers()
        if not self._send(data):
            return False
        if not self.reliable:
            # Timer J: absorb retransmissions for 64·T1, but in a slim record (the response
            # bytes and where to send them), not this object with its parsed request: at
            # thousands of REGISTERs a second the full objects would pin a lot of memory.
            self._layer._linger(self.key, data, self.request.vias[0], self.source)
        self._terminate()
        return True

    def receive(self, request: SipRequest, source: Source) -> None:
        if self._last is not None and (self.state is _PROCEEDING or self.state is _COMPLETED):
            self._send(self._last)


# -- the layer ------------------------------------------------------------------------------


class TransactionLayer:
    """Matches messages to transactions, creates server transactions, owns their timers.

    ``on_request(tx)`` is called synchronously for each new request (never for ACK or
    retransmissions); ``on_ack(ack, source)`` for ACKs that match no transaction, i.e. ACKs
    for 2xx; ``on_stray_response(response, source)`` for responses that match nothing.
    """

    def __init__(
        self,
        on_request: Callable[[ServerTransaction], None],
        *,
        on_ack: Callable[[SipRequest, Source], None] | None = None,
        on_stray_response: Callable[[SipResponse, Source], None] | None = None,
        timers: Timers | None = None,
        scheduler: Scheduler | None = None,
        max_server_transactions: int = 50_000,
        retry_after: int = 5,
        max_lingering: int = 1_000_000,
    ) -> None:
        self.on_request = on_request
        self.on_ack = on_ack
        self.on_stray_response = on_stray_response
        self.timers = timers or Timers()
        self._scheduler = scheduler
        self.max_server_transactions = max_server_transactions
        self.retry_after = retry_after
        self.client_transactions: dict[ClientKey, ClientTransaction] = {}
        self.server_transactions: dict[ServerKey, ServerTransaction] = {}
        self._accepted: dict[tuple[str, int, str], ServerInviteTransaction] = {}
        #: Completed non-INVITE server transactions (Timer J): key → (response, Via, source).
        self._lingering: dict[ServerKey, tuple[bytes, Via, Source]] = {}
        self.max_lingering = max_lingering

    def _call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        scheduler = self._scheduler
        if scheduler is None:
            scheduler = self._scheduler = asyncio.get_running_loop()
        return scheduler.call_later(delay, callback)

    # -- outbound -----------------------------------------------------------------------

    def send_request(
        self, request: SipRequest, target: Target, on_response: ResponseCallback | None = None
    ) -> ClientTransaction:
        """Start a client transaction; ``request`` must already carry our top Via."""
        if request.method == "ACK":
            raise ValueError("ACK is not sent in a transaction; use send_stateless")
        tx: ClientTransaction
        if request.method == "INVITE":
            tx = ClientInviteTransaction(self, request, target, on_response)
        else:
            tx = ClientNonInviteTransaction(self, request, target, on_response)
        if tx.key in self.client_transactions:
            raise ValueError(f"branch {tx.key[0]} is already in use for {tx.key[1]}")
        self.client_transactions[tx.key] = tx
        tx.start()
        return tx

    @staticmethod
    def send_stateless(request: SipRequest, target: Target) -> None:
        """Send a request outside any transaction (ACK for 2xx); raises TransportError."""
        target.send(request.serialize())

    # -- inbound ------------------------------------------------------------------------

    def receive(self, message: SipRequest | SipResponse, source: Source) -> None:
        """Entry point for the transport layer (its ``on_message``)."""
        if type(message) is SipResponse:
            self._receive_response(message, source)
        else:
            assert isinstance(message, SipRequest)
            self._receive_request(message, source)

    def _receive_response(self, response: SipResponse, source: Source) -> None:
        branch = response.branch
        tx = self.client_transactions.get((branch, response.cseq_method)) if branch else None
        if tx is not None:
            tx.receive(response)
            return
        handler = self.on_stray_response
        if handler is not None:
            handler(response, source)
        else:
            log.debug("stray response %r from %s dropped", response, source.remote)

    def _receive_request(self, request: SipRequest, source: Source) -> None:
        key = server_key(request)
        tx = self.server_transactions.get(key)
        if tx is not None:
            tx.receive(request, source)
            return
        lingering = self._lingering.get(key)
        if lingering is not None:
            data, via, first_source = lingering
            with contextlib.suppress(TransportError, OSError):
                send_response(data, via, first_source)
            return
        method = request.method
        if method == "ACK":
            accepted = self._accepted.get(_ack_key(request))
            if accepted is not None:
                accepted.ack_received()
            self._deliver_ack(request, source)
            return
        if len(self.server_transactions) >= self.max_server_transactions:
            self._overloaded(request, source)
            return
        if method == "INVITE":
            tx = ServerInviteTransaction(self, request, source, key)
        else:
            tx = ServerNonInviteTransaction(self, request, source, key)
        self.server_transactions[key] = tx
        if method == "CANCEL":
            self._receive_cancel(tx, key)
            return
        try:
            self.on_request(tx)
        except Exception:
            log.exception("request handler failed for %r", request)
            if not tx.final_sent and not tx.terminated:
                tx.reply(500)

    def _receive_cancel(self, tx: ServerTransaction, key: ServerKey) -> None:
        """§9.2: answer the CANCEL here, tell the INVITE's TU, let it send 487."""
        invite = self.server_transactions.get((*key[:-1], "INVITE"))
        if not isinstance(invite, ServerInviteTransaction):
            tx.reply(481)
            return
        tx._tag = invite.local_tag
        tx.reply(200)
        invite.cancel_received(tx.request)

    def _deliver_ack(self, request: SipRequest, source: Source) -> None:
        handler = self.on_ack
        if handler is None:
            return
        try:
            handler(request, source)
        except Exception:
            log.exception("ACK handler failed for %r", request)

    def _overloaded(self, request: SipRequest, source: Source) -> None:
        log.warning("server transaction limit %d reached", self.max_server_transactions)
        response = make_response(request, 503, to_tag=new_tag())
        response.add_header("Retry-After", str(self.retry_after))
        with contextlib.suppress(TransportError, OSError):
            send_response(response.serialize(), request.vias[0], source)

    def connection_lost(self, connection: Connection) -> None:
        """Fail client transactions still waiting on a flow that just closed (§17.1.4)."""
        waiting = (_CALLING, _TRYING, _PROCEEDING)
        lost = [
            tx
            for tx in self.client_transactions.values()
            if tx.target.connection is connection and tx.state in waiting
        ]
        for tx in lost:
            tx.transport_failed(TransportError(f"connection to {connection.remote} lost"))

    # -- bookkeeping --------------------------------------------------------------------

    def _forget_client(self, tx: ClientTransaction) -> None:
        if self.client_transactions.get(tx.key) is tx:
            del self.client_transactions[tx.key]

    def _linger(self, key: ServerKey, data: bytes, via: Via, source: Source) -> None:
        if len(self._lingering) >= self.max_lingering:
            return  # bounded: a retransmission would then be handled as a new request
        self._lingering[key] = (data, via, source)
        self._call_later(self.timers.timeout, lambda: self._lingering.pop(key, None))

    def _forget_server(self, tx: ServerTransaction) -> None:
        if self.server_transactions.get(tx.key) is tx:
            del self.server_transactions[tx.key]
