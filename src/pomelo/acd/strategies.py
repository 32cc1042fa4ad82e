"""Distribution strategies: which employees of a group to ring next for a waiting call.

:func:`next_wave` answers one question — given the group's configuration, its members' states
and one waiting call, whom to ring now and for how long — and is pure: the same inputs give the
same wave. :class:`Distributor` wraps it with the one piece of memory a strategy needs (the
round-robin position). ``None`` means nobody can take the call now: it keeps waiting.

**Who may be rung.** Only an employee who is ``available``, accepts calls and is not in the
call's ``excluded`` set. Members absent from the ``agents`` mapping count as logged out.

**Order of decisions** for one wave:

1. *Preferred employees* (``call.preferred``: the known client's responsible employee, then
   his last handler within the sticky window — see :class:`StickyMemory`): the first one who
   may be rung and has not refused this call is rung alone, with his member ring timeout (the
   group's when he is not a member). Penalties and the strategy do not apply to him.
2. *Skills* (strategy ``skills`` only): members lacking a required level are left out; the
   requirement relaxes as the call waits (formula below).
3. *Refusals*: members who have not refused this call (``call.tried`` or the agent's own
   memory, :meth:`AgentView.has_refused`) come first; those who did are considered only when
   no one else may be rung — so a refused or unanswered ring never re-rings the same employee
   first.
4. *Penalties*: of what is left, only the members with the lowest penalty form the tier; a
   member with a higher penalty is rung only when no lower-penalty member may be.
5. *The strategy* picks within the tier:

   - ``ring_all``: everyone in the tier at once;
   - ``sequential`` (hunt): the first in member order;
   - ``round_robin``: the first in member order *after the last employee this group offered a
     call to* (cyclically), so the load rotates instead of always starting at the top;
   - ``longest_idle``: the earliest :attr:`AgentView.idle_since` (never idle-timed first);
   - ``fewest_calls``: the fewest calls answered today, then longest idle;
   - ``skills``: the highest skill score, then longest idle, where ``score = Σ level(s)`` of
     the member over the call's required skills (the best-matched employee takes the call).

   Remaining ties go to member order.

**Skill relaxation.** A call requiring level ``L`` of a skill, having waited ``w`` seconds,
requires::

    effective(L) = max(floor, L - step × ⌊w / every⌋)      (no relaxation when every = 0)

with the group's ``relax_every_seconds`` (default 30), ``relax_step`` (default 1) and
``relax_floor`` (default 1: the skill itself stays required; 0 lets anyone take the call in
the end). Example: level 7, 95 s waited, defaults → ``max(1, 7 - 1×3) = 4``. A member qualifies
when his level of every required skill is at least the effective level (a missing skill is
level 0).

**Call priority** is not a per-wave matter: the queue (:mod:`pomelo.acd.queue`) serves higher
priorities first, so the call offered when an employee frees up is already the right one.

**Ring timeout** of an offer is the member's own ``ring_timeout`` when set, else the group's
(default 20 s); a wave ends when its longest ring does (:attr:`Wave.ring_timeout`).
"""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pomelo.acd.agent_state import AgentStatus, AgentView
from pomelo.acd.waiting import WaitingCall

__all__ = [
    "DEFAULT_RING_TIMEOUT",
    "DEFAULT_STICKY_WINDOW",
    "Distributor",
    "GroupConfig",
    "Member",
    "Offer",
    "StickyMemory",
    "Strategy",
    "Wave",
    "effective_requirements",
    "next_wave",
    "qualifies",
]

DEFAULT_RING_TIMEOUT = 20.0
DEFAULT_STICKY_WINDOW = 3600.0
"""SPEC §1: a repeat contact within one hour goes to the same employee first."""


class Strategy(enum.Enum):
    RING_ALL = "ring_all"
    SEQUENTIAL = "sequential"
    ROUND_ROBIN = "round_robin"
    LONGEST_IDLE = "longest_idle"
    FEWEST_CALLS = "fewest_calls"
    SKILLS = "skills"


