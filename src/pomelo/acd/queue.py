"""One group's queue of waiting calls, in memory.

**Order.** Calls are kept sorted by ``(-priority, enqueued_at, arrival)``: a higher priority
first, then whoever has waited longest, then whoever was enqueued first (equal timestamps keep
arrival order). The key is fixed when the call is enqueued; priorities are strict (a steady
stream of higher-priority calls holds lower ones back), but within one priority nobody is ever
overtaken by a later caller, so the oldest of equal priority is always served first.

**Callbacks keep their place.** A caller who asks to be called back (:meth:`CallQueue.to_callback`)
leaves the line but his request stays in the queue with his original ``enqueued_at``: it reaches
the head exactly when his call would have, never earlier than anyone who queued before him, and
it does not overflow (nobody is on the line any more). Enqueuing a call with an ``enqueued_at``
from the past (a call coming back into the queue) likewise gives it its old place.

**Position** is 1-based among everything in the queue, callbacks included: they are served in
turn, so they do take a place ahead of later callers.

**Expected wait** of the call at position ``p``, with ``f`` employees free for this queue, ``n``
employees staffing it (logged in, accepting calls, not on a break: free + ringing + talking +
in wrap-up) and ``aht`` the recent average handling time (talk + hold + wrap-up)::

    ewt = 0                        if p <= f      (a free employee is about to be rung)
    ewt = (p - f) × aht / n        otherwise
    ewt = None                     if n = 0       (nobody to wait for: announce no figure)

The second line treats the busy employees' remaining handling times as memoryless with mean
``aht``: together ``n`` employees free up one every ``aht / n`` seconds on average, and the call
needs ``p - f`` of those releases (the first ``f`` calls go to the free employees at once).
Example: position 5, 1 free, 4 staffed, AHT 180 s → (5 - 1) × 180 / 4 = 180 s.

**Overflow.** With ``max_wait_seconds`` set, a live call (not a callback) whose wait reaches it
is reported by :meth:`CallQueue.overflowed` so the caller can send it to the overflow target;
:meth:`CallQueue.next_overflow_at` tells when to look next.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta

from pomelo.acd.agent_state import AgentView
from pomelo.acd.waiting import WaitingCall

__all__ = ["CallQueue", "next_across"]

_Key = tuple[int, datetime, int]


class CallQueue:
    """Waiting calls of one group, ordered by priority then enqueue time."""

    __slots__ = ("_by_key", "_keys", "_seq", "_where", "max_wait_seconds")

    def __init__(self, *, max_wait_seconds: float | None = None) -> None:
        if max_wait_seconds is not None and max_wait_seconds <= 0:
            raise ValueError("max_wait_seconds must be > 0")
        self.max_wait_seconds = max_wait_seconds
        self._keys: list[_Key] = []  # sorted: the service order
        self._by_key: dict[_Key, WaitingCall] = {}
        self._where: dict[str, _Key] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._where

    def __iter__(self) -> Iterator[WaitingCall]:
        """Calls in service order (a snapshot: the queue may be changed while iterating)."""
        return iter([self._by_key[k] for k in self._keys])

    def get(self, call_id: str) -> WaitingCall | None:
        key = self._where.get(call_id)
        return None if key is None else self._by_key[key]

    def enqueue(self, call: WaitingCall) -> int:
        """Add ``call`` at its place; returns its position. A call already queued is refused."""
        if call.call_id in self._where:
            raise ValueError(f"call {call.call_id} is already queued")
        self._seq += 1
        key = (-call.priority, call.enqueued_at, self._seq)
        bisect.insort(self._keys, key)
        self._by_key[key] = call
        self._where[call.call_id] = key
        return self.position(call.call_id)

    def remove(self, call_id: str) -> WaitingCall:
        """Take a call out (answered, abandoned, overflowed); KeyError when not queued."""
        key = self._where.pop(call_id)
        del self._keys[bisect.bisect_left(self._keys, key)]
        return self._by_key.pop(key)

    def discard(self, call_id: str) -> WaitingCall | None:
        return self.remove(call_id) if call_id in self._where else None

    def to_callback(self, call_id: str) -> WaitingCall:
        """The caller hung up asking to be called back: he keeps his place."""
        call = self._by_key[self._where[call_id]]
        call.callback = True
        return call

    def position(self, call_id: str) -> int:
        """1-based place in service order; KeyError when not queued."""
        return bisect.bisect_left(self._keys, self._where[call_id]) + 1

    def head(self) -> WaitingCall | None:
        return self._by_key[self._keys[0]] if self._keys else None

    def expected_wait(
        self, call_id: str, *, aht_seconds: float, free_agents: int, staffed_agents: int
    ) -> float | None:
        """Seconds the call can expect to wait from now (formula in the module docstring)."""
        if aht_seconds < 0 or free_agents < 0 or staffed_agents < 0:
            raise ValueError("expected_wait inputs must be >= 0")
        p = self.position(call_id)
        if p <= free_agents:
            return 0.0
        if staffed_agents == 0:
            return None
        return (p - free_agents) * aht_seconds / staffed_agents

    def next_for(
        self, agent: AgentView, qualifies: Callable[[WaitingCall], bool] | None = None
    ) -> WaitingCall | None:
        """The call to offer ``agent`` now that he is free: the first in order that
        ``qualifies`` (e.g. his skills suffice; no ring already in progress) and that he has not
        refused; a call he refused only when no other one qualifies. Nothing is removed."""
        refused_fallback: WaitingCall | None = None
        for call in self:
            if qualifies is not None and not qualifies(call):
                continue
            if agent.employee_id in call.excluded:
                continue
            if agent.employee_id in call.tried or agent.has_refused(call.call_id):
                refused_fallback = refused_fallback or call
                continue
            return call
        return refused_fallback

    def overflowed(self, now: datetime) -> list[WaitingCall]:
        """Live calls (not callbacks) that have waited ``max_wait_seconds`` or more at ``now``,
        in queue order. They stay queued until removed."""
        limit = self.max_wait_seconds
        if limit is None:
            return []
        return [c for c in self if not c.callback and c.waited(now) >= limit]

    def next_overflow_at(self) -> datetime | None:
        """When the next live call reaches the maximum wait (None: none will)."""
        if self.max_wait_seconds is None:
            return None
        starts = [c.enqueued_at for c in self._by_key.values() if not c.callback]
        if not starts:
            return None
        return min(starts) + timedelta(seconds=self.max_wait_seconds)

    def longest_wait(self, now: datetime) -> float:
        """Seconds the longest-waiting live caller has been waiting (0 when none)."""
        waits = [c.waited(now) for c in self._by_key.values() if not c.callback]
        return max(waits, default=0.0)


def next_across(
    queues: Iterable[tuple[CallQueue, int]],
    agent: AgentView,
    qualifies: Callable[[CallQueue, WaitingCall], bool] | None = None,
) -> tuple[CallQueue, WaitingCall] | None:
    """For an employee in several groups — ``(queue, his penalty in that group)`` pairs — the
    call to offer him: the queues where his penalty is lowest first; among those, the higher
    priority, then the longer wait. A call he refused is taken only when nothing else is."""
    best: tuple[tuple[bool, int, int, datetime], CallQueue, WaitingCall] | None = None
    for queue, penalty in queues:
        call = queue.next_for(agent, _bind(qualifies, queue))
        if call is None:
            continue
        refused = agent.employee_id in call.tried or agent.has_refused(call.call_id)
        rank = (refused, penalty, -call.priority, call.enqueued_at)
        if best is None or rank < best[0]:
            best = (rank, queue, call)
    return None if best is None else (best[1], best[2])


def _bind(
    qualifies: Callable[[CallQueue, WaitingCall], bool] | None, queue: CallQueue
) -> Callable[[WaitingCall], bool] | None:
    if qualifies is None:
        return None
    return lambda call: qualifies(queue, call)
