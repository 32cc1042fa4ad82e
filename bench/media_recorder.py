"""Micro-benchmark of the stereo call recorder's per-packet cost on the event loop.

Prints one JSON line. Figures are the best of several batches (on a shared machine noise
only ever adds). ``add_us`` / ``add_g711_us`` are the cost of placing one
20 ms packet (PCM already decoded / PCMU payload); ``flush_us_per_packet`` spreads the
cost of 4 flushes per second over the 100 packets a call receives per second; and
``call_second_us`` replays one second of a two-way call (100 packets, 4 flushes) on each of
``calls`` recorders in turn, writing through the real single writer thread to a temporary
directory, so it includes queueing the bytes. 1,000 calls need 1,000 call-seconds per
second, so ``loop_share_1000_calls`` = call_second_us * 1000 / 1e6 is the fraction of one
core the recorders take at that load. ``memory_per_call_bytes`` is what one recorder holds
mid-call (its lanes: the open window, whatever the call length).
"""

from __future__ import annotations

import json
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from pomelo.media.g711 import ulaw_encode
from pomelo.media.recorder import RecordingFile, RecordingWriter, StereoRecorder

BATCHES = 9
FRAME = 160
CALLS = 200


def _packets(seconds: int) -> tuple[list[np.ndarray], list[bytes]]:
    rng = np.random.default_rng(0)
    frames = [rng.integers(-8000, 8000, FRAME).astype(np.int16) for _ in range(50 * seconds)]
    return frames, [ulaw_encode(f) for f in frames]


def _add_cost(writer: RecordingWriter, root: Path, g711: bool) -> float:
    frames, payloads = _packets(10)
    samples = []
    for batch in range(BATCHES):
        rec = StereoRecorder(root / f"add{g711}{batch}.wav", writer, start=0.0)
        begin = time.perf_counter_ns()
        for k in range(len(frames)):
            arrival = k * 0.02
            if g711:
                rec.add_g711(k & 1, payloads[k], "PCMU", k * FRAME, 1 + (k & 1), arrival)
            else:
                rec.add(k & 1, frames[k], k * FRAME, 1 + (k & 1), arrival)
        samples.append((time.perf_counter_ns() - begin) / len(frames) / 1000)
        rec.close()
    return round(min(samples), 3)


def _flush_cost(writer: RecordingWriter, root: Path) -> float:
    frames, _ = _packets(1)
    samples = []
    for batch in range(BATCHES):
        rec = StereoRecorder(root / f"flush{batch}.wav", writer, start=0.0)
        spent = 0
        for second in range(20):
            for k, frame in enumerate(frames):
                t = second + k * 0.02
                rec.add(0, frame, (second * 50 + k) * FRAME, 1, t)
                rec.add(1, frame, (second * 50 + k) * FRAME, 2, t)
                if k % 25 == 24:
                    begin = time.perf_counter_ns()
                    rec.flush(t)
                    spent += time.perf_counter_ns() - begin
        samples.append(spent / (20 * 100) / 1000)
        rec.close()
    return round(min(samples), 3)


def _replay(recorders: list[StereoRecorder], payloads: list[bytes], seconds: range) -> None:
    for second in seconds:
        for rec in recorders:
            for k in range(50):
                t = second + k * 0.02
                ts = (second * 50 + k) * FRAME
                rec.add_g711(0, payloads[k], "PCMU", ts, 1, t)
                rec.add_g711(1, payloads[k], "PCMU", ts, 2, t)
                if k % 13 == 12:
                    rec.flush(t)


def _call_seconds(writer: RecordingWriter, root: Path) -> float:
    _, payloads = _packets(1)
    recorders = [StereoRecorder(root / f"call{i}.wav", writer, start=0.0) for i in range(CALLS)]
    per_second = []
    for second in range(5):
        begin = time.perf_counter_ns()
        _replay(recorders, payloads, range(second, second + 1))
        per_second.append(time.perf_counter_ns() - begin)
    for rec in recorders:
        rec.close().result(timeout=30)
    return round(min(per_second) / CALLS / 1000, 1)


def _memory_per_call(root: Path) -> int:
    """Bytes a recorder holds mid-call (writes discarded so queued bytes do not count)."""
    _, payloads = _packets(1)

    class Discard(RecordingWriter):
        def write(self, target: RecordingFile, data: bytes) -> None:
            pass

    calls = 50
    tracemalloc.start()  # on its own: tracing slows every allocation down
    recorders = [StereoRecorder(root / f"m{i}.wav", Discard(), start=0.0) for i in range(calls)]
    _replay(recorders, payloads, range(3))
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return current // calls


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        writer = RecordingWriter()
        add_us = _add_cost(writer, root, g711=False)
        add_g711_us = _add_cost(writer, root, g711=True)
        flush_us = _flush_cost(writer, root)
        call_second_us = _call_seconds(writer, root)
        writer.stop()
        bytes_per_call = _memory_per_call(root)
    print(
        json.dumps(
            {
                "add_us": add_us,
                "add_g711_us": add_g711_us,
                "flush_us_per_packet": flush_us,
                "calls": CALLS,
                "call_second_us": call_second_us,
                "loop_share_1000_calls": round(call_second_us * 1000 / 1e6, 3),
                "memory_per_call_bytes": bytes_per_call,
            }
        )
    )


if __name__ == "__main__":
    main()