@dataclass(frozen=True, slots=True)
class Member:
    """An employee's membership of one group: penalties and skills are per group."""

    employee_id: str
    penalty: int = 0
    skills: Mapping[str, int] = field(default_factory=dict)
    ring_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.penalty < 0:
            raise ValueError(f"member {self.employee_id}: penalty must be >= 0")
        if self.ring_timeout is not None and self.ring_timeout <= 0:
            raise ValueError(f"member {self.employee_id}: ring_timeout must be > 0")
        for skill, level in self.skills.items():
            if not 1 <= level <= 10:
                raise ValueError(
                    f"member {self.employee_id}: level of skill {skill!r} must be 1-10"
                )


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """How one group distributes; ``members`` in their configured (hunt) order."""

    strategy: Strategy
    members: tuple[Member, ...]
    ring_timeout: float = DEFAULT_RING_TIMEOUT
    relax_every_seconds: float = 30.0
    relax_step: int = 1
    relax_floor: int = 1
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.ring_timeout <= 0:
            raise ValueError("ring_timeout must be > 0")
        if self.relax_every_seconds < 0:
            raise ValueError("relax_every_seconds must be >= 0")
        if self.relax_step < 1:
            raise ValueError("relax_step must be >= 1")
        if not 0 <= self.relax_floor <= 10:
            raise ValueError("relax_floor must be 0-10")
        index = {m.employee_id: i for i, m in enumerate(self.members)}
        if len(index) != len(self.members):
            raise ValueError("an employee is listed twice in the group")
        object.__setattr__(self, "_index", index)

    def member(self, employee_id: str) -> Member | None:
        i = self._index.get(employee_id)
        return None if i is None else self.members[i]

    def position_of(self, employee_id: str | None) -> int:
        """Index in member order; -1 for None or a non-member."""
        if employee_id is None:
            return -1
        return self._index.get(employee_id, -1)

    def ring_timeout_of(self, employee_id: str) -> float:
        member = self.member(employee_id)
        if member is None or member.ring_timeout is None:
            return self.ring_timeout
        return member.ring_timeout


@dataclass(frozen=True, slots=True)
class Offer:
    employee_id: str
    ring_timeout: float


@dataclass(frozen=True, slots=True)
class Wave:
    """Employees to ring at once for one call; ``preferred`` when it is a sticky or
    responsible-employee offer rather than the group's order."""

    offers: tuple[Offer, ...]
    preferred: bool = False

    @property
    def employee_ids(self) -> tuple[str, ...]:
        return tuple(o.employee_id for o in self.offers)

    @property
    def ring_timeout(self) -> float:
        return max(o.ring_timeout for o in self.offers)


def effective_requirements(config: GroupConfig, call: WaitingCall, now: datetime) -> dict[str, int]:
    """The skill levels the call requires after ``now - enqueued_at`` of relaxation."""
    if config.relax_every_seconds == 0:
        steps = 0
    else:
        steps = math.floor(call.waited(now) / config.relax_every_seconds)
    drop = steps * config.relax_step
    floor = config.relax_floor
    return {skill: max(floor, level - drop) for skill, level in call.required_skills.items()}


def qualifies(member: Member, requirements: Mapping[str, int]) -> bool:
    return all(member.skills.get(s, 0) >= level for s, level in requirements.items())


def _may_ring(employee_id: str, agents: Mapping[str, AgentView], call: WaitingCall) -> bool:
    agent = agents.get(employee_id)
    return (
        agent is not None
        and employee_id not in call.excluded
        and agent.accepts_calls
        and agent.status is AgentStatus.AVAILABLE
    )


def _refused(employee_id: str, agent: AgentView, call: WaitingCall) -> bool:
    return employee_id in call.tried or agent.has_refused(call.call_id)


def _idle_key(agent: AgentView) -> float:
    idle = agent.idle_since
    return -math.inf if idle is None else idle.timestamp()


