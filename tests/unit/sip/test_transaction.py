"""RFC 3261 §17 transaction state machines driven by a hand-cranked clock, plus dialogs.

No sockets and no event loop: a fake transport records what would go on the wire and when,
so the retransmission schedules can be checked to the millisecond.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import pytest

from pomelo.sip.dialog import Dialog, DialogError, DialogState
from pomelo.sip.message import SipRequest, SipResponse, make_response, parse_message
from pomelo.sip.transaction import (
    ClientInviteTransaction,
    ClientTransaction,
    ServerInviteTransaction,
    ServerTransaction,
    State,
    Timers,
    TransactionLayer,
    build_cancel,
    server_key,
)
from pomelo.sip.transport import (
    Address,
    Source,
    Target,
    Transport,
    TransportError,
    TransportLayer,
)
from pomelo.sip.uri import NameAddr, SipUri, parse_uri

# -- fakes ---------------------------------------------------------------------------------


class FakeHandle:
    __slots__ = ("callback", "cancelled", "seq", "when")

    def __init__(self, when: float, seq: int, callback: Callable[[], object]) -> None:
        self.when, self.seq, self.callback, self.cancelled = when, seq, callback, False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: FakeHandle) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)


class FakeClock:
    """A scheduler whose time only moves when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[FakeHandle] = []
        self._seq = 0

    def call_later(self, delay: float, callback: Callable[[], object], /) -> FakeHandle:
        self._seq += 1
        handle = FakeHandle(self.now + delay, self._seq, callback)
        heapq.heappush(self._heap, handle)
        return handle

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while self._heap and self._heap[0].when <= end + 1e-9:
            handle = heapq.heappop(self._heap)
            if handle.cancelled:
                continue
            self.now = handle.when
            handle.callback()
        self.now = end

    @property
    def pending(self) -> int:
        return sum(1 for handle in self._heap if not handle.cancelled)


class FakeTransport(Transport):
    name = "UDP"
    reliable = False

    def __init__(self, clock: FakeClock, *, fail: bool = False) -> None:
        super().__init__("127.0.0.1", 5060)
        self.clock = clock
        self.fail = fail
        self.sent: list[tuple[float, bytes, Address]] = []

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def send(self, data: bytes, address: Address) -> None:
        if self.fail:
            raise TransportError("network is down")
        self.sent.append((self.clock.now, data, address))

    def messages(self) -> list[SipRequest | SipResponse]:
        return [parse_message(data) for _, data, _ in self.sent]

    def times(self) -> list[float]:
        return [round(at, 3) for at, _, _ in self.sent]


class FakeReliable(FakeTransport):
    name = "TCP"
    reliable = True


PEER: Address = ("192.0.2.10", 5070)


def make_request(
    method: str = "INVITE",
    *,
    branch: str = "z9hG4bK-abc",
    cseq: int = 1,
    to_tag: str | None = None,
    extra: str = "",
) -> SipRequest:
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} sip:bob@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5070;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=a1\r\n"
        f"To: {to}\r\n"
        "Call-ID: call-1@192.0.2.10\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:alice@192.0.2.10:5070>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, SipRequest)
    return message


