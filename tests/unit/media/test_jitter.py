"""Adaptive jitter buffer: reordering, duplicates, late frames, loss and delay adaptation."""

from __future__ import annotations

import random

import pytest

from pomelo.media.jitter import JitterBuffer


def make(**kwargs: int) -> JitterBuffer[int]:
    return JitterBuffer[int](**kwargs)


def push(buf: JitterBuffer[int], seq: int, arrival: float | None = None) -> bool:
    """Frame payload is its (unwrapped) sequence number; nominal arrival is seq*20 ms."""
    when = seq * 0.02 if arrival is None else arrival
    return buf.push(seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, seq, when)


def drain(buf: JitterBuffer[int], count: int) -> list[int | None]:
    return [buf.pop() for _ in range(count)]


def test_in_order_stream_plays_in_order() -> None:
    buf = make()
    out = []
    for seq in range(100):
        push(buf, seq)
        out.append(buf.pop())
    assert out == list(range(100))
    assert buf.stats.played == 100
    assert buf.stats.lost == 0


def test_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="min_delay"):
        JitterBuffer[int](frame_ms=20, min_delay_ms=10)
    with pytest.raises(ValueError, match="min_delay"):
        JitterBuffer[int](min_delay_ms=100, max_delay_ms=40)


def test_waits_for_target_before_starting() -> None:
    buf = make(min_delay_ms=60)
    push(buf, 10)
    assert buf.pop() is None
    push(buf, 11)
    assert buf.pop() is None
    push(buf, 12)
    assert drain(buf, 3) == [10, 11, 12]


def test_reorders_within_window() -> None:
    buf = make(min_delay_ms=100, max_delay_ms=200)
    seqs = list(range(1000, 1050))
    rng = random.Random(1)
    for i in range(0, len(seqs), 5):
        chunk = seqs[i : i + 5]
        rng.shuffle(chunk)
        seqs[i : i + 5] = chunk
    out = []
    for position, seq in enumerate(seqs):
        push(buf, seq, arrival=(1000 + position) * 0.02)
        out.append(buf.pop())
    out += drain(buf, 10)
    assert [x for x in out if x is not None] == list(range(1000, 1050))
    assert buf.stats.lost == 0


def test_early_frame_before_start_moves_the_start_back() -> None:
    buf = make(min_delay_ms=40)
    push(buf, 6)
    push(buf, 5)
    assert drain(buf, 2) == [5, 6]
    assert buf.stats.late == 0


def test_duplicates_are_dropped() -> None:
    buf = make(min_delay_ms=60)
    accepted = [push(buf, s) for s in [1, 2, 2, 3, 1, 3]]
    assert accepted == [True, True, False, True, False, False]
    assert buf.stats.duplicates == 3
    assert drain(buf, 3) == [1, 2, 3]


def test_late_frames_are_dropped_and_reported_as_loss() -> None:
    buf = make()
    push(buf, 1)
    assert buf.pop() == 1
    push(buf, 3)
    assert buf.pop() is None  # 2 missing at its playout time
    assert buf.pop() == 3
    assert not push(buf, 2)  # arrives too late
    assert buf.stats.late == 1
    assert buf.stats.lost == 1
    assert not push(buf, 3)  # repeat of an already played frame
    assert buf.stats.late == 2


def test_loss_gives_none_in_place() -> None:
    buf = make(min_delay_ms=60)
    received = {0, 1, 2, 4, 5, 8, 9, 10, 11, 12}
    out = []
    for seq in range(13):
        if seq in received:
            push(buf, seq)
        out.append(buf.pop())
    out += drain(buf, 2)
    assert out == [None, None, 0, 1, 2, None, 4, 5, None, None, 8, 9, 10, 11, 12]
    assert buf.stats.lost == 3