def next_wave(
    config: GroupConfig,
    agents: Mapping[str, AgentView],
    call: WaitingCall,
    now: datetime,
    *,
    last_offered: str | None = None,
) -> Wave | None:
    """The next employees to ring for ``call`` (see the module docstring), or None."""
    for eid in call.preferred:
        if _may_ring(eid, agents, call) and not _refused(eid, agents[eid], call):
            return Wave((Offer(eid, config.ring_timeout_of(eid)),), preferred=True)

    pool = [(i, m) for i, m in enumerate(config.members) if _may_ring(m.employee_id, agents, call)]
    needed: Mapping[str, int] = {}
    if config.strategy is Strategy.SKILLS and call.required_skills:
        needed = effective_requirements(config, call, now)
        pool = [(i, m) for i, m in pool if qualifies(m, needed)]
    fresh = [(i, m) for i, m in pool if not _refused(m.employee_id, agents[m.employee_id], call)]
    pool = fresh or pool
    if not pool:
        return None
    lowest = min(m.penalty for _, m in pool)
    tier = [(i, m) for i, m in pool if m.penalty == lowest]
    chosen = _pick(config, tier, agents, last_offered, needed)
    return Wave(tuple(Offer(m.employee_id, config.ring_timeout_of(m.employee_id)) for m in chosen))


def _pick(
    config: GroupConfig,
    tier: Sequence[tuple[int, Member]],
    agents: Mapping[str, AgentView],
    last_offered: str | None,
    needed: Mapping[str, int],
) -> list[Member]:
    strategy = config.strategy
    if strategy is Strategy.RING_ALL:
        return [m for _, m in tier]
    if strategy is Strategy.SEQUENTIAL:
        return [tier[0][1]]
    if strategy is Strategy.ROUND_ROBIN:
        last = config.position_of(last_offered)
        n = len(config.members)
        return [min(tier, key=lambda im: (im[0] - last - 1) % n)[1]]
    if strategy is Strategy.LONGEST_IDLE:
        return [min(tier, key=lambda im: (_idle_key(agents[im[1].employee_id]), im[0]))[1]]
    if strategy is Strategy.FEWEST_CALLS:

        def by_calls(im: tuple[int, Member]) -> tuple[int, float, int]:
            agent = agents[im[1].employee_id]
            return (agent.calls_answered_today, _idle_key(agent), im[0])

        return [min(tier, key=by_calls)[1]]

    def by_skill(im: tuple[int, Member]) -> tuple[int, float, int]:
        score = sum(im[1].skills.get(s, 0) for s in needed)
        return (-score, _idle_key(agents[im[1].employee_id]), im[0])

    return [min(tier, key=by_skill)[1]]


class Distributor:
    """One group's strategy with its round-robin memory (``last_offered``)."""

    __slots__ = ("config", "last_offered")

    def __init__(self, config: GroupConfig) -> None:
        self.config = config
        self.last_offered: str | None = None

    def next_wave(
        self, agents: Mapping[str, AgentView], call: WaitingCall, now: datetime
    ) -> Wave | None:
        """:func:`next_wave`, remembering the last employee the group's order offered a call
        to (preferred offers are outside the rotation and do not move it)."""
        wave = next_wave(self.config, agents, call, now, last_offered=self.last_offered)
        if wave is not None and not wave.preferred:
            self.last_offered = wave.offers[-1].employee_id
        return wave


class StickyMemory:
    """Who last handled each client, for sticky routing; keyed by a client key (the caller's
    number today, the client card's id once channels arrive).

    Remember the employee when a conversation with the client *ends*; a later contact is
    sticky while ``now - ended_at <= window``. Entries older than ``retain_seconds`` (the
    longest window in use) are dropped as new ones arrive, so memory stays bounded by the
    number of clients served within that time.
    """

    __slots__ = ("_last", "retain_seconds")

    def __init__(self, retain_seconds: float = DEFAULT_STICKY_WINDOW) -> None:
        if retain_seconds <= 0:
            raise ValueError("retain_seconds must be > 0")
        self.retain_seconds = retain_seconds
        self._last: OrderedDict[str, tuple[str, datetime]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def remember(self, client_key: str, employee_id: str, ended_at: datetime) -> None:
        self._last[client_key] = (employee_id, ended_at)
        self._last.move_to_end(client_key)
        while self._last:
            _, (_, oldest) = next(iter(self._last.items()))
            if (ended_at - oldest).total_seconds() <= self.retain_seconds:
                break
            self._last.popitem(last=False)

    def last_handler(
        self, client_key: str, now: datetime, window_seconds: float | None = None
    ) -> str | None:
        """The employee who last talked to the client within the window, else None."""
        window = self.retain_seconds if window_seconds is None else window_seconds
        entry = self._last.get(client_key)
        if entry is None:
            return None
        employee_id, ended_at = entry
        return employee_id if (now - ended_at).total_seconds() <= window else None
