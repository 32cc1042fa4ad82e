"""The employee (agent) state machine of the ACD.

An employee is in exactly one state; the transitions, named after the event that causes them::

    logged_out  -logged_in->        available
    available   -offered->          ringing      -answered->  talking
    ringing     -rejected | ring_timed_out | ring_cancelled->  available
    talking     -call_ended->       wrap_up      -wrap_up_finished (or elapsed)->  available
    available | wrap_up  -break_started->  break  -break_ended->  available
    available | wrap_up | break  -logged_out->  logged_out

plus ``available -dialed-> talking`` for calls the employee places himself and
``break -break_started-> break`` to change the reason. The table is :data:`TRANSITIONS`; an
event the state does not allow raises :class:`IllegalAgentTransition` naming both, so a late or
duplicated event (a second answer, a hang-up of a call the employee never had) is caught
instead of silently corrupting the counters. Each change is logged ``state -[event]-> state``.

Only an ``available`` employee whose *accepts calls* toggle is on may be offered a call
(:attr:`Agent.can_take_call`). The toggle is separate from the state because it is the
employee's standing choice ("do not send me queue calls") that survives log-outs and breaks.

**Wrap-up (after-call work)** lasts ``wrap_up_seconds`` (default 10 s) after every call and then
ends by itself: the state is settled lazily against the clock whenever it is read or an event
arrives, and the ``available`` state is dated at the instant the wrap-up elapsed, not when
somebody looked. ``wrap_up_ends_at`` tells the caller when to schedule a timer so that queued
calls are offered on time. ``wrap_up_seconds = 0`` skips the state.

**Refused rings.** A ring the employee rejects or lets time out is remembered per call
(:meth:`Agent.has_refused`, bounded to the last :data:`REFUSALS_KEPT` calls) together with
``last_refused_at``; the strategies rank an employee who refused a call after everyone who has
not, so he is never re-rung *first* for it (he is rung again only when nobody else is free). A
ring cancelled because the caller left or someone else answered is not his refusal.

**Counters for today** (calls offered, answered, dialled; talk seconds; missed and rejected
rings) belong to the calendar day in the employee's time zone and start from zero on the first
read or event of a new day. Talk time of a call is added when it ends: ``talk_seconds +=
ended_at - talking_since`` (a call crossing midnight counts for the day it ended).

**Idle since** (for longest-idle distribution) is when he last became ready for calls without
having taken one since: ``idle_since = max(last_call_ended_at, logged_in_at, break_ended_at)``.
The end of a break counts, so an employee back from a break does not jump ahead of colleagues
who were waiting for calls all along; a refused ring does not, so refusing earns no rest.
"""

from __future__ import annotations

import enum
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Protocol

__all__ = [
    "DEFAULT_WRAP_UP_SECONDS",
    "REFUSALS_KEPT",
    "TRANSITIONS",
    "Agent",
    "AgentDayStats",
    "AgentEvent",
    "AgentStatus",
    "AgentView",
    "IllegalAgentTransition",
]

log = logging.getLogger(__name__)

DEFAULT_WRAP_UP_SECONDS = 10.0
REFUSALS_KEPT = 32
"""Refusals remembered per employee: enough for every call that can still be waiting for him."""


class AgentStatus(enum.Enum):
    LOGGED_OUT = "logged_out"
    AVAILABLE = "available"
    RINGING = "ringing"
    TALKING = "talking"
    WRAP_UP = "wrap_up"
    BREAK = "break"


class AgentEvent(enum.Enum):
    LOGGED_IN = "logged_in"
    LOGGED_OUT = "logged_out"
    OFFERED = "offered"
    """The ACD rings the employee's devices with a call."""
    ANSWERED = "answered"
    REJECTED = "rejected"
    """He declined, or his device failed or vanished mid-ring: a refusal."""
    RING_TIMED_OUT = "ring_timed_out"
    """Nobody picked up within the ring timeout: a refusal and a missed ring."""
    RING_CANCELLED = "ring_cancelled"
    """The caller left or another employee answered: not his refusal."""
    DIALED = "dialed"
    """He placed a call himself (click-to-call, callback, internal)."""
    CALL_ENDED = "call_ended"
    WRAP_UP_FINISHED = "wrap_up_finished"
    """He pressed "ready", or the wrap-up time elapsed."""
    BREAK_STARTED = "break_started"
    BREAK_ENDED = "break_ended"


_S = AgentStatus
_E = AgentEvent

