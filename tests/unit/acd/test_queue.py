"""The per-group queue: order, positions, callbacks keeping their place, expected wait,
overflow, and the call a freed employee gets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pomelo.acd.agent_state import AgentStatus
from pomelo.acd.queue import CallQueue, next_across
from pomelo.acd.waiting import WaitingCall

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def waiting(call_id: str, seconds: float = 0, priority: int = 0) -> WaitingCall:
    return WaitingCall(call_id, at(seconds), priority=priority)


@dataclass(frozen=True)
class Free:
    employee_id: str
    refused: frozenset[str] = frozenset()
    status: AgentStatus = AgentStatus.AVAILABLE
    accepts_calls: bool = True
    idle_since: datetime | None = None
    calls_answered_today: int = 0

    def has_refused(self, call_id: str) -> bool:
        return call_id in self.refused


def order(queue: CallQueue) -> list[str]:
    return [c.call_id for c in queue]


def test_higher_priority_first_then_longest_waiting() -> None:
    q = CallQueue()
    assert q.enqueue(waiting("old", 0)) == 1
    assert q.enqueue(waiting("new", 10)) == 2
    assert q.enqueue(waiting("vip", 20, priority=5)) == 1
    assert q.enqueue(waiting("older", -5)) == 2  # came back into the queue with his old time
    assert order(q) == ["vip", "older", "old", "new"]
    assert [q.position(c) for c in ("vip", "older", "old", "new")] == [1, 2, 3, 4]
    head = q.head()
    assert head is not None
    assert head.call_id == "vip"


def test_equal_times_keep_arrival_order() -> None:
    q = CallQueue()
    for name in ("first", "second", "third"):
        q.enqueue(waiting(name, 0))
    assert order(q) == ["first", "second", "third"]


def test_leaving_the_queue_moves_everyone_behind_up() -> None:
    q = CallQueue()
    for n in range(4):
        q.enqueue(waiting(f"c{n}", n))
    assert q.remove("c1").call_id == "c1"
    assert q.position("c3") == 3
    assert q.discard("c1") is None
    assert "c1" not in q
    assert len(q) == 3
    with pytest.raises(KeyError):
        q.remove("c1")
    with pytest.raises(KeyError):
        q.position("c1")


def test_a_call_cannot_be_queued_twice() -> None:
    q = CallQueue()
    q.enqueue(waiting("c1"))
    with pytest.raises(ValueError, match="already queued"):
        q.enqueue(waiting("c1", 5))


def test_an_empty_queue() -> None:
    q = CallQueue(max_wait_seconds=10)
    assert q.head() is None
    assert q.next_for(Free("a")) is None
    assert q.overflowed(at(100)) == []
    assert q.next_overflow_at() is None
    assert q.longest_wait(at(100)) == 0


def test_a_callback_keeps_its_place_and_is_served_in_turn() -> None:
    q = CallQueue()
    q.enqueue(waiting("before", 0))
    q.enqueue(waiting("asker", 10))
    q.enqueue(waiting("after", 20))
    callback = q.to_callback("asker")
    assert callback.callback
    assert callback.enqueued_at == at(10)
    assert order(q) == ["before", "asker", "after"]
    q.remove("before")
    head = q.head()
    assert head is not None
    assert (head.call_id, head.callback) == ("asker", True)


def test_callbacks_do_not_overflow_and_do_not_count_as_waiting_on_the_line() -> None:
    q = CallQueue(max_wait_seconds=60)
    q.enqueue(waiting("cb", 0))
    q.enqueue(waiting("live", 30))
    q.to_callback("cb")
    assert q.overflowed(at(89)) == []
    assert [c.call_id for c in q.overflowed(at(90))] == ["live"]
    assert q.next_overflow_at() == at(90)
    assert q.longest_wait(at(100)) == 70
    assert "live" in q  # reported, not removed


def test_overflow_reports_calls_in_queue_order() -> None:
    q = CallQueue(max_wait_seconds=30)
    q.enqueue(waiting("a", 0))
    q.enqueue(waiting("b", 5, priority=1))
    q.enqueue(waiting("c", 40))
    assert [c.call_id for c in q.overflowed(at(35))] == ["b", "a"]
    assert q.next_overflow_at() == at(30)
    assert CallQueue().overflowed(at(10_000)) == []
    with pytest.raises(ValueError, match="max_wait"):
        CallQueue(max_wait_seconds=0)


def test_expected_wait_matches_the_documented_example() -> None:
    q = CallQueue()
    for n in range(5):
        q.enqueue(waiting(f"c{n}", n))
    assert q.expected_wait("c4", aht_seconds=180, free_agents=1, staffed_agents=4) == 180
    assert q.expected_wait("c0", aht_seconds=180, free_agents=1, staffed_agents=4) == 0
    assert q.expected_wait("c1", aht_seconds=180, free_agents=0, staffed_agents=2) == 180
    assert q.expected_wait("c1", aht_seconds=180, free_agents=0, staffed_agents=0) is None
    with pytest.raises(ValueError, match=">= 0"):
        q.expected_wait("c1", aht_seconds=-1, free_agents=0, staffed_agents=1)


def test_expected_wait_grows_with_position() -> None:
    q = CallQueue()
    for n in range(6):
        q.enqueue(waiting(f"c{n}", n))
    waits = [
        q.expected_wait(f"c{n}", aht_seconds=120, free_agents=0, staffed_agents=3) or 0.0
        for n in range(6)
    ]
    assert waits == sorted(waits)
    assert waits[0] == 40


def test_a_freed_employee_gets_the_first_call_he_qualifies_for() -> None:
    q = CallQueue()
    q.enqueue(WaitingCall("german", at(0), required_skills={"de": 5}))
    q.enqueue(waiting("plain", 5))
    got = q.next_for(Free("a"), lambda c: not c.required_skills)
    assert got is not None
    assert got.call_id == "plain"
    assert len(q) == 2  # nothing removed


def test_a_freed_employee_is_not_offered_first_a_call_he_refused() -> None:
    q = CallQueue()
    q.enqueue(waiting("refused", 0))
    q.enqueue(waiting("other", 5))
    agent = Free("a", refused=frozenset(["refused"]))
    first = q.next_for(agent)
    assert first is not None
    assert first.call_id == "other"
    q.remove("other")
    again = q.next_for(agent)  # nothing else: he may get it again
    assert again is not None
    assert again.call_id == "refused"


def test_a_call_excluding_the_employee_is_never_his() -> None:
    q = CallQueue()
    q.enqueue(WaitingCall("own", at(0), excluded=["a"]))
    assert q.next_for(Free("a")) is None
    assert q.next_for(Free("b")) is not None


def test_across_groups_the_lowest_penalty_queue_wins_then_priority_then_age() -> None:
    sales, support, vip = CallQueue(), CallQueue(), CallQueue()
    sales.enqueue(waiting("sales-old", 0))
    support.enqueue(waiting("support-new", 50))
    vip.enqueue(waiting("vip", 60, priority=3))
    agent = Free("a")
    picked = next_across([(sales, 2), (support, 0)], agent)
    assert picked is not None
    assert (picked[0], picked[1].call_id) == (support, "support-new")
    picked = next_across([(sales, 0), (support, 0)], agent)
    assert picked is not None
    assert picked[1].call_id == "sales-old"
    picked = next_across([(sales, 0), (vip, 0)], agent)
    assert picked is not None
    assert picked[1].call_id == "vip"
    refuser = Free("a", refused=frozenset(["support-new"]))
    picked = next_across([(sales, 2), (support, 0)], refuser)
    assert picked is not None
    assert picked[1].call_id == "sales-old"
    assert next_across([(sales, 0)], agent, lambda q, c: False) is None


# --- invariants over random operation sequences -----------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("enqueue"), st.integers(0, 2), st.integers(-100, 100)),
        st.tuples(st.just("callback"), st.integers(0, 50), st.just(0)),
        st.tuples(st.just("abandon"), st.integers(0, 50), st.just(0)),
        st.tuples(st.just("serve"), st.just(0), st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_queue_order_invariants_hold_under_any_sequence(
    steps: list[tuple[str, int, int]],
) -> None:
    q = CallQueue()
    arrival: dict[str, int] = {}
    for n, (op, a, b) in enumerate(steps):
        ids = list(arrival)
        if op == "enqueue":
            c = WaitingCall(f"c{n}", at(b), priority=a)
            q.enqueue(c)
            arrival[c.call_id] = n
        elif op in ("callback", "abandon") and ids:
            target = ids[a % len(ids)]
            if op == "callback":
                q.to_callback(target)
            else:
                q.remove(target)
                del arrival[target]
        elif op == "serve" and len(q):
            head = q.head()
            assert head is not None
            # never starves the oldest of the top priority: the head is exactly him
            top = max(c.priority for c in q)
            oldest = min(
                (c for c in q if c.priority == top),
                key=lambda c: (c.enqueued_at, arrival[c.call_id]),
            )
            assert head is oldest
            q.remove(head.call_id)
            del arrival[head.call_id]
        calls = list(q)
        keys = [(-c.priority, c.enqueued_at, arrival[c.call_id]) for c in calls]
        assert keys == sorted(keys)
        assert [q.position(c.call_id) for c in calls] == list(range(1, len(calls) + 1))
        # callbacks never ahead of an earlier caller of the same or higher priority
        for cb in (c for c in calls if c.callback):
            for other in calls:
                if other.priority >= cb.priority and (other.enqueued_at, arrival[other.call_id]) < (
                    cb.enqueued_at,
                    arrival[cb.call_id],
                ):
                    assert q.position(other.call_id) < q.position(cb.call_id)
    assert len(q) == len(arrival)
