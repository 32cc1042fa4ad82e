"""Distribution strategies: who is rung next, for how long, and who never is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pomelo.acd.agent_state import Agent, AgentStatus, AgentView
from pomelo.acd.strategies import (
    Distributor,
    GroupConfig,
    Member,
    StickyMemory,
    Strategy,
    effective_requirements,
    next_wave,
    qualifies,
)
from pomelo.acd.waiting import WaitingCall
from pomelo.core.clock import FakeClock

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class StubAgent:
    """A snapshot of an agent, for generated states."""

    employee_id: str
    status: AgentStatus = AgentStatus.AVAILABLE
    accepts_calls: bool = True
    idle_since: datetime | None = T0
    calls_answered_today: int = 0
    refused: frozenset[str] = frozenset()

    def has_refused(self, call_id: str) -> bool:
        return call_id in self.refused


def group(strategy: Strategy, *members: str | Member, **options: float) -> GroupConfig:
    ms = tuple(m if isinstance(m, Member) else Member(m) for m in members)
    return GroupConfig(strategy, ms, **options)  # type: ignore[arg-type]


def team(clock: FakeClock, *ids: str) -> dict[str, Agent]:
    """Logged-in agents, each one second after the previous (so e1 is idle longest)."""
    agents = {}
    for eid in ids:
        agent = Agent(eid, clock.now, wrap_up_seconds=0)
        agent.log_in()
        agents[eid] = agent
        clock.advance(1)
    return agents


def call(call_id: str = "c1", **kwargs: object) -> WaitingCall:
    return WaitingCall(call_id, T0, **kwargs)  # type: ignore[arg-type]


def ids(wave: object) -> tuple[str, ...] | None:
    return None if wave is None else wave.employee_ids  # type: ignore[attr-defined]


def test_ring_all_rings_every_free_employee_and_nobody_else() -> None:
    clock = FakeClock()
    agents = team(clock, "free1", "ringing", "talking", "break", "out", "muted", "free2", "self")
    agents["ringing"].offer("other")
    agents["talking"].dial("other")
    agents["break"].start_break("lunch")
    agents["out"].log_out()
    agents["muted"].set_accepts_calls(False)
    config = group(Strategy.RING_ALL, *agents, "unknown")
    wave = next_wave(config, agents, call(excluded=["self"]), clock.now())
    assert ids(wave) == ("free1", "free2")


def test_a_wave_carries_each_members_ring_timeout_and_lasts_the_longest() -> None:
    clock = FakeClock()
    agents = team(clock, "a", "b", "c")
    config = group(
        Strategy.RING_ALL,
        Member("a", ring_timeout=10),
        Member("b", ring_timeout=45),
        Member("c"),
        ring_timeout=25,
    )
    wave = next_wave(config, agents, call(), clock.now())
    assert wave is not None
    assert [o.ring_timeout for o in wave.offers] == [10, 45, 25]
    assert wave.ring_timeout == 45


def test_nobody_free_means_no_wave() -> None:
    clock = FakeClock()
    agents = team(clock, "a")
    agents["a"].start_break("lunch")
    for strategy in Strategy:
        assert next_wave(group(strategy, "a", "b"), agents, call(), clock.now()) is None


def test_sequential_hunts_from_the_top_and_moves_on_after_a_refusal() -> None:
    clock = FakeClock()
    agents = team(clock, "a", "b", "c")
    config = group(Strategy.SEQUENTIAL, "b", "a", "c")
    c1 = call()
    assert ids(next_wave(config, agents, c1, clock.now())) == ("b",)
    agents["b"].offer("c1")
    agents["b"].ring_timeout()
    assert ids(next_wave(config, agents, c1, clock.now())) == ("a",)
    agents["a"].offer("c1")
    agents["a"].reject()
    assert ids(next_wave(config, agents, c1, clock.now())) == ("c",)
    agents["c"].offer("c1")
    agents["c"].ring_timeout()
    # everyone refused: a second round, from the top again
    assert ids(next_wave(config, agents, c1, clock.now())) == ("b",)
    # another call is not affected by refusals of c1
    assert ids(next_wave(config, agents, call("c2"), clock.now())) == ("b",)


def test_the_distributors_own_tried_set_also_demotes() -> None:
    clock = FakeClock()
    agents = team(clock, "a", "b")
    c1 = call()
    c1.tried.add("a")
    assert ids(next_wave(group(Strategy.SEQUENTIAL, "a", "b"), agents, c1, clock.now())) == ("b",)


def test_round_robin_continues_after_the_last_one_offered() -> None:
    clock = FakeClock()
    agents = team(clock, "a", "b", "c")
    rr = Distributor(group(Strategy.ROUND_ROBIN, "a", "b", "c"))
    order = [ids(rr.next_wave(agents, call(f"c{n}"), clock.now())) for n in range(4)]
    assert order == [("a",), ("b",), ("c",), ("a",)]
    agents["b"].dial("x")  # b busy: after a comes c
    assert ids(rr.next_wave(agents, call("c5"), clock.now())) == ("c",)
    agents["c"].dial("y")  # the last one offered is busy: still continue after him
    assert ids(rr.next_wave(agents, call("c6"), clock.now())) == ("a",)


def test_round_robin_starts_at_the_top_when_the_last_one_left_the_group() -> None:
    clock = FakeClock()
    agents = team(clock, "a", "b", "c")
    rr = Distributor(group(Strategy.ROUND_ROBIN, "a", "b", "c"))
    rr.last_offered = "gone"
    assert ids(rr.next_wave(agents, call(), clock.now())) == ("a",)


def test_longest_idle_picks_the_employee_whose_last_call_ended_first() -> None:
    clock = FakeClock()
    agents = team(clock, "a", "b", "c")
    for eid in ("a", "c"):  # a and c take calls; a's ends first
        agents[eid].dial(f"x-{eid}")
    clock.advance(10)
    agents["a"].end_call()
    clock.advance(10)
    agents["c"].end_call()
    config = group(Strategy.LONGEST_IDLE, "a", "b", "c")
    assert ids(next_wave(config, agents, call(), clock.now())) == ("b",)
    agents["b"].dial("x-b")
    assert ids(next_wave(config, agents, call(), clock.now())) == ("a",)


def test_longest_idle_puts_an_employee_with_no_idle_time_first() -> None:
    agents: dict[str, AgentView] = {
        "a": StubAgent("a", idle_since=T0),
        "b": StubAgent("b", idle_since=None),
    }
    config = group(Strategy.LONGEST_IDLE, "a", "b")
    assert ids(next_wave(config, agents, call(), T0)) == ("b",)


def test_fewest_calls_today_then_longest_idle() -> None:
    agents: dict[str, AgentView] = {
        "a": StubAgent("a", calls_answered_today=3, idle_since=T0),
        "b": StubAgent("b", calls_answered_today=1, idle_since=T0 + timedelta(minutes=5)),
        "c": StubAgent("c", calls_answered_today=1, idle_since=T0 + timedelta(minutes=1)),
    }
    config = group(Strategy.FEWEST_CALLS, "a", "b", "c")
    assert ids(next_wave(config, agents, call(), T0)) == ("c",)


def test_fewest_calls_counts_real_answers() -> None:
    clock = FakeClock()
    agents = team(clock, "a", "b")
    agents["a"].offer("x")
    agents["a"].answer()
    agents["a"].end_call()
    config = group(Strategy.FEWEST_CALLS, "a", "b")
    assert ids(next_wave(config, agents, call(), clock.now())) == ("b",)


def skilled(eid: str, penalty: int = 0, **skills: int) -> Member:
    return Member(eid, penalty=penalty, skills=skills)


def test_skills_offers_the_best_matched_qualified_employee() -> None:
    clock = FakeClock()
    agents = team(clock, "novice", "expert", "other", "good")
    config = group(
        Strategy.SKILLS,
        skilled("novice", english=3),
        skilled("expert", english=9, billing=9),
        skilled("other", german=10),
        skilled("good", english=8, billing=6),
    )
    c1 = call(required_skills={"english": 5, "billing": 5})
    assert ids(next_wave(config, agents, c1, clock.now())) == ("expert",)
    agents["expert"].dial("x")
    assert ids(next_wave(config, agents, c1, clock.now())) == ("good",)
    agents["good"].dial("y")
    assert next_wave(config, agents, c1, clock.now()) is None


def test_skill_requirements_relax_as_the_call_waits() -> None:
    clock = FakeClock(T0)
    agents = team(clock, "junior")
    config = group(Strategy.SKILLS, skilled("junior", english=5))
    c1 = call(required_skills={"english": 7})
    assert next_wave(config, agents, c1, T0 + timedelta(seconds=59)) is None
    assert ids(next_wave(config, agents, c1, T0 + timedelta(seconds=60))) == ("junior",)


def test_relaxation_formula_matches_the_documented_example() -> None:
    config = group(Strategy.SKILLS, "a")
    c1 = call(required_skills={"english": 7, "billing": 2})
    assert effective_requirements(config, c1, T0 + timedelta(seconds=95)) == {
        "english": 4,
        "billing": 1,
    }
    assert effective_requirements(config, c1, T0 - timedelta(seconds=5)) == {
        "english": 7,
        "billing": 2,
    }
    frozen = group(Strategy.SKILLS, "a", relax_every_seconds=0)
    assert effective_requirements(frozen, c1, T0 + timedelta(hours=1))["english"] == 7


def test_a_skill_stays_required_unless_the_floor_is_zero() -> None:
    clock = FakeClock(T0)
    agents = team(clock, "plain")
    late = T0 + timedelta(hours=1)
    c1 = call(required_skills={"german": 3})
    kept = group(Strategy.SKILLS, "plain")
    assert next_wave(kept, agents, c1, late) is None
    anyone = group(Strategy.SKILLS, "plain", relax_floor=0)
    assert ids(next_wave(anyone, agents, c1, late)) == ("plain",)
    assert qualifies(Member("plain"), {"german": 0})


def test_skills_are_ignored_by_other_strategies() -> None:
    clock = FakeClock()
    agents = team(clock, "plain")
    c1 = call(required_skills={"german": 9})
    assert ids(next_wave(group(Strategy.SEQUENTIAL, "plain"), agents, c1, clock.now())) == (
        "plain",
    )


def test_lower_penalty_first_higher_only_when_none_free() -> None:
    clock = FakeClock()
    agents = team(clock, "backup", "main1", "main2")
    config = group(
        Strategy.RING_ALL,
        Member("backup", penalty=5),
        Member("main1"),
        Member("main2"),
    )
    assert ids(next_wave(config, agents, call(), clock.now())) == ("main1", "main2")
    agents["main1"].dial("x")
    agents["main2"].start_break("lunch")
    assert ids(next_wave(config, agents, call(), clock.now())) == ("backup",)


def test_penalty_tiers_apply_to_single_pick_strategies() -> None:
    clock = FakeClock()
    agents = team(clock, "backup", "main")  # backup idle longest
    config = group(Strategy.LONGEST_IDLE, Member("backup", penalty=1), Member("main"))
    assert ids(next_wave(config, agents, call(), clock.now())) == ("main",)


def test_a_refusal_outranks_penalties() -> None:
    clock = FakeClock()
    agents = team(clock, "main", "backup")
    config = group(Strategy.SEQUENTIAL, Member("main"), Member("backup", penalty=3))
    agents["main"].offer("c1")
    agents["main"].reject()
    assert ids(next_wave(config, agents, call(), clock.now())) == ("backup",)


def test_ring_all_rings_only_those_who_have_not_refused_while_any_is_free() -> None:
    clock = FakeClock()
    agents = team(clock, "a", "b", "c")
    agents["a"].offer("c1")
    agents["a"].ring_timeout()
    config = group(Strategy.RING_ALL, "a", "b", "c")
    assert ids(next_wave(config, agents, call(), clock.now())) == ("b", "c")
    agents["b"].dial("x")
    agents["c"].dial("y")
    assert ids(next_wave(config, agents, call(), clock.now())) == ("a",)


def test_the_sticky_employee_is_rung_alone_first_when_free() -> None:
    clock = FakeClock()
    agents = team(clock, "a", "b", "c")
    config = group(Strategy.RING_ALL, "a", "b", Member("c", ring_timeout=12))
    c1 = call(preferred=["c"])
    wave = next_wave(config, agents, c1, clock.now())
    assert wave is not None
    assert (wave.employee_ids, wave.preferred, wave.ring_timeout) == (("c",), True, 12)
    agents["c"].offer("c1")
    agents["c"].ring_timeout()
    wave = next_wave(config, agents, c1, clock.now())
    assert wave is not None
    assert (wave.employee_ids, wave.preferred) == (("a", "b"), False)


def test_a_busy_preferred_employee_falls_back_to_the_normal_order() -> None:
    clock = FakeClock()
    agents = team(clock, "a", "b")
    agents["b"].dial("x")
    config = group(Strategy.SEQUENTIAL, "a", "b")
    assert ids(next_wave(config, agents, call(preferred=["b"]), clock.now())) == ("a",)


def test_the_responsible_employee_comes_before_the_sticky_one_even_outside_the_group() -> None:
    clock = FakeClock()
    agents = team(clock, "a", "manager")
    config = group(Strategy.SEQUENTIAL, "a", ring_timeout=17)
    wave = next_wave(config, agents, call(preferred=["manager", "a"]), clock.now())
    assert wave is not None
    assert (wave.employee_ids, wave.ring_timeout) == (("manager",), 17)
    excluded = call(preferred=["manager", "a"], excluded=["manager"])
    assert ids(next_wave(config, agents, excluded, clock.now())) == ("a",)


def test_a_preferred_offer_does_not_move_the_round_robin() -> None:
    clock = FakeClock()
    agents = team(clock, "a", "b", "c")
    rr = Distributor(group(Strategy.ROUND_ROBIN, "a", "b", "c"))
    assert ids(rr.next_wave(agents, call("c1"), clock.now())) == ("a",)
    assert ids(rr.next_wave(agents, call("c2", preferred=["c"]), clock.now())) == ("c",)
    assert ids(rr.next_wave(agents, call("c3"), clock.now())) == ("b",)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Member("a", penalty=-1), "penalty"),
        (lambda: Member("a", skills={"x": 11}), "1-10"),
        (lambda: Member("a", skills={"x": 0}), "1-10"),
        (lambda: Member("a", ring_timeout=0), "ring_timeout"),
        (lambda: GroupConfig(Strategy.RING_ALL, (Member("a"), Member("a"))), "twice"),
        (lambda: GroupConfig(Strategy.RING_ALL, (), ring_timeout=0), "ring_timeout"),
        (lambda: GroupConfig(Strategy.SKILLS, (), relax_step=0), "relax_step"),
        (lambda: GroupConfig(Strategy.SKILLS, (), relax_floor=11), "relax_floor"),
        (lambda: GroupConfig(Strategy.SKILLS, (), relax_every_seconds=-1), "relax_every"),
        (lambda: WaitingCall("c", T0, required_skills={"x": 0}), "1-10"),
        (lambda: WaitingCall("c", datetime(2026, 1, 1)), "timezone"),  # noqa: DTZ001
    ],
)
def test_bad_configuration_is_refused(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_sticky_memory_remembers_the_last_handler_within_the_window() -> None:
    sticky = StickyMemory()
    sticky.remember("+7901", "a", T0)
    sticky.remember("+7901", "b", T0 + timedelta(minutes=10))
    assert sticky.last_handler("+7901", T0 + timedelta(minutes=70)) == "b"
    assert sticky.last_handler("+7901", T0 + timedelta(minutes=71)) is None
    assert sticky.last_handler("+7901", T0 + timedelta(minutes=20), window_seconds=300) is None
    assert sticky.last_handler("+7999", T0) is None


def test_sticky_memory_forgets_clients_older_than_it_retains() -> None:
    sticky = StickyMemory(retain_seconds=60)
    for n in range(100):
        sticky.remember(f"client{n}", "a", T0 + timedelta(seconds=n))
    assert len(sticky) == 61
    assert sticky.last_handler("client99", T0 + timedelta(seconds=99)) == "a"


# --- properties over generated group states ---------------------------------------------

STATUSES = list(AgentStatus)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[GroupConfig, dict[str, AgentView], WaitingCall]:
    n = draw(st.integers(min_value=1, max_value=8))
    eids = [f"e{i}" for i in range(n)]
    members = [
        Member(
            eid,
            penalty=draw(st.integers(0, 2)),
            skills=draw(st.dictionaries(st.sampled_from(["en", "de"]), st.integers(1, 10))),
        )
        for eid in eids
    ]
    agents: dict[str, AgentView] = {}
    for eid in eids:
        if draw(st.booleans()) or len(agents) == 0:
            agents[eid] = StubAgent(
                eid,
                status=draw(st.sampled_from(STATUSES)),
                accepts_calls=draw(st.booleans()),
                idle_since=draw(st.none() | st.just(T0)),
                calls_answered_today=draw(st.integers(0, 5)),
                refused=frozenset(["c1"]) if draw(st.booleans()) else frozenset(),
            )
    c1 = WaitingCall(
        "c1",
        T0,
        required_skills=draw(st.dictionaries(st.sampled_from(["en", "de"]), st.integers(1, 10))),
        preferred=draw(st.lists(st.sampled_from(eids), max_size=2)),
        excluded=draw(st.lists(st.sampled_from(eids), max_size=2)),
    )
    config = GroupConfig(draw(st.sampled_from(list(Strategy))), tuple(members))
    return config, agents, c1


def may_ring(agents: Mapping[str, AgentView], c: WaitingCall, eid: str) -> bool:
    a = agents.get(eid)
    return (
        a is not None
        and a.status is AgentStatus.AVAILABLE
        and a.accepts_calls
        and eid not in c.excluded
    )


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.integers(min_value=0, max_value=600))
def test_no_strategy_ever_offers_a_call_to_someone_who_cannot_take_it(
    scenario: tuple[GroupConfig, dict[str, AgentView], WaitingCall], waited: int
) -> None:
    config, agents, c1 = scenario
    wave = next_wave(config, agents, c1, T0 + timedelta(seconds=waited))
    if wave is None:
        return
    offered: Sequence[str] = wave.employee_ids
    assert offered
    assert len(set(offered)) == len(offered)
    assert all(may_ring(agents, c1, eid) for eid in offered)
    if config.strategy is not Strategy.RING_ALL or wave.preferred:
        assert len(offered) == 1


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_ring_all_rings_exactly_the_best_tier_of_free_members(
    scenario: tuple[GroupConfig, dict[str, AgentView], WaitingCall],
) -> None:
    config, agents, c1 = scenario
    config = GroupConfig(Strategy.RING_ALL, config.members)
    c1.preferred = ()
    free = [m for m in config.members if may_ring(agents, c1, m.employee_id)]
    fresh = [m for m in free if not agents[m.employee_id].has_refused("c1")]
    pool = fresh or free
    wave = next_wave(config, agents, c1, T0)
    if not pool:
        assert wave is None
        return
    lowest = min(m.penalty for m in pool)
    assert ids(wave) == tuple(m.employee_id for m in pool if m.penalty == lowest)