def test_underrun_stalls_without_consuming_sequence_numbers() -> None:
    buf = make()
    push(buf, 0)
    assert buf.pop() == 0
    assert drain(buf, 3) == [None, None, None]
    assert buf.stats.underruns == 3
    push(buf, 1)
    assert buf.pop() == 1
    assert buf.stats.lost == 0


def test_sequence_wrap() -> None:
    buf = make(min_delay_ms=40)
    out = []
    for seq in range(65530, 65545):
        push(buf, seq)
        out.append(buf.pop())
    assert [x for x in out if x is not None] == list(range(65530, 65544))
    assert buf.stats.lost == 0


def test_overflow_drops_oldest() -> None:
    buf = make(min_delay_ms=20, max_delay_ms=100)  # at most 5 frames
    for seq in range(20):
        push(buf, seq, arrival=0.0)
    assert len(buf) == 5
    assert buf.stats.overflow == 15
    assert drain(buf, 5) == [15, 16, 17, 18, 19]


def test_huge_jump_resyncs() -> None:
    buf = make()
    push(buf, 100)
    assert buf.pop() == 100
    push(buf, 30000, arrival=2.0)
    assert buf.pop() == 30000


def test_delay_adapts_to_jitter_within_bounds() -> None:
    calm = make(min_delay_ms=20, max_delay_ms=200)
    for seq in range(200):
        push(calm, seq)
    assert calm.target_delay_ms == 20
    assert calm.jitter_ms == pytest.approx(0.0, abs=1e-9)

    rng = random.Random(5)
    shaky = make(min_delay_ms=20, max_delay_ms=200)
    for seq in range(500):
        push(shaky, seq, arrival=seq * 0.02 + rng.uniform(0, 0.06))
    assert 20 < shaky.target_delay_ms <= 200
    assert shaky.jitter_ms > 10

    wild = make(min_delay_ms=20, max_delay_ms=200)
    for seq in range(500):
        push(wild, seq, arrival=seq * 0.02 + rng.uniform(0, 2.0))
    assert wild.target_delay_ms == 200


def test_shrinks_delay_by_skipping_when_too_deep() -> None:
    buf = make(min_delay_ms=20, max_delay_ms=200)
    for seq in range(8):  # a burst: 8 frames queued, target is 1-2 frames
        push(buf, seq)
    out = []
    for seq in range(8, 20):
        push(buf, seq)
        out.append(buf.pop())
    assert buf.stats.skipped > 0
    assert buf.depth <= buf.target_delay_ms // 20 + 1
    played = [x for x in out if x is not None]
    assert played == sorted(played)


def test_simulated_network_plays_everything_once_in_order() -> None:
    """Jittery, reordering, duplicating, lossy network; playout clock every 20 ms."""
    rng = random.Random(42)
    buf = make(min_delay_ms=40, max_delay_ms=200)
    events: list[tuple[float, int]] = []
    sent_lost = set()
    for seq in range(60000, 60000 + 3000):  # crosses the 16-bit wrap
        if rng.random() < 0.03:
            sent_lost.add(seq)
            continue
        delay = 0.03 + rng.expovariate(1 / 0.015)
        events.append((seq * 0.02 + delay, seq))
        if rng.random() < 0.02:
            events.append((seq * 0.02 + delay + 0.001, seq))  # duplicate
    events.sort()
    played: list[int] = []
    tick = 60000 * 0.02
    index = 0
    while index < len(events) or tick < (60000 + 3100) * 0.02:
        while index < len(events) and events[index][0] <= tick:
            arrival, seq = events[index]
            push(buf, seq, arrival)
            index += 1
        frame = buf.pop()
        if frame is not None:
            played.append(frame)
        tick += 0.02
    assert played == sorted(set(played))  # in order, no repeats
    assert not sent_lost & set(played)
    delivered = {seq for _, seq in events}
    # Some late frames are expected to be dropped, but very few with an adaptive delay.
    assert len(played) >= 0.97 * len(delivered)
    assert buf.stats.duplicates + buf.stats.late > 0
