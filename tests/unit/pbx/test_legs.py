"""The call leg and call state machines, fork outcome mapping, and session timer rules."""

from __future__ import annotations

import pytest

from pomelo.pbx.legs import (
    CALL_TRANSITIONS,
    CallEvent,
    CallLeg,
    CallState,
    IllegalTransition,
    LegEvent,
    LegRole,
    LegState,
    caller_status,
    disposition_for,
    step,
)
from pomelo.pbx.midcall import holds, same_session
from pomelo.pbx.session_timer import (
    SessionTimerPolicy,
    expiry_delay,
    negotiate_uac,
    negotiate_uas,
    parse_session_expires,
    refresh_delay,
    refresh_header,
    too_small,
)
from pomelo.pbx.transfer import parse_replaces
from pomelo.sip.message import SipRequest, make_response
from pomelo.sip.uri import NameAddr


def leg(role: LegRole, *events: LegEvent) -> CallLeg:
    item = CallLeg(role, "caller" if role is LegRole.UAS else "callee", ("cid", "tag"))
    for event in events:
        item.fire(event)
    return item


E = LegEvent


def test_caller_leg_basic_call() -> None:
    a = leg(LegRole.UAS, E.INVITE_RECEIVED)
    assert a.state is LegState.TRYING and a.ringing
    assert a.fire(E.PROVISIONAL) is LegState.EARLY
    assert a.fire(E.PROVISIONAL) is LegState.EARLY
    assert a.fire(E.ANSWERED) is LegState.CONFIRMED and a.confirmed
    assert a.fire(E.BYE_RECEIVED) is LegState.ENDED and not a.active


def test_callee_leg_cancel_then_487() -> None:
    b = leg(LegRole.UAC, E.INVITE_SENT, E.PROVISIONAL)
    assert b.fire(E.CANCEL_SENT) is LegState.TERMINATING
    assert b.fire(E.PROVISIONAL) is LegState.TERMINATING  # a late 180 changes nothing
    assert b.fire(E.REJECTED) is LegState.ENDED


def test_callee_answer_crossing_cancel_is_acked_and_hung_up() -> None:
    b = leg(LegRole.UAC, E.INVITE_SENT, E.CANCEL_SENT)
    assert b.fire(E.LATE_ANSWER) is LegState.TERMINATING
    assert b.fire(E.BYE_SENT) is LegState.TERMINATING
    assert b.fire(E.BYE_ANSWERED) is LegState.ENDED


def test_hangup_from_our_side_and_crossing_byes() -> None:
    b = leg(LegRole.UAC, E.INVITE_SENT, E.ANSWERED, E.BYE_SENT)
    assert b.state is LegState.TERMINATING
    assert b.fire(E.BYE_RECEIVED) is LegState.ENDED  # the other side hung up at the same time


def test_challenge_returns_to_trying() -> None:
    b = leg(LegRole.UAC, E.INVITE_SENT, E.PROVISIONAL)
    assert b.fire(E.CHALLENGED) is LegState.TRYING


@pytest.mark.parametrize(
    ("role", "events", "illegal"),
    [
        (LegRole.UAS, (), E.ANSWERED),  # answering what never arrived
        (LegRole.UAS, (E.INVITE_RECEIVED,), E.CANCEL_SENT),  # a UAS does not send CANCEL
        (LegRole.UAS, (E.INVITE_RECEIVED, E.ANSWERED), E.CANCEL_RECEIVED),  # too late
        (LegRole.UAC, (E.INVITE_SENT,), E.INVITE_RECEIVED),
        (LegRole.UAC, (E.INVITE_SENT, E.ANSWERED), E.ANSWERED),
        (LegRole.UAC, (E.INVITE_SENT, E.REJECTED), E.BYE_SENT),
        (LegRole.UAC, (E.INVITE_SENT, E.ANSWERED, E.BYE_RECEIVED), E.FAILED),
    ],
)
def test_illegal_transitions_raise(
    role: LegRole, events: tuple[LegEvent, ...], illegal: LegEvent
) -> None:
    item = leg(role, *events)
    before = item.state
    with pytest.raises(IllegalTransition):
        item.fire(illegal)
    assert item.state is before


def test_failure_ends_any_live_state() -> None:
    for events in [(), (E.INVITE_SENT,), (E.INVITE_SENT, E.ANSWERED)]:
        assert leg(LegRole.UAC, *events).fire(E.FAILED) is LegState.ENDED


def test_leg_has_slots() -> None:
    item = leg(LegRole.UAS)
    with pytest.raises(AttributeError):
        item.unexpected = 1  # type: ignore[attr-defined]


def test_transitions_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="pomelo.pbx.legs")
    leg(LegRole.UAS, E.INVITE_RECEIVED)
    assert "new -[invite_received]-> trying" in caplog.text


def test_call_state_machine() -> None:
    state = CallState.OFFERED
    for event, expected in [
        (CallEvent.RANG, CallState.RINGING),
        (CallEvent.RANG, CallState.RINGING),
        (CallEvent.ANSWERED, CallState.ANSWERED),
        (CallEvent.HUNG_UP, CallState.ENDING),
        (CallEvent.CLEARED, CallState.ENDED),
    ]:
        state = step(CALL_TRANSITIONS, state, event, "call")
        assert state is expected
    with pytest.raises(IllegalTransition):
        step(CALL_TRANSITIONS, CallState.ANSWERED, CallEvent.FAILED, "call")
    assert step(CALL_TRANSITIONS, CallState.OFFERED, CallEvent.FAILED, "c") is CallState.ENDING