class Harness:
    def __init__(
        self, *, reliable: bool = False, fail: bool = False, max_server_transactions: int = 100
    ) -> None:
        self.clock = FakeClock()
        self.transport = (FakeReliable if reliable else FakeTransport)(self.clock, fail=fail)
        self.requests: list[ServerTransaction] = []
        self.acks: list[SipRequest] = []
        self.responses: list[tuple[ClientTransaction, SipResponse]] = []
        self.auto: Callable[[ServerTransaction], None] | None = None
        self.layer = TransactionLayer(
            self._on_request,
            on_ack=lambda ack, source: self.acks.append(ack),
            scheduler=self.clock,
            timers=Timers(),
            max_server_transactions=max_server_transactions,
        )

    def _on_request(self, tx: ServerTransaction) -> None:
        self.requests.append(tx)
        if self.auto is not None:
            self.auto(tx)

    def source(self) -> Source:
        return Source(self.transport, PEER, ("127.0.0.1", 5060))

    def deliver(self, message: SipRequest | SipResponse) -> None:
        """What the transport does: re-parse from bytes, stamp the Via, hand it up."""
        parsed = parse_message(message.serialize())
        if isinstance(parsed, SipRequest):
            parsed.vias[0].stamp_source(*PEER)
        self.layer.receive(parsed, self.source())

    def send(self, request: SipRequest) -> ClientTransaction:
        target = Target(self.transport, PEER)
        return self.layer.send_request(
            request, target, lambda tx, response: self.responses.append((tx, response))
        )


def respond(request: SipRequest, status: int, tag: str | None = "b1") -> SipResponse:
    return make_response(request, status, to_tag=tag)


# -- client INVITE ---------------------------------------------------------------------------


def test_invite_timer_a_doubles_then_timer_b_reports_408() -> None:
    """§17.1.1.2: Timer A doubles after each retransmission (T2 caps only non-INVITE
    requests and INVITE responses); Timer B fires at 64·T1 and the TU sees a 408."""
    h = Harness()
    tx = h.send(make_request())
    h.clock.advance(31.9)
    assert h.transport.times() == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert h.responses == []
    h.clock.advance(0.2)
    assert [r.status for _, r in h.responses] == [408]
    assert tx.timed_out and tx.state is State.TERMINATED
    assert h.layer.client_transactions == {}
    h.clock.advance(100)
    assert len(h.transport.sent) == 7
    assert h.clock.pending == 0


def test_invite_provisional_stops_retransmissions_and_timer_b() -> None:
    h = Harness()
    request = make_request()
    tx = h.send(request)
    h.clock.advance(0.6)
    h.deliver(respond(request, 180))
    assert tx.state is State.PROCEEDING
    h.clock.advance(120)
    assert len(h.transport.sent) == 2
    assert [r.status for _, r in h.responses] == [180]
    assert not tx.timed_out


def test_non_2xx_final_is_acked_by_the_transaction() -> None:
    h = Harness()
    request = make_request(extra="Route: <sip:proxy.example.com;lr>\r\n")
    tx = h.send(request)
    h.deliver(respond(request, 100, tag=None))
    final = respond(request, 486)
    h.deliver(final)
    assert tx.state is State.COMPLETED
    ack = h.transport.messages()[-1]
    assert isinstance(ack, SipRequest)
    assert ack.method == "ACK"
    assert str(ack.uri) == "sip:bob@example.com"
    assert ack.cseq == 1 and ack.cseq_method == "ACK"
    assert ack.branch == request.branch and len(ack.vias) == 1
    assert ack.to.tag == "b1" and ack.from_.tag == "a1"
    assert [str(r.uri) for r in ack.routes] == ["sip:proxy.example.com;lr"]
    # A retransmitted final is re-ACKed but not passed up again.
    h.deliver(final)
    assert [m.method for m in h.transport.messages() if isinstance(m, SipRequest)][-2:] == [
        "ACK",
        "ACK",
    ]
    assert [r.status for _, r in h.responses] == [100, 486]
    h.clock.advance(31.9)
    assert tx.state is State.COMPLETED
    h.clock.advance(0.2)
    assert tx.state is State.TERMINATED


def test_2xx_goes_to_the_tu_with_no_transaction_ack() -> None:
    h = Harness()
    request = make_request()
    tx = h.send(request)
    ok = respond(request, 200)
    h.deliver(ok)
    h.deliver(ok)  # retransmission: passed up so the TU re-sends its ACK
    assert [r.status for _, r in h.responses] == [200, 200]
    assert all(isinstance(m, SipRequest) and m.method == "INVITE" for m in h.transport.messages())
    assert tx.state is State.ACCEPTED
    h.clock.advance(32.1)
    assert tx.state is State.TERMINATED