TRANSITIONS: Mapping[tuple[AgentStatus, AgentEvent], AgentStatus] = {
    (_S.LOGGED_OUT, _E.LOGGED_IN): _S.AVAILABLE,
    (_S.AVAILABLE, _E.OFFERED): _S.RINGING,
    (_S.AVAILABLE, _E.DIALED): _S.TALKING,
    (_S.AVAILABLE, _E.BREAK_STARTED): _S.BREAK,
    (_S.AVAILABLE, _E.LOGGED_OUT): _S.LOGGED_OUT,
    (_S.RINGING, _E.ANSWERED): _S.TALKING,
    (_S.RINGING, _E.REJECTED): _S.AVAILABLE,
    (_S.RINGING, _E.RING_TIMED_OUT): _S.AVAILABLE,
    (_S.RINGING, _E.RING_CANCELLED): _S.AVAILABLE,
    (_S.TALKING, _E.CALL_ENDED): _S.WRAP_UP,
    (_S.WRAP_UP, _E.WRAP_UP_FINISHED): _S.AVAILABLE,
    (_S.WRAP_UP, _E.BREAK_STARTED): _S.BREAK,
    (_S.WRAP_UP, _E.LOGGED_OUT): _S.LOGGED_OUT,
    (_S.BREAK, _E.BREAK_STARTED): _S.BREAK,
    (_S.BREAK, _E.BREAK_ENDED): _S.AVAILABLE,
    (_S.BREAK, _E.LOGGED_OUT): _S.LOGGED_OUT,
}


class IllegalAgentTransition(RuntimeError):
    """An event the employee's current state does not allow."""

    error_id = "agent-state-conflict"

    def __init__(
        self, employee_id: str, state: AgentStatus, event: AgentEvent, why: str = ""
    ) -> None:
        super().__init__(
            f"employee {employee_id}: event {event.value!r} is not allowed in state"
            f" {state.value!r}{f' ({why})' if why else ''}"
        )
        self.employee_id = employee_id
        self.state = state
        self.event = event


@dataclass(frozen=True, slots=True)
class AgentDayStats:
    day: date
    calls_offered: int
    calls_answered: int
    calls_dialed: int
    talk_seconds: float
    missed_rings: int
    rejected_rings: int


class AgentView(Protocol):
    """What distribution strategies and queues read of an employee (an :class:`Agent`, or a
    snapshot of one on another node)."""

    @property
    def employee_id(self) -> str: ...
    @property
    def status(self) -> AgentStatus: ...
    @property
    def accepts_calls(self) -> bool: ...
    @property
    def idle_since(self) -> datetime | None: ...
    @property
    def calls_answered_today(self) -> int: ...
    def has_refused(self, call_id: str) -> bool: ...


