"""The employee (agent) state machine: transitions, wrap-up, refusals, counters of the day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pomelo.acd.agent_state import (
    REFUSALS_KEPT,
    TRANSITIONS,
    Agent,
    AgentEvent,
    AgentStatus,
    IllegalAgentTransition,
)
from pomelo.core.clock import FakeClock

S = AgentStatus


def make(
    clock: FakeClock,
    *,
    wrap_up_seconds: float = 10.0,
    tz: tzinfo = UTC,
    accepts_calls: bool = True,
) -> Agent:
    agent = Agent(
        "e1", clock.now, wrap_up_seconds=wrap_up_seconds, tz=tz, accepts_calls=accepts_calls
    )
    agent.log_in()
    return agent


def in_state(status: AgentStatus, clock: FakeClock) -> Agent:
    """A fresh agent driven into ``status`` by legal events."""
    agent = Agent("e1", clock.now)
    if status is S.LOGGED_OUT:
        return agent
    agent.log_in()
    if status is S.RINGING:
        agent.offer("c1")
    elif status is S.TALKING:
        agent.offer("c1")
        agent.answer()
    elif status is S.WRAP_UP:
        agent.dial("c1")
        agent.end_call()
    elif status is S.BREAK:
        agent.start_break("lunch")
    assert agent.status is status
    return agent


EVENT_CALLS = {
    AgentEvent.LOGGED_IN: lambda a: a.log_in(),
    AgentEvent.LOGGED_OUT: lambda a: a.log_out(),
    AgentEvent.OFFERED: lambda a: a.offer("c9"),
    AgentEvent.ANSWERED: lambda a: a.answer(),
    AgentEvent.REJECTED: lambda a: a.reject(),
    AgentEvent.RING_TIMED_OUT: lambda a: a.ring_timeout(),
    AgentEvent.RING_CANCELLED: lambda a: a.cancel_ring(),
    AgentEvent.DIALED: lambda a: a.dial("c9"),
    AgentEvent.CALL_ENDED: lambda a: a.end_call(),
    AgentEvent.WRAP_UP_FINISHED: lambda a: a.finish_wrap_up(),
    AgentEvent.BREAK_STARTED: lambda a: a.start_break("coffee"),
    AgentEvent.BREAK_ENDED: lambda a: a.end_break(),
}


def test_a_new_employee_is_logged_out_and_cannot_take_calls() -> None:
    agent = Agent("e1", FakeClock().now)
    assert agent.status is S.LOGGED_OUT
    assert not agent.can_take_call
    assert agent.idle_since is None


def test_a_call_from_offer_to_wrap_up_counts_talk_time_and_answers() -> None:
    clock = FakeClock()
    agent = make(clock)
    agent.offer("c1")
    assert (agent.status, agent.call_id) == (S.RINGING, "c1")
    clock.advance(4)
    agent.answer()
    clock.advance(65)
    agent.end_call()
    assert agent.status is S.WRAP_UP
    assert agent.call_id is None
    assert agent.last_call_ended_at == clock.now()
    stats = agent.stats()
    assert (stats.calls_offered, stats.calls_answered, stats.talk_seconds) == (1, 1, 65.0)
    assert agent.calls_answered_today == 1


def test_wrap_up_ends_by_itself_after_ten_seconds_dated_when_it_elapsed() -> None:
    clock = FakeClock()
    agent = make(clock)
    agent.dial("c1")
    agent.end_call()
    ended = clock.now()
    assert agent.wrap_up_ends_at == ended + timedelta(seconds=10)
    clock.advance(9.9)
    assert agent.status is S.WRAP_UP
    assert not agent.can_take_call
    clock.advance(30)
    assert agent.can_take_call  # available again without anyone pressing "ready"
    assert agent.state_since == ended + timedelta(seconds=10)
    assert agent.time_in_state() == pytest.approx(29.9)
    assert agent.wrap_up_ends_at is None


def test_an_event_after_an_elapsed_wrap_up_applies_to_the_available_state() -> None:
    clock = FakeClock()
    agent = make(clock)
    agent.dial("c1")
    agent.end_call()
    clock.advance(11)
    agent.offer("c2")  # no explicit "ready" needed
    assert agent.status is S.RINGING


def test_wrap_up_can_be_finished_early_or_skipped() -> None:
    clock = FakeClock()
    agent = make(clock)
    agent.dial("c1")
    agent.end_call()
    agent.finish_wrap_up()
    assert agent.status is S.AVAILABLE

    quick = make(clock, wrap_up_seconds=0)
    quick.dial("c2")
    quick.end_call()
    assert quick.status is S.AVAILABLE
    assert quick.entered_at(S.WRAP_UP) == clock.now()


def test_an_illegal_event_names_the_state_and_the_event() -> None:
    agent = make(FakeClock())
    with pytest.raises(IllegalAgentTransition, match=r"'answered'.*'available'") as info:
        agent.answer()
    assert (info.value.state, info.value.event) == (S.AVAILABLE, AgentEvent.ANSWERED)
    assert info.value.error_id == "agent-state-conflict"


@pytest.mark.parametrize(
    ("status", "event"),
    [(s, e) for s in AgentStatus for e in AgentEvent if (s, e) not in TRANSITIONS],
    ids=lambda v: v.value,
)
def test_every_event_outside_the_table_is_refused_and_changes_nothing(
    status: AgentStatus, event: AgentEvent
) -> None:
    clock = FakeClock()
    agent = in_state(status, clock)
    before = (agent.status, agent.state_since, agent.call_id, agent.stats())
    with pytest.raises(IllegalAgentTransition):
        EVENT_CALLS[event](agent)
    assert (agent.status, agent.state_since, agent.call_id, agent.stats()) == before


def test_an_employee_cannot_be_offered_a_second_call() -> None:
    agent = make(FakeClock())
    agent.offer("c1")
    with pytest.raises(IllegalAgentTransition):
        agent.offer("c2")
    agent.answer()
    with pytest.raises(IllegalAgentTransition):
        agent.offer("c2")
    assert agent.call_id == "c1"


def test_an_employee_who_does_not_accept_calls_is_never_offered_one() -> None:
    agent = make(FakeClock(), accepts_calls=False)
    assert agent.status is S.AVAILABLE
    assert not agent.can_take_call
    with pytest.raises(IllegalAgentTransition, match="does not accept calls"):
        agent.offer("c1")
    agent.set_accepts_calls(True)
    assert agent.can_take_call
    agent.dial("c2")  # his own calls are always allowed
    assert agent.status is S.TALKING


def test_rejected_and_unanswered_rings_are_remembered_per_call_cancelled_ones_not() -> None:
    clock = FakeClock()
    agent = make(clock)
    agent.offer("c1")
    agent.reject()
    agent.offer("c2")
    clock.advance(20)
    agent.ring_timeout()
    agent.offer("c3")
    agent.cancel_ring()
    assert agent.has_refused("c1")
    assert agent.has_refused("c2")
    assert not agent.has_refused("c3")
    assert agent.last_refused_at == clock.now()
    stats = agent.stats()
    assert (stats.rejected_rings, stats.missed_rings, stats.calls_offered) == (1, 1, 3)
    assert agent.status is S.AVAILABLE
    assert agent.call_id is None


def test_refusal_memory_is_bounded() -> None:
    agent = make(FakeClock())
    for n in range(REFUSALS_KEPT + 1):
        agent.offer(f"c{n}")
        agent.reject()
    assert not agent.has_refused("c0")
    assert agent.has_refused("c1")
    assert agent.has_refused(f"c{REFUSALS_KEPT}")


def test_counters_restart_at_midnight_in_the_tenant_time_zone() -> None:
    moscow = ZoneInfo("Europe/Moscow")  # UTC+3
    clock = FakeClock(datetime(2026, 1, 5, 20, 50, tzinfo=UTC))  # 23:50 in Moscow
    agent = make(clock, tz=moscow)
    agent.offer("c1")
    agent.answer()
    clock.advance(300)
    agent.end_call()
    assert agent.calls_answered_today == 1
    clock.advance(600)  # 00:05 next day in Moscow, still 5 January in UTC
    assert agent.calls_answered_today == 0
    assert agent.stats().day.isoformat() == "2026-01-06"
    assert agent.stats().talk_seconds == 0


def test_a_call_across_midnight_counts_its_talk_time_for_the_day_it_ended() -> None:
    clock = FakeClock(datetime(2026, 1, 5, 23, 59, tzinfo=UTC))
    agent = make(clock)
    agent.dial("c1")
    clock.advance(120)
    agent.end_call()
    assert agent.stats().talk_seconds == 120
    assert agent.stats().calls_dialed == 0  # the dial happened yesterday


def test_idle_since_follows_log_in_call_end_and_break_end_not_refusals() -> None:
    clock = FakeClock()
    agent = make(clock)
    logged_in = clock.now()
    assert agent.idle_since == logged_in
    clock.advance(30)
    agent.offer("c1")
    agent.ring_timeout()
    assert agent.idle_since == logged_in
    clock.advance(30)
    agent.dial("c2")
    clock.advance(30)
    agent.end_call()
    assert agent.idle_since == clock.now()
    clock.advance(5)
    agent.start_break("lunch")
    clock.advance(600)
    agent.end_break()
    assert agent.idle_since == clock.now()


def test_breaks_carry_a_reason_that_can_change() -> None:
    clock = FakeClock()
    agent = make(clock)
    with pytest.raises(ValueError, match="reason"):
        agent.start_break("  ")
    agent.start_break("lunch")
    assert (agent.status, agent.break_reason) == (S.BREAK, "lunch")
    agent.start_break("training")
    assert agent.break_reason == "training"
    agent.log_out()
    assert agent.status is S.LOGGED_OUT
    assert agent.stats().calls_offered == 0
    assert not agent.break_reason


def test_a_break_can_start_from_wrap_up_but_not_mid_call() -> None:
    agent = make(FakeClock())
    agent.dial("c1")
    with pytest.raises(IllegalAgentTransition):
        agent.start_break("lunch")
    agent.end_call()
    agent.start_break("lunch")
    assert agent.status is S.BREAK
    assert agent.wrap_up_ends_at is None


def test_time_in_state_and_entry_times() -> None:
    clock = FakeClock()
    agent = make(clock)
    start = clock.now()
    clock.advance(42)
    assert agent.time_in_state() == 42
    assert agent.entered_at(S.AVAILABLE) == start
    assert agent.entered_at(S.TALKING) is None


def test_bad_construction_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Agent("e1", lambda: datetime(2026, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="wrap_up_seconds"):
        Agent("e1", FakeClock().now, wrap_up_seconds=-1)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(list(AgentEvent)), st.floats(min_value=0, max_value=30)),
        max_size=60,
    )
)
def test_random_event_sequences_keep_the_agent_consistent(
    steps: list[tuple[AgentEvent, float]],
) -> None:
    clock = FakeClock()
    agent = Agent("e1", clock.now)
    expected = S.LOGGED_OUT
    for event, pause in steps:
        clock.advance(pause)
        if expected is S.WRAP_UP and clock.now() >= (agent.wrap_up_ends_at or clock.now()):
            expected = S.AVAILABLE
        before = agent.stats()
        target = TRANSITIONS.get((expected, event))
        if target is None:
            with pytest.raises(IllegalAgentTransition):
                EVENT_CALLS[event](agent)
            assert agent.stats() == before
        else:
            EVENT_CALLS[event](agent)
            expected = target
        assert agent.status is expected
        assert (agent.call_id is not None) == (expected in (S.RINGING, S.TALKING))
        stats = agent.stats()
        assert stats.calls_answered <= stats.calls_offered
        assert stats.missed_rings + stats.rejected_rings <= stats.calls_offered
        assert stats.talk_seconds >= 0