def test_reliable_transport_skips_retransmissions_and_lingering() -> None:
    h = Harness(reliable=True)
    request = make_request()
    tx = h.send(request)
    h.clock.advance(10)
    assert len(h.transport.sent) == 1
    h.deliver(respond(request, 404))
    assert tx.state is State.TERMINATED
    assert h.layer.client_transactions == {}
    h.clock.advance(40)
    assert h.clock.pending == 0


def test_transport_error_is_reported_as_503() -> None:
    h = Harness(fail=True)
    tx = h.send(make_request("OPTIONS"))
    assert [r.status for _, r in h.responses] == [503]
    assert isinstance(tx.error, TransportError)
    assert tx.state is State.TERMINATED


# -- client non-INVITE -----------------------------------------------------------------------


def test_non_invite_timer_e_is_capped_at_t2_and_f_times_out() -> None:
    h = Harness()
    tx = h.send(make_request("OPTIONS"))
    h.clock.advance(31.9)
    assert h.transport.times()[:8] == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5]
    gaps = {
        round(b - a, 3)
        for a, b in zip(h.transport.times()[4:], h.transport.times()[5:], strict=False)
    }
    assert gaps == {4.0}
    h.clock.advance(0.2)
    assert [r.status for _, r in h.responses] == [408] and tx.timed_out


def test_non_invite_provisional_switches_to_t2_and_final_lingers_t4() -> None:
    h = Harness()
    request = make_request("BYE", to_tag="b1")
    tx = h.send(request)
    h.deliver(respond(request, 100, tag=None))
    h.clock.advance(4.1)  # Proceeding retransmits every T2
    assert h.transport.times() == [0.0, 0.5]
    h.clock.advance(0.5)
    assert h.transport.times() == [0.0, 0.5, 4.5]
    h.deliver(respond(request, 200, tag=None))
    assert tx.state is State.COMPLETED
    h.deliver(respond(request, 200, tag=None))
    assert [r.status for _, r in h.responses] == [100, 200]
    h.clock.advance(5.1)
    assert tx.state is State.TERMINATED and h.clock.pending == 0


# -- server INVITE ---------------------------------------------------------------------------


def test_server_invite_sends_100_trying_after_200ms() -> None:
    h = Harness()
    h.deliver(make_request())
    assert len(h.requests) == 1
    h.clock.advance(0.19)
    assert h.transport.sent == []
    h.clock.advance(0.02)
    (trying,) = h.transport.messages()
    assert isinstance(trying, SipResponse) and trying.status == 100
    assert trying.to.tag is None
    assert h.transport.sent[0][2] == PEER  # rport stamped → back to the source port


def test_server_invite_answered_quickly_sends_no_100() -> None:
    h = Harness()

    def ring(tx: ServerTransaction) -> None:
        tx.reply(180)

    h.auto = ring
    h.deliver(make_request())
    h.clock.advance(1)
    assert [m.status for m in h.transport.messages() if isinstance(m, SipResponse)] == [180]


def test_server_absorbs_retransmissions_by_resending_the_last_response() -> None:
    h = Harness()
    request = make_request()
    h.deliver(request)
    h.deliver(request)  # nothing sent yet: answer 100 at once
    (tx,) = h.requests
    tx.reply(180)
    h.deliver(request)
    h.deliver(request)
    statuses = [m.status for m in h.transport.messages() if isinstance(m, SipResponse)]
    assert statuses == [100, 180, 180, 180]
    assert len(h.requests) == 1