class Agent:
    """One employee's ACD state. ``clock`` returns timezone-aware datetimes (e.g.
    ``SystemClock().now``); ``tz`` is the tenant's time zone, which decides when "today" starts."""

    __slots__ = (
        "_accepts_calls",
        "_answered",
        "_clock",
        "_day",
        "_dialed",
        "_entered",
        "_missed",
        "_offered",
        "_refusals",
        "_rejected",
        "_since",
        "_status",
        "_talk_seconds",
        "_talking_since",
        "_tz",
        "break_ended_at",
        "break_reason",
        "call_id",
        "employee_id",
        "last_call_ended_at",
        "last_refused_at",
        "logged_in_at",
        "wrap_up_seconds",
    )

    def __init__(
        self,
        employee_id: str,
        clock: Callable[[], datetime],
        *,
        wrap_up_seconds: float = DEFAULT_WRAP_UP_SECONDS,
        tz: tzinfo = UTC,
        accepts_calls: bool = True,
    ) -> None:
        if wrap_up_seconds < 0:
            raise ValueError("wrap_up_seconds must be >= 0")
        now = clock()
        if now.tzinfo is None:
            raise ValueError("the agent clock must return timezone-aware datetimes")
        self.employee_id = employee_id
        self.wrap_up_seconds = wrap_up_seconds
        self._clock = clock
        self._tz = tz
        self._accepts_calls = accepts_calls
        self._status = AgentStatus.LOGGED_OUT
        self._since = now
        self._entered: dict[AgentStatus, datetime] = {AgentStatus.LOGGED_OUT: now}
        self.break_reason: str | None = None
        self.call_id: str | None = None
        """The call he is ringing for or talking on; None otherwise."""
        self.logged_in_at: datetime | None = None
        self.break_ended_at: datetime | None = None
        self.last_call_ended_at: datetime | None = None
        self.last_refused_at: datetime | None = None
        self._refusals: OrderedDict[str, datetime] = OrderedDict()
        self._talking_since: datetime | None = None
        self._day = self._local_day(now)
        self._offered = self._answered = self._dialed = self._missed = self._rejected = 0
        self._talk_seconds = 0.0

    # --- reading -------------------------------------------------------------------------

    @property
    def status(self) -> AgentStatus:
        self._settle(self._clock())
        return self._status

    @property
    def state_since(self) -> datetime:
        self._settle(self._clock())
        return self._since

    def time_in_state(self) -> float:
        """Seconds since the current state was entered."""
        now = self._clock()
        self._settle(now)
        return (now - self._since).total_seconds()

    def entered_at(self, status: AgentStatus) -> datetime | None:
        """When ``status`` was last entered (None: never since this object was created)."""
        self._settle(self._clock())
        return self._entered.get(status)

    @property
    def accepts_calls(self) -> bool:
        return self._accepts_calls

    @property
    def can_take_call(self) -> bool:
        return self.status is AgentStatus.AVAILABLE and self._accepts_calls

    @property
    def wrap_up_ends_at(self) -> datetime | None:
        if self._status is not AgentStatus.WRAP_UP:
            return None
        return self._since + timedelta(seconds=self.wrap_up_seconds)

    @property
    def idle_since(self) -> datetime | None:
        marks = [
            t
            for t in (self.last_call_ended_at, self.logged_in_at, self.break_ended_at)
            if t is not None
        ]
        return max(marks) if marks else None

    def has_refused(self, call_id: str) -> bool:
        return call_id in self._refusals

    @property
    def calls_answered_today(self) -> int:
        self._roll_day(self._clock())
        return self._answered

    def stats(self) -> AgentDayStats:
        self._roll_day(self._clock())
        return AgentDayStats(
            day=self._day,
            calls_offered=self._offered,
            calls_answered=self._answered,
            calls_dialed=self._dialed,
            talk_seconds=self._talk_seconds,
            missed_rings=self._missed,
            rejected_rings=self._rejected,
        )

    # --- events --------------------------------------------------------------------------

    def log_in(self) -> None:
        now = self._step(AgentEvent.LOGGED_IN)
        self.logged_in_at = now

    def log_out(self) -> None:
        self._step(AgentEvent.LOGGED_OUT)
        self.break_reason = None

    def set_accepts_calls(self, accepts: bool) -> None:
        self._accepts_calls = accepts

    def offer(self, call_id: str) -> None:
        """Ring him with ``call_id``. Offering a call he cannot take is a distributor bug."""
        if not self._accepts_calls:
            raise IllegalAgentTransition(
                self.employee_id, self.status, AgentEvent.OFFERED, "he does not accept calls"
            )
        self._step(AgentEvent.OFFERED)
        self.call_id = call_id
        self._offered += 1

    def answer(self) -> None:
        now = self._step(AgentEvent.ANSWERED)
        self._talking_since = now
        self._answered += 1

    def reject(self) -> None:
        self._refuse(self._step(AgentEvent.REJECTED))
        self._rejected += 1

    def ring_timeout(self) -> None:
        self._refuse(self._step(AgentEvent.RING_TIMED_OUT))
        self._missed += 1

    def cancel_ring(self) -> None:
        self._step(AgentEvent.RING_CANCELLED)
        self.call_id = None

    def dial(self, call_id: str) -> None:
        now = self._step(AgentEvent.DIALED)
        self.call_id = call_id
        self._talking_since = now
        self._dialed += 1

    def end_call(self) -> None:
        now = self._step(AgentEvent.CALL_ENDED)
        if self._talking_since is not None:
            self._talk_seconds += (now - self._talking_since).total_seconds()
        self._talking_since = None
        self.call_id = None
        self.last_call_ended_at = now
        self._settle(now)  # a zero wrap-up ends at once

    def finish_wrap_up(self) -> None:
        self._step(AgentEvent.WRAP_UP_FINISHED)

    def start_break(self, reason: str) -> None:
        """Go on (or change the reason of) a break; allowed when available or in wrap-up."""
        if not reason.strip():
            raise ValueError("a break needs a reason")
        self._step(AgentEvent.BREAK_STARTED)
        self.break_reason = reason

    def end_break(self) -> None:
        self.break_ended_at = self._step(AgentEvent.BREAK_ENDED)
        self.break_reason = None

    # --- machinery -----------------------------------------------------------------------

    def _step(self, event: AgentEvent) -> datetime:
        now = self._clock()
        self._settle(now)
        self._enter(event, now)
        return now

    def _enter(self, event: AgentEvent, at: datetime) -> None:
        new = TRANSITIONS.get((self._status, event))
        if new is None:
            raise IllegalAgentTransition(self.employee_id, self._status, event)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "agent %s %s -[%s]-> %s",
                self.employee_id,
                self._status.value,
                event.value,
                new.value,
            )
        self._roll_day(at)
        self._status = new
        self._since = at
        self._entered[new] = at

    def _settle(self, now: datetime) -> None:
        """Apply the wrap-up that elapsed on its own, dated when it elapsed."""
        ends = self.wrap_up_ends_at
        if ends is not None and now >= ends:
            self._enter(AgentEvent.WRAP_UP_FINISHED, ends)

    def _refuse(self, now: datetime) -> None:
        if self.call_id is not None:
            self._refusals[self.call_id] = now
            self._refusals.move_to_end(self.call_id)
            while len(self._refusals) > REFUSALS_KEPT:
                self._refusals.popitem(last=False)
        self.last_refused_at = now
        self.call_id = None

    def _local_day(self, at: datetime) -> date:
        return at.astimezone(self._tz).date()

    def _roll_day(self, now: datetime) -> None:
        today = self._local_day(now)
        if today > self._day:  # a wrap-up settled late is dated earlier: never go back
            self._day = today
            self._offered = self._answered = self._dialed = self._missed = self._rejected = 0
            self._talk_seconds = 0.0
