"""Call legs and calls as explicit state machines.

A call is a set of legs the PBX controls: the UAS leg toward the caller and UAC legs toward
the callees (several while ringing in parallel, one once answered). Each transition is named
after the event that causes it and looked up in a table, so an event the state does not
allow raises :class:`IllegalTransition` instead of silently corrupting the call, and every
change is logged as ``state -[event]-> state``: the log of one call reads like its ladder
diagram.

This module knows nothing about the network; :mod:`pomelo.pbx.calls` drives the machines.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pomelo.sip.dialog import Dialog
    from pomelo.sip.message import SipRequest
    from pomelo.sip.transaction import ClientTransaction, ServerTransaction, TimerHandle
    from pomelo.sip.transport import Target

__all__ = [
    "CallEvent",
    "CallLeg",
    "CallState",
    "IllegalTransition",
    "LegEvent",
    "LegRole",
    "LegState",
    "caller_status",
    "disposition_for",
    "step",
    "try_step",
]

log = logging.getLogger(__name__)


class IllegalTransition(RuntimeError):
    """An event arrived that the current state does not allow (a bug, or a peer's)."""


class LegRole(enum.Enum):
    UAS = "uas"
    """We answer it: the caller's leg (and the leg of an inbound trunk call)."""
    UAC = "uac"
    """We placed it: toward a callee's phone or a trunk."""


class LegState(enum.Enum):
    NEW = "new"
    TRYING = "trying"
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATING = "terminating"
    ENDED = "ended"


class LegEvent(enum.Enum):
    INVITE_RECEIVED = "invite_received"
    INVITE_SENT = "invite_sent"
    CHALLENGED = "challenged"
    """A 401/407/422 we answer by sending the INVITE again."""
    PROVISIONAL = "provisional"
    ANSWERED = "answered"
    REJECTED = "rejected"
    CANCEL_RECEIVED = "cancel_received"
    CANCEL_SENT = "cancel_sent"
    LATE_ANSWER = "late_answer"
    """A 2xx that crossed our CANCEL: we ACK it and send BYE."""
    BYE_SENT = "bye_sent"
    BYE_RECEIVED = "bye_received"
    BYE_ANSWERED = "bye_answered"
    FAILED = "failed"
    """Transport error, transaction timeout or missing ACK: the leg is gone."""


_S = LegState
_E = LegEvent
_RINGING = (_S.TRYING, _S.EARLY)

_COMMON: dict[tuple[LegState, LegEvent], LegState] = {
    **{(s, _E.PROVISIONAL): _S.EARLY for s in _RINGING},
    **{(s, _E.ANSWERED): _S.CONFIRMED for s in _RINGING},
    **{(s, _E.REJECTED): _S.ENDED for s in _RINGING},
    (_S.CONFIRMED, _E.BYE_SENT): _S.TERMINATING,
    (_S.CONFIRMED, _E.BYE_RECEIVED): _S.ENDED,
    (_S.TERMINATING, _E.BYE_RECEIVED): _S.ENDED,
    (_S.TERMINATING, _E.BYE_ANSWERED): _S.ENDED,
    **{(s, _E.FAILED): _S.ENDED for s in (_S.NEW, *_RINGING, _S.CONFIRMED, _S.TERMINATING)},
}

TRANSITIONS: Mapping[LegRole, Mapping[tuple[LegState, LegEvent], LegState]] = {
    LegRole.UAS: {
        **_COMMON,
        (_S.NEW, _E.INVITE_RECEIVED): _S.TRYING,
        **{(s, _E.CANCEL_RECEIVED): _S.ENDED for s in _RINGING},
        (_S.EARLY, _E.BYE_RECEIVED): _S.ENDED,
    },
    LegRole.UAC: {
        **_COMMON,
        (_S.NEW, _E.INVITE_SENT): _S.TRYING,
        **{(s, _E.CHALLENGED): _S.TRYING for s in _RINGING},
        **{(s, _E.CANCEL_SENT): _S.TERMINATING for s in _RINGING},
        (_S.TERMINATING, _E.REJECTED): _S.ENDED,
        (_S.TERMINATING, _E.PROVISIONAL): _S.TERMINATING,
        (_S.TERMINATING, _E.LATE_ANSWER): _S.TERMINATING,
        (_S.TERMINATING, _E.BYE_SENT): _S.TERMINATING,
        (_S.EARLY, _E.BYE_RECEIVED): _S.ENDED,
    },
}


def step(table: Mapping[tuple[Any, Any], Any], state: Any, event: Any, what: str) -> Any:
    """The state after ``event``; raises :class:`IllegalTransition` when not allowed."""
    new = table.get((state, event))
    if new is None:
        raise IllegalTransition(f"{what}: {event.value} is not allowed in {state.value}")
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s %s -[%s]-> %s", what, state.value, event.value, new.value)
    return new


def try_step(table: Mapping[tuple[Any, Any], Any], state: Any, event: Any) -> Any:
    """``step`` for the hot path: the ``what`` label is only built when it is needed
    (an illegal transition or debug logging on)."""
    new = table.get((state, event))
    if new is None or log.isEnabledFor(logging.DEBUG):
        return None
    return new


class CallLeg:
    """One SIP dialog of a call, with what the B2BUA must remember about it.

    ``side`` says whom it represents in the call's record ("caller", "callee", or
    "transfer" for a leg placed to carry out a transfer); ``peer`` is the leg its media and
    in-dialog requests are relayed to.
    """

    __slots__ = (
        "account",
        "ack",
        "ack_cseq",
        "allow",
        "call",
        "client_tx",
        "dialog",
        "flow",
        "holding",
        "invite",
        "key",
        "local_contact",
        "local_sdp",
        "media",
        "outcome",
        "peer",
        "pending",
        "remote_sdp",
        "retried",
        "ring_timer",
        "role",
        "session_expires",
        "session_refresher",
        "session_timer",
        "side",
        "state",
        "trunk",
        "tx",
    )

    def __init__(self, role: LegRole, side: str, key: tuple[str, str]) -> None:
        self.role = role
        self.side = side
        self.key = key
        self.state = LegState.NEW
        self.call: Any = None
        self.account: Any = None
        self.peer: CallLeg | None = None
        self.dialog: Dialog | None = None
        self.flow: Target | None = None
        self.tx: ServerTransaction | None = None
        self.client_tx: ClientTransaction | None = None
        self.invite: SipRequest | None = None
        self.local_contact: Any = None
        self.ack: bytes | None = None
        self.ack_cseq = 0
        self.trunk: Any = None
        self.allow: frozenset[str] = frozenset()
        self.local_sdp = b""
        self.remote_sdp = b""
        self.media: Any = None
        """The PBX's RTP end of this leg (:class:`pomelo.pbx.anchor.LegMedia`) when anchored."""
        self.holding = False
        self.outcome: int | None = None
        self.pending: Any = None
        self.retried: set[int] = set()
        self.ring_timer: TimerHandle | None = None
        self.session_expires = 0
        self.session_refresher = False
        self.session_timer: TimerHandle | None = None

    def fire(self, event: LegEvent) -> LegState:
        table = TRANSITIONS[self.role]
        new = try_step(table, self.state, event)
        if new is None:
            new = step(table, self.state, event, f"leg {self.key[1]}")
        self.state = new
        return self.state

    @property
    def invite_request(self) -> SipRequest:
        """The leg's INVITE (for a UAC leg, the latest one sent, e.g. with credentials)."""
        if self.invite is None:
            raise IllegalTransition(f"leg {self.key[1]} has no INVITE yet")
        return self.invite

    @property
    def active(self) -> bool:
        return self.state is not LegState.ENDED

    @property
    def ringing(self) -> bool:
        return self.state in (LegState.TRYING, LegState.EARLY)

    @property
    def confirmed(self) -> bool:
        return self.state is LegState.CONFIRMED

    def cancel_timers(self) -> None:
        for timer in (self.ring_timer, self.session_timer):
            if timer is not None:
                timer.cancel()
        self.ring_timer = self.session_timer = None

    def __repr__(self) -> str:
        return f"<CallLeg {self.role.value} {self.side} {self.key[1]} {self.state.value}>"


class CallState(enum.Enum):
    OFFERED = "offered"
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDING = "ending"
    """The outcome is known (CDR written); legs are still being cleared."""
    ENDED = "ended"


class CallEvent(enum.Enum):
    RANG = "rang"
    ANSWERED = "answered"
    FAILED = "failed"
    HUNG_UP = "hung_up"
    CLEARED = "cleared"


CALL_TRANSITIONS: Mapping[tuple[CallState, CallEvent], CallState] = {
    (CallState.OFFERED, CallEvent.RANG): CallState.RINGING,
    (CallState.RINGING, CallEvent.RANG): CallState.RINGING,
    (CallState.OFFERED, CallEvent.ANSWERED): CallState.ANSWERED,
    (CallState.RINGING, CallEvent.ANSWERED): CallState.ANSWERED,
    (CallState.OFFERED, CallEvent.FAILED): CallState.ENDING,
    (CallState.RINGING, CallEvent.FAILED): CallState.ENDING,
    (CallState.ANSWERED, CallEvent.HUNG_UP): CallState.ENDING,
    (CallState.ENDING, CallEvent.CLEARED): CallState.ENDED,
}

# -- outcome of a set of forks ------------------------------------------------------------

RING_TIMEOUT = 480
"""The outcome we record for a fork we cancelled because nobody answered in time."""


def caller_status(outcomes: Iterable[int | None]) -> int:
    """The one status to answer the caller when every fork failed (after RFC 3261 §16.7).

    A 6xx is definitive; busy beats "not answered" (the caller should hear busy if any phone
    of the extension is busy); unanswered forks (ring timeout, 408, 480) beat other 4xx, as
    the extension does exist; transport errors alone give 503.
    """
    statuses = [s for s in outcomes if s is not None]
    if not statuses:
        return 480
    for status in statuses:
        if status >= 600:
            return status
    if 486 in statuses:
        return 486
    if any(s in (408, 480, 487) for s in statuses):
        return 480
    client = sorted(s for s in statuses if 400 <= s < 500)
    if client:
        return client[0]
    return 503


def disposition_for(status: int) -> str:
    """The CDR disposition of a call that ended with ``status`` to the caller unanswered."""
    if status in (486, 600):
        return "busy"
    if status in (408, 480):
        return "no_answer"
    if status == 487:
        return "cancelled"
    if status in (403, 603):
        return "rejected"
    return "failed"