def test_server_non_2xx_timer_g_h_and_ack() -> None:
    h = Harness()
    request = make_request()
    h.deliver(request)
    (tx,) = h.requests
    tx.reply(486)
    h.clock.advance(8.0)
    # G: 0.5, 1, 2, 4, 4 ... after the first send at 0.
    assert h.transport.times() == [0.0, 0.5, 1.5, 3.5, 7.5]
    ack = SipRequest(
        "ACK",
        request.uri,
        from_=request.from_.copy(),
        to=NameAddr(request.to.uri, params={"tag": tx.local_tag}),
        call_id=request.call_id,
        cseq=1,
        vias=[request.vias[0].copy()],
    )
    h.deliver(ack)
    assert tx.state is State.CONFIRMED
    assert h.acks == []  # absorbed by the transaction, not a TU matter
    h.clock.advance(5.1)
    assert tx.state is State.TERMINATED
    assert len(h.transport.sent) == 5
    assert h.layer.server_transactions == {}


def test_server_timer_h_without_ack() -> None:
    h = Harness()
    h.deliver(make_request())
    (tx,) = h.requests
    ended: list[ServerTransaction] = []
    tx.on_terminated = ended.append
    tx.reply(603)
    h.clock.advance(32.1)
    assert ended == [tx] and tx.timed_out


def test_server_2xx_retransmitted_until_ack_for_2xx() -> None:
    h = Harness()
    request = make_request()
    h.deliver(request)
    (tx,) = h.requests
    tx.reply(200, contact=NameAddr("sip:pbx@127.0.0.1"))
    h.clock.advance(1.6)
    assert h.transport.times() == [0.0, 0.5, 1.5]
    ack = make_request("ACK", branch="z9hG4bK-ack2xx", to_tag=tx.local_tag)
    h.deliver(ack)
    assert [a.method for a in h.acks] == ["ACK"]
    assert tx.state is State.TERMINATED
    h.clock.advance(40)
    assert len(h.transport.sent) == 3


def test_server_2xx_without_ack_times_out() -> None:
    h = Harness()
    h.deliver(make_request())
    (tx,) = h.requests
    tx.reply(200)
    h.clock.advance(32.1)
    assert tx.timed_out and tx.state is State.TERMINATED
    gaps = [
        round(b - a, 3) for a, b in zip(h.transport.times(), h.transport.times()[1:], strict=False)
    ]
    assert max(gaps) == 4.0


# -- server non-INVITE -----------------------------------------------------------------------


def test_server_non_invite_absorbs_and_lingers_timer_j() -> None:
    h = Harness()
    request = make_request("OPTIONS")
    h.deliver(request)
    h.deliver(request)  # Trying: discarded silently
    assert h.transport.sent == []
    (tx,) = h.requests
    tx.reply(200)
    h.deliver(request)
    assert len(h.transport.sent) == 2 and len(h.requests) == 1
    # Completed: only a slim record is kept (response bytes), the transaction object is gone.
    assert tx.state is State.TERMINATED and h.layer.server_transactions == {}
    h.clock.advance(31.9)
    h.deliver(request)  # still absorbed: the stored response is sent again
    assert len(h.transport.sent) == 3 and len(h.requests) == 1
    h.clock.advance(0.2)  # Timer J fired: a late copy is now a new request
    h.deliver(request)
    assert len(h.requests) == 2


def test_server_non_invite_reliable_terminates_at_once() -> None:
    h = Harness(reliable=True)
    h.deliver(make_request("OPTIONS"))
    h.requests[0].reply(200)
    assert h.layer.server_transactions == {}


def test_rfc2543_requests_are_matched_without_a_branch() -> None:
    h = Harness()
    request = make_request("OPTIONS", branch="old-style-1")
    h.deliver(request)
    h.deliver(request)
    assert len(h.requests) == 1
    assert server_key(request)[-1] == "OPTIONS"


def test_server_cap_answers_503_with_retry_after() -> None:
    h = Harness(max_server_transactions=2)
    for n in range(3):
        h.deliver(make_request("OPTIONS", branch=f"z9hG4bK-{n}"))
    assert len(h.requests) == 2
    (busy,) = h.transport.messages()
    assert isinstance(busy, SipResponse) and busy.status == 503
    assert busy.header("Retry-After") == "5"


