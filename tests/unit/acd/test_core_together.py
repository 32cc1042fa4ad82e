"""Agents, a queue and a distributor driven together by random event sequences, the way the
call path will drive them: no call is answered twice, no employee ever has two calls, and every
call ends in exactly one outcome."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pomelo.acd.agent_state import Agent, AgentStatus
from pomelo.acd.queue import CallQueue
from pomelo.acd.strategies import Distributor, GroupConfig, Member, Strategy
from pomelo.acd.waiting import WaitingCall
from pomelo.core.clock import FakeClock

EMPLOYEES = ("e0", "e1", "e2", "e3")


class Sim:
    """A minimal call path: rings waves, applies answers, rejections, hang-ups, timeouts."""

    def __init__(self, strategy: Strategy) -> None:
        self.clock = FakeClock()
        self.agents = {e: Agent(e, self.clock.now, wrap_up_seconds=5) for e in EMPLOYEES}
        members = tuple(
            Member(e, penalty=i % 2, ring_timeout=10 + i) for i, e in enumerate(EMPLOYEES)
        )
        self.dist = Distributor(GroupConfig(strategy, members))
        self.queue = CallQueue(max_wait_seconds=40)
        self.rings: dict[str, dict[str, float]] = {}  # call -> employee -> ring deadline (s)
        self.outcome: dict[str, str] = {}
        self.t = 0.0
        self.n = 0

    def arrive(self) -> None:
        self.n += 1
        self.queue.enqueue(WaitingCall(f"c{self.n}", self.clock.now()))

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.t += seconds
        for ringing in self.rings.values():
            for eid, deadline in list(ringing.items()):
                if self.t >= deadline:
                    self.agents[eid].ring_timeout()
                    del ringing[eid]
        for call in self.queue.overflowed(self.clock.now()):
            self.finish(call.call_id, "overflowed")

    def answer(self, eid: str) -> None:
        agent = self.agents[eid]
        if agent.status is not AgentStatus.RINGING:
            return
        call_id = agent.call_id
        assert call_id is not None
        assert call_id not in self.outcome, "answered twice"
        agent.answer()
        del self.rings[call_id][eid]
        self.finish(call_id, "answered")

    def reject(self, eid: str) -> None:
        agent = self.agents[eid]
        if agent.status is RINGING:
            call_id = agent.call_id
            assert call_id is not None
            agent.reject()
            del self.rings[call_id][eid]

    def hang_up(self, eid: str) -> None:
        if self.agents[eid].status is AgentStatus.TALKING:
            self.agents[eid].end_call()

    def abandon(self, k: int) -> None:
        waiting = list(self.queue)
        if waiting:
            self.finish(waiting[k % len(waiting)].call_id, "abandoned")

    def finish(self, call_id: str, outcome: str) -> None:
        assert call_id not in self.outcome
        self.outcome[call_id] = outcome
        self.queue.remove(call_id)
        for eid in self.rings.pop(call_id, {}):
            self.agents[eid].cancel_ring()

    def dispatch(self) -> None:
        for call in self.queue:
            if self.rings.get(call.call_id):
                continue  # a wave is still ringing
            wave = self.dist.next_wave(self.agents, call, self.clock.now())
            if wave is None:
                continue
            for offer in wave.offers:
                self.agents[offer.employee_id].offer(call.call_id)
                ringing = self.rings.setdefault(call.call_id, {})
                ringing[offer.employee_id] = self.t + offer.ring_timeout


RINGING = AgentStatus.RINGING

events = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), st.just(0)),
        st.tuples(st.just("advance"), st.integers(1, 15)),
        st.tuples(st.sampled_from(["answer", "reject", "hang_up"]), st.integers(0, 3)),
        st.tuples(st.just("abandon"), st.integers(0, 10)),
        st.tuples(st.sampled_from(["break", "back", "login", "logout"]), st.integers(0, 3)),
    ),
    min_size=30,
    max_size=150,
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(list(Strategy)), events)
def test_random_call_traffic_keeps_the_acd_consistent(
    strategy: Strategy, steps: list[tuple[str, int]]
) -> None:
    sim = Sim(strategy)
    for agent in sim.agents.values():
        agent.log_in()
    for op, arg in steps:
        eid = EMPLOYEES[arg % len(EMPLOYEES)]
        agent = sim.agents[eid]
        if op == "arrive":
            sim.arrive()
        elif op == "advance":
            sim.advance(arg)
        elif op == "answer":
            sim.answer(eid)
        elif op == "reject":
            sim.reject(eid)
        elif op == "hang_up":
            sim.hang_up(eid)
        elif op == "abandon":
            sim.abandon(arg)
        elif op == "break" and agent.status in (AgentStatus.AVAILABLE, AgentStatus.WRAP_UP):
            agent.start_break("coffee")
        elif op == "back" and agent.status is AgentStatus.BREAK:
            agent.end_break()
        elif op == "login" and agent.status is AgentStatus.LOGGED_OUT:
            agent.log_in()
        elif op == "logout" and agent.status in (AgentStatus.AVAILABLE, AgentStatus.BREAK):
            agent.log_out()
        sim.dispatch()

        busy = [a.call_id for a in sim.agents.values() if a.call_id is not None]
        ringing_or_talking = [
            a for a in sim.agents.values() if a.status in (RINGING, AgentStatus.TALKING)
        ]
        assert len(busy) == len(ringing_or_talking)
        talking = [a.call_id for a in sim.agents.values() if a.status is AgentStatus.TALKING]
        assert len(set(talking)) == len(talking), "a call answered by two employees"
        for a in sim.agents.values():
            if a.status is RINGING:
                assert a.call_id in sim.queue, "ringing for a call that is gone"
        for call_id in sim.outcome:
            assert call_id not in sim.queue
        # a free employee is never left idle while a call waits with no ring in progress
        idle = [a for a in sim.agents.values() if a.can_take_call]
        unrung = [c for c in sim.queue if not sim.rings.get(c.call_id)]
        assert not (idle and unrung)

    for n in range(1, sim.n + 1):
        assert (f"c{n}" in sim.outcome) != (f"c{n}" in sim.queue), "exactly one outcome"
    total = sum(a.stats().calls_answered for a in sim.agents.values())
    assert total == sum(1 for o in sim.outcome.values() if o == "answered")
