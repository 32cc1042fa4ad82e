"""Server side of ``media_relay.py``: N calls on Pomelo's media plane, in one uvloop process.

Spawned by the driver, one process per ramp step (a fresh heap and port pool each time, so
one step's leftovers never slow the next). It talks JSON lines: stdin carries the
generator's receiving ports, stdout answers with the session ports; then the driver asks for
the loop lag over the window in which the generator was sending, and says ``quit``.

Modes:

* ``relay``: two ``RtpSession``s per call joined by a ``Relay`` (forwarding as is);
* ``record``: the same with a ``StereoRecorder`` per call (client leg ``a``) writing WAV
  files under ``--record-dir`` through the engine's one writer thread;
* ``ivr``: one session per call playing a looped prompt on the media clock while listening
  for RFC 4733 key presses; the generator's stream goes in, the prompt stream comes out.

The loop lag is what every other task of a Pomelo process (signalling, the API) would
suffer: a task sleeping 10 ms records how late it wakes (``time.monotonic``, so it is
comparable with the driver's clock). The process ends by itself after ``--lifetime``
seconds whatever the driver does, finishing its recordings first.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import gc
import json
import resource
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pomelo.media.engine import MediaEngine
from pomelo.media.recorder import StereoRecorder
from pomelo.media.relay import Playback, Relay
from pomelo.media.session import PCMU, RtpSession
from pomelo.runtime import run, tune_gc

HOST = "127.0.0.1"
PROBE_S = 0.01
PROMPT_S = 3.0
MODES = ("relay", "record", "ivr")


class LagProbe:
    """Samples how late a 10 ms sleeper wakes; kept in flat arrays (no object per sample)."""

    __slots__ = ("at", "late", "task")

    def __init__(self) -> None:
        self.at = array.array("d")
        self.late = array.array("d")
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        at, late, monotonic, sleep = self.at, self.late, time.monotonic, asyncio.sleep
        while True:
            before = monotonic()
            await sleep(PROBE_S)
            now = monotonic()
            at.append(now)
            late.append(now - before - PROBE_S)

    def window(self, start: float, end: float) -> dict[str, Any]:
        at = np.frombuffer(self.at, dtype=np.float64) if self.at else np.zeros(0)
        late = np.frombuffer(self.late, dtype=np.float64)[: len(at)]
        chosen = late[(at >= start) & (at <= end)] * 1000
        if not len(chosen):
            return {"p50": None, "p99": None, "max": None, "samples": 0}
        p50, p99 = np.percentile(chosen, [50, 99])
        return {
            "p50": round(float(p50), 3),
            "p99": round(float(p99), 3),
            "max": round(float(chosen.max()), 3),
            "samples": len(chosen),
        }


def prompt_pcm(seconds: float = PROMPT_S, rate: int = 8000) -> npt.NDArray[np.int16]:
    """Speech-like test audio: a two-tone carrier plus noise under a syllable-rate envelope."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(7)
    carrier = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 1250 * t)
    noise = 0.2 * rng.standard_normal(len(t))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    samples = np.clip((carrier + noise) * envelope * 9000, -32768, 32767)
    return samples.astype(np.int16)


class Bench:
    """The calls of one run and what they counted."""

    __slots__ = ("digits", "engine", "playbacks", "recorders", "relays", "sessions")

    def __init__(self, engine: MediaEngine) -> None:
        self.engine = engine
        self.sessions: list[RtpSession] = []
        self.relays: list[Relay] = []
        self.recorders: list[StereoRecorder] = []
        self.playbacks: list[Playback] = []
        self.digits = 0

    async def open(self, peer: int) -> RtpSession:
        session = await self.engine.open_session()
        session.configure((HOST, peer), PCMU, 101)
        self.sessions.append(session)
        return session

    async def relay_call(self, peer_a: int, peer_b: int, record_dir: Path | None) -> None:
        a = await self.open(peer_a)
        b = await self.open(peer_b)
        relay = Relay(a, b)
        if record_dir is not None:
            recorder = self.engine.start_recording(record_dir / f"call{len(self.relays)}.wav")
            relay.recorder = recorder
            relay.client = a
            self.recorders.append(recorder)
        relay.start()
        self.relays.append(relay)

    async def ivr_call(self, peer: int, pcm: npt.NDArray[np.int16]) -> None:
        session = await self.open(peer)
        session.on_dtmf = self._digit
        self.playbacks.append(Playback(session, self.engine.clock, pcm, loop=True).start())

    def _digit(self, digit: str) -> None:
        self.digits += 1

    def counters(self) -> dict[str, Any]:
        totals: dict[str, int] = {}
        for session in self.sessions:
            for name in ("received", "sent", "malformed", "foreign_source", "foreign_ssrc"):
                totals[name] = totals.get(name, 0) + getattr(session.counters, name)
        totals["relay_dropped"] = sum(relay.dropped for relay in self.relays)
        totals["dtmf_digits"] = self.digits
        if self.recorders:
            stats = [recorder.stats for recorder in self.recorders]
            totals["recorded_packets"] = sum(s.packets for s in stats)
            totals["recorder_late_samples"] = sum(s.late_samples for s in stats)
        clock = self.engine.clock
        totals["clock_ticks"], totals["clock_late_ticks"] = clock.ticks, clock.late_ticks
        return totals

    async def close(self) -> dict[str, Any]:
        for playback in self.playbacks:
            playback.stop()
        for relay in self.relays:
            relay.stop()
        finishing = [self.engine.finish_recording(r) for r in self.recorders]
        results = await asyncio.gather(*finishing)
        for session in self.sessions:
            session.close()
        await self.engine.stop()
        errors = [r.error for r in results if r.error]
        return {
            "recordings": len(results),
            "recorded_bytes": sum(r.size_bytes for r in results),
            "recording_errors": errors[:3],
        }