# -- CANCEL ----------------------------------------------------------------------------------


def test_cancel_is_answered_200_and_the_tu_sends_487() -> None:
    h = Harness()
    invite = make_request()
    h.deliver(invite)
    (tx,) = h.requests
    assert isinstance(tx, ServerInviteTransaction)
    cancels: list[SipRequest] = []

    def on_cancel(t: ServerTransaction, cancel: SipRequest) -> None:
        cancels.append(cancel)
        t.reply(487)

    tx.on_cancel = on_cancel
    tx.reply(180)
    h.deliver(build_cancel(invite))
    statuses = [
        (m.status, m.cseq_method) for m in h.transport.messages() if isinstance(m, SipResponse)
    ]
    assert statuses == [(180, "INVITE"), (200, "CANCEL"), (487, "INVITE")]
    responses = [m for m in h.transport.messages() if isinstance(m, SipResponse)]
    assert responses[1].to.tag == responses[2].to.tag == tx.local_tag
    assert tx.cancelled and len(cancels) == 1
    assert tx.state is State.COMPLETED


def test_cancel_without_invite_gets_481() -> None:
    h = Harness()
    h.deliver(build_cancel(make_request(branch="z9hG4bK-nothing")))
    (response,) = h.transport.messages()
    assert isinstance(response, SipResponse) and response.status == 481


def test_client_cancel_waits_for_a_provisional() -> None:
    h = Harness()
    request = make_request(extra="Route: <sip:proxy.example.com;lr>\r\n")
    tx = h.send(request)
    assert isinstance(tx, ClientInviteTransaction)
    assert tx.cancel() is None  # Calling: only remembered
    assert len(h.transport.sent) == 1
    h.deliver(respond(request, 180))
    cancel = h.transport.messages()[-1]
    assert isinstance(cancel, SipRequest) and cancel.method == "CANCEL"
    assert cancel.branch == request.branch and len(cancel.vias) == 1
    assert str(cancel.uri) == str(request.uri)
    assert (cancel.call_id, cancel.cseq, cancel.cseq_method) == (request.call_id, 1, "CANCEL")
    assert cancel.to.tag is None and cancel.from_.tag == "a1"
    assert [str(r.uri) for r in cancel.routes] == ["sip:proxy.example.com;lr"]
    assert tx.cancel_transaction is not None
    h.deliver(respond(cancel, 200))
    assert tx.cancel_transaction.state is State.COMPLETED
    h.deliver(respond(request, 487))
    assert h.transport.messages()[-1].cseq_method == "ACK"
    assert [r.status for t, r in h.responses if t is tx] == [180, 487]


def test_cancelled_invite_without_final_times_out() -> None:
    h = Harness()
    request = make_request()
    tx = h.send(request)
    assert isinstance(tx, ClientInviteTransaction)
    h.deliver(respond(request, 180))
    tx.cancel()
    h.clock.advance(32.1)
    assert tx.timed_out
    assert [r.status for t, r in h.responses if t is tx] == [180, 408]


# -- transport choice and dialogs ----------------------------------------------------------


def test_transport_choice_is_case_insensitive() -> None:
    clock = FakeClock()
    layer = TransportLayer()
    udp, tcp = FakeTransport(clock), FakeReliable(clock)
    layer.transports = {"UDP": udp, "TCP": tcp}
    assert layer.choose(parse_uri("sip:a@10.0.0.1;transport=UDP"))[0] is udp
    assert layer.choose(parse_uri("sip:a@10.0.0.1;transport=Tcp"))[0] is tcp
    assert layer.choose(parse_uri("sip:a@10.0.0.1:5080"))[1:] == ("10.0.0.1", 5080)
    assert layer.choose(parse_uri("sip:a@10.0.0.1"), size=5000)[0] is tcp
    with pytest.raises(TransportError):
        layer.choose(parse_uri("sips:a@10.0.0.1"))