@pytest.mark.parametrize(
    ("outcomes", "status"),
    [
        ([], 480),  # nobody to ring
        ([480, 486], 486),  # busy wins over not answering
        ([480, 603], 603),  # a 6xx is final
        ([487, 404], 480),  # one phone rang out: the extension exists
        ([404], 404),
        ([503, 503], 503),
        ([500, 403], 403),
        ([None, 408], 480),
    ],
)
def test_caller_status(outcomes: list[int | None], status: int) -> None:
    assert caller_status(outcomes) == status


@pytest.mark.parametrize(
    ("status", "disposition"),
    [
        (486, "busy"),
        (600, "busy"),
        (480, "no_answer"),
        (408, "no_answer"),
        (487, "cancelled"),
        (603, "rejected"),
        (404, "failed"),
        (503, "failed"),
    ],
)
def test_disposition(status: int, disposition: str) -> None:
    assert disposition_for(status) == disposition


# -- session timers --------------------------------------------------------------------------


def invite(*headers: tuple[str, str]) -> SipRequest:
    return SipRequest(
        "INVITE",
        "sip:102@example.com",
        from_=NameAddr("sip:101@example.com", params={"tag": "a"}),
        to=NameAddr("sip:102@example.com"),
        call_id="c1",
        contacts=[NameAddr("sip:101@127.0.0.1:5070")],
        headers=list(headers),
    )


POLICY = SessionTimerPolicy(interval=1800, min_se=90)


def test_session_expires_parsing() -> None:
    assert parse_session_expires(invite(("Session-Expires", "600;refresher=uac"))) == (600, "uac")
    assert parse_session_expires(invite(("x", "300"))) == (300, None)  # compact form
    assert parse_session_expires(invite(("Session-Expires", "soon"))) is None
    assert parse_session_expires(invite()) is None


def test_uas_negotiation() -> None:
    asked = invite(("Session-Expires", "600;refresher=uas"), ("Supported", "timer"))
    interval, we_refresh, headers = negotiate_uas(asked, POLICY)
    assert (interval, we_refresh) == (600, True)
    assert ("Require", "timer") in headers
    # No Session-Expires but timer support: the caller refreshes, with our interval.
    interval, we_refresh, headers = negotiate_uas(invite(("Supported", "timer")), POLICY)
    assert (interval, we_refresh) == (1800, False)
    assert headers[0] == ("Session-Expires", "1800;refresher=uac")
    # No support at all: we refresh it ourselves, and do not Require what it lacks.
    interval, we_refresh, headers = negotiate_uas(invite(), POLICY)
    assert we_refresh and ("Require", "timer") not in headers
    # Capped at our own interval.
    assert negotiate_uas(invite(("Session-Expires", "7200")), POLICY)[0] == 1800


def test_uas_refuses_too_small_interval() -> None:
    assert too_small(invite(("Session-Expires", "60")), POLICY)
    assert not too_small(invite(("Session-Expires", "90")), POLICY)
    assert not too_small(invite(("Session-Expires", "60")), SessionTimerPolicy(enabled=False))


def test_uac_negotiation() -> None:
    ok = make_response(invite(), 200, to_tag="b")
    assert negotiate_uac(ok, POLICY) == (1800, True)  # callee without timers: we refresh
    ok.add_header("Session-Expires", "900;refresher=uas")
    assert negotiate_uac(ok, POLICY) == (900, False)
    ok.set_header("Session-Expires", "900;refresher=uac")
    assert negotiate_uac(ok, POLICY) == (900, True)


def test_timer_arithmetic() -> None:
    assert refresh_delay(1800) == 900
    assert expiry_delay(1800) == 1800 - 32
    assert expiry_delay(90) == 60
    assert refresh_header(600, we_are_uac=True, we_refresh=True) == "600;refresher=uac"
    assert refresh_header(600, we_are_uac=False, we_refresh=False) == "600;refresher=uac"
    assert refresh_header(600, we_are_uac=False, we_refresh=True) == "600;refresher=uas"


# -- SDP and transfer helpers --------------------------------------------------------------

SDP = (
    b"v=0\r\no=alice 1 {v} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 {c}\r\nt=0 0\r\n"
    b"m=audio 20000 RTP/AVP 0\r\n{a}"
)


def sdp(version: int = 1, conn: str = "127.0.0.1", attr: str = "") -> bytes:
    return (
        SDP.replace(b"{v}", str(version).encode())
        .replace(b"{c}", conn.encode())
        .replace(b"{a}", attr.encode())
    )


def test_hold_detection() -> None:
    assert holds(sdp(attr="a=sendonly\r\n")) is True
    assert holds(sdp(attr="a=inactive\r\n")) is True
    assert holds(sdp(conn="0.0.0.0")) is True  # noqa: S104 - RFC 2543 hold, not a bind
    assert holds(sdp(attr="a=sendrecv\r\n")) is False
    assert holds(sdp()) is False
    assert holds(b"not sdp") is None


def test_refresh_detection_by_session_version() -> None:
    assert same_session(sdp(1), sdp(1, attr="a=sendrecv\r\n"))
    assert not same_session(sdp(2), sdp(1))
    assert not same_session(b"", sdp(1))


def test_replaces_parsing() -> None:
    assert parse_replaces("abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2") == ("abc@host", "1", "2")
    assert parse_replaces("abc;to-tag=1") is None
