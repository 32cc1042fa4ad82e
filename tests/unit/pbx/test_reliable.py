"""Reliable provisionals (RFC 3262): RSeq numbering, retransmission until PRACK, one
outstanding at a time, and PRACKs that do not match."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from pomelo.pbx.reliable import ReliableProvisionals, requires_100rel
from pomelo.sip.message import parse_message


def invite(require: str | None) -> Any:
    extra = f"Require: {require}\r\n" if require else ""
    return parse_message(
        (
            "INVITE sip:1@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
            "From: <sip:a@x>;tag=1\r\nTo: <sip:1@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
            f"{extra}Content-Length: 0\r\n\r\n"
        ).encode()
    )


def test_only_a_required_100rel_counts() -> None:
    assert requires_100rel(invite("timer, 100rel"))
    assert requires_100rel(invite("100REL"))
    assert not requires_100rel(invite("timer"))
    assert not requires_100rel(invite(None))


class FakeTx:
    def __init__(self, rack: str | None = None) -> None:
        self.sent: list[tuple[int, list[tuple[str, str]]]] = []
        self.resent = 0
        self.request = SimpleNamespace(header=lambda name: rack if name == "RAck" else None)

    def reply(self, status: int, reason: str | None = None, **kw: Any) -> Any:
        headers = list(kw.get("headers", ()))
        self.sent.append((status, headers))
        return SimpleNamespace(status=status, headers=headers)

    def respond(self, response: Any) -> bool:
        self.resent += 1
        return True


def make() -> tuple[ReliableProvisionals, FakeTx, list[Any]]:
    tx = FakeTx()
    timers: list[Any] = []
    a = SimpleNamespace(tx=tx, ringing=True, local_contact=None)

    def call_later(delay: float, callback: Any) -> Any:
        handle = SimpleNamespace(delay=delay, callback=callback, cancel=lambda: None)
        timers.append(handle)
        return handle

    call = SimpleNamespace(
        a=a, id="c1", service=SimpleNamespace(call_later=call_later), post=lambda f, *x: f(*x)
    )
    return ReliableProvisionals(call), tx, timers  # type: ignore[arg-type]


def test_provisionals_wait_for_the_prack_of_the_previous_one() -> None:
    reliable, tx, timers = make()
    first = reliable.send(180, None, b"", [])
    assert first is not None
    rseq = dict(tx.sent[0][1])["RSeq"]
    assert dict(tx.sent[0][1])["Require"] == "100rel"
    assert reliable.send(183, None, b"sdp", []) is None  # queued behind the first
    timers[-1].callback()  # T1 passes without a PRACK: retransmitted
    assert tx.resent == 1 and timers[-1].delay == 1.0
    prack = FakeTx(f"{rseq} 1 INVITE")
    assert reliable.on_prack(prack)  # type: ignore[arg-type]
    assert prack.sent[0][0] == 200
    assert [s for s, _ in tx.sent] == [180, 183]  # the queued one went out after the PRACK
    assert int(dict(tx.sent[1][1])["RSeq"]) == int(rseq) + 1


def test_a_prack_that_names_nothing_pending_is_481() -> None:
    reliable, _tx, _timers = make()
    reliable.send(180, None, b"", [])
    for rack in ("999 1 INVITE", "1 1 BYE"):
        prack = FakeTx(rack)
        assert not reliable.on_prack(prack)  # type: ignore[arg-type]
        assert prack.sent[0][0] == 481
    garbage = FakeTx("nonsense")
    assert not reliable.on_prack(garbage)  # type: ignore[arg-type]
    assert garbage.sent[0][0] == 400


def test_retransmission_gives_up_after_64_t1() -> None:
    reliable, tx, timers = make()
    reliable.send(180, None, b"", [])
    while timers and reliable.pending is not None:
        timers.pop().callback()
    assert reliable.pending is None and 5 <= tx.resent <= 12