def _invite_with_rr() -> SipRequest:
    return make_request(extra="Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n")


def test_uac_dialog_reverses_route_set_and_builds_requests() -> None:
    invite = _invite_with_rr()
    ok = make_response(invite, 200, to_tag="b1", copy_record_route=True)
    ok.contacts = [NameAddr("sip:bob@192.0.2.20:5080")]
    dialog = Dialog.from_uac(invite, ok)
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.id == ("call-1@192.0.2.10", "a1", "b1")
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:p2.example.com;lr",
        "sip:p1.example.com;lr",
    ]
    ack = dialog.create_ack(invite.cseq)
    assert (ack.method, ack.cseq, ack.cseq_method) == ("ACK", 1, "ACK")
    assert str(ack.uri) == "sip:bob@192.0.2.20:5080"
    bye = dialog.create_request("BYE")
    assert bye.cseq == 2 and bye.to.tag == "b1" and bye.from_.tag == "a1"
    assert [str(r.uri) for r in bye.routes] == ["sip:p2.example.com;lr", "sip:p1.example.com;lr"]
    reinvite = dialog.create_request("INVITE", body=b"v=0\r\n")
    assert reinvite.cseq == 3 and reinvite.contacts
    for method in ("UPDATE", "INFO", "REFER"):
        assert dialog.create_request(method).method == method
    with pytest.raises(DialogError):
        dialog.create_request("ACK")


def test_uas_dialog_and_cseq_ordering() -> None:
    invite = _invite_with_rr()
    ok = make_response(invite, 200, to_tag="b1", copy_record_route=True)
    ok.contacts = [NameAddr("sip:pbx@127.0.0.1")]
    dialog = Dialog.from_uas(invite, ok)
    assert dialog.id == ("call-1@192.0.2.10", "b1", "a1")
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:p1.example.com;lr",
        "sip:p2.example.com;lr",
    ]
    assert str(dialog.remote_target) == "sip:alice@192.0.2.10:5070"
    bye = make_request("BYE", cseq=5, to_tag="b1")
    assert dialog.check_request(bye) is None
    stale = make_request("INFO", cseq=4, to_tag="b1")
    assert dialog.check_request(stale) == 500
    ack = make_request("ACK", cseq=1, to_tag="b1")
    assert dialog.check_request(ack) is None
    refresh = make_request("INVITE", cseq=6, to_tag="b1")
    refresh.contacts = [NameAddr("sip:alice@198.51.100.7")]
    dialog.check_request(refresh)
    assert str(dialog.remote_target) == "sip:alice@198.51.100.7"
    request = dialog.create_request("BYE")
    assert request.to.tag == "a1" and request.from_.tag == "b1"


def test_strict_route_moves_target_to_the_end() -> None:
    invite = make_request(extra="Record-Route: <sip:strict.example.com>\r\n")
    ok = make_response(invite, 200, to_tag="b1", copy_record_route=True)
    ok.contacts = [NameAddr("sip:bob@192.0.2.20")]
    dialog = Dialog.from_uac(invite, ok)
    bye = dialog.create_request("BYE")
    assert str(bye.uri) == "sip:strict.example.com"
    assert [str(r.uri) for r in bye.routes] == ["sip:bob@192.0.2.20"]


def test_early_dialog_from_tagged_provisional() -> None:
    invite = make_request()
    ringing = make_response(invite, 180, to_tag="b1")
    ringing.contacts = [NameAddr(SipUri("192.0.2.20", user="bob"))]
    dialog = Dialog.from_uac(invite, ringing)
    assert dialog.state is DialogState.EARLY
    ok = make_response(invite, 200, to_tag="b1")
    dialog.update_from_response(invite, ok)
    assert dialog.state is DialogState.CONFIRMED
    with pytest.raises(DialogError):
        Dialog.from_uac(invite, make_response(invite, 180))
