"""Events of calls: what happened to a call, as past-tense facts.

Every event names the call by ``call_id`` (the Pomelo call id, also the id of its CDR row) and
is addressed to the employees it involves and their groups, so an operator's live stream shows
his own calls and a group head's shows his groups' calls without knowing any event kind.
"""

from __future__ import annotations

from dataclasses import dataclass

from pomelo.core.events import DomainEvent, event


@event
@dataclass(frozen=True, kw_only=True)
class CallOffered(DomainEvent):
    """A call entered the PBX and was routed (or refused: a CallEnded follows at once)."""

    call_id: str
    direction: str
    from_number: str
    to_number: str
    did: str | None = None
    caller_account_id: str | None = None
    caller_user_id: str | None = None
    callee_account_id: str | None = None
    callee_user_id: str | None = None
    trunk_id: str | None = None


@event
@dataclass(frozen=True, kw_only=True)
class CallRingingStarted(DomainEvent):
    """A phone of ``account_id`` started ringing (one event per account, not per phone).

    Named past tense like every event (the test of the event registry insists), hence not
    "CallRinging"."""

    call_id: str
    account_id: str | None = None
    user_id: str | None = None


@event
@dataclass(frozen=True, kw_only=True)
class CallAnswered(DomainEvent):
    call_id: str
    account_id: str | None = None
    user_id: str | None = None


@event
@dataclass(frozen=True, kw_only=True)
class CallHoldStarted(DomainEvent):
    """``side`` ("caller" or "callee") put the other one on hold (not "CallHeld": event
    names end in -ed, which the registry test enforces)."""

    call_id: str
    side: str
    user_id: str | None = None


@event
@dataclass(frozen=True, kw_only=True)
class CallResumed(DomainEvent):
    call_id: str
    side: str
    user_id: str | None = None


@event
@dataclass(frozen=True, kw_only=True)
class CallTransferred(DomainEvent):
    """``side`` handed its party over to ``target`` (``mode`` is "blind" or "attended")."""

    call_id: str
    mode: str
    side: str
    target: str
    by_user_id: str | None = None
    to_account_id: str | None = None
    to_user_id: str | None = None
    replaced_call_id: str | None = None


@event
@dataclass(frozen=True, kw_only=True)
class CallEnded(DomainEvent):
    """The call is over; its CDR row was written in the same transaction."""

    call_id: str
    disposition: str
    hangup_side: str | None = None
    hangup_code: int | None = None
    hangup_reason: str | None = None
    duration: int = 0
    talk_time: int = 0