async def serve(args: argparse.Namespace) -> int:
    reader = await _stdin_reader()
    deadline = time.monotonic() + args.lifetime
    request = await _within(reader.readline(), deadline)
    if request is None:
        return 3
    peers: list[int] = json.loads(request)["peers"]
    engine = MediaEngine(HOST, args.port_min, args.port_max, rtp_timeout=0)
    bench = Bench(engine)
    started = time.monotonic()
    try:
        await _setup(bench, args, peers)
        setup_s = time.monotonic() - started
        tune_gc()  # the calls are the long-lived heap now
        probe = LagProbe()
        probe.start()
        _say({"ready": True, "ports": [s.local_address[1] for s in bench.sessions],
              "setup_s": round(setup_s, 3)})  # fmt: skip
        code = await _commands(reader, deadline, bench, probe)
    finally:
        closed = await asyncio.wait_for(bench.close(), max(5.0, deadline - time.monotonic()))
    _say({"closed": True, **closed})
    return code


async def _setup(bench: Bench, args: argparse.Namespace, peers: list[int]) -> None:
    if args.mode == "ivr":
        pcm = prompt_pcm()
        for peer in peers:
            await bench.ivr_call(peer, pcm)
        return
    record_dir = args.record_dir if args.mode == "record" else None
    if record_dir is not None:
        record_dir.mkdir(parents=True, exist_ok=True)
    for a, b in zip(peers[0::2], peers[1::2], strict=True):
        await bench.relay_call(a, b, record_dir)


async def _commands(
    reader: asyncio.StreamReader, deadline: float, bench: Bench, probe: LagProbe
) -> int:
    """Answer ``{"lag": [t0, t1]}`` until ``{"quit": true}``, end of input or the deadline."""
    gc_before = [s["collections"] for s in gc.get_stats()]
    while True:
        line = await _within(reader.readline(), deadline)
        if line is None:
            return 3  # lifetime over: the driver is gone or stuck
        if not line:
            return 0
        command = json.loads(line)
        if command.get("quit"):
            return 0
        start, end = command["lag"]
        gc_now = [s["collections"] for s in gc.get_stats()]
        _say({
            "loop_lag_ms": probe.window(start, end),
            "gc_collections": [n - b for n, b in zip(gc_now, gc_before, strict=True)],
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            **bench.counters(),
        })  # fmt: skip


async def _within(awaitable: Awaitable[bytes], deadline: float) -> bytes | None:
    try:
        return await asyncio.wait_for(awaitable, max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        return None


async def _stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 22)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def _say(message: dict[str, Any]) -> None:
    """One JSON line to the driver (a few per run: writing it blocking is harmless)."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--port-min", type=int, default=10000)
    parser.add_argument("--port-max", type=int, default=19999)
    parser.add_argument("--record-dir", type=Path)
    parser.add_argument("--lifetime", type=float, default=120.0, help="seconds, then exit")
    parser.add_argument("--no-uvloop", dest="uvloop", action="store_false")
    args = parser.parse_args()
    if args.mode == "record" and args.record_dir is None:
        parser.error("--mode record needs --record-dir")
    raise SystemExit(run(serve(args), use_uvloop=args.uvloop))


if __name__ == "__main__":
    main()
