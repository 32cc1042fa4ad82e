"""Pomelo's own media plane under rtpload, and rtpengine in the same run: calls ramp, JSON.

For each mode and each step of the ramp (calls), a fresh server process
(``media_relay_server.py``: uvloop, GC frozen after set-up) opens the calls on Pomelo's
``MediaEngine``, and ``rtpload`` (``rtp_load.py``) drives them for ``--seconds``:

* ``relay``: two sessions per call joined by a ``Relay``; two rtpload streams per call, one
  per direction (1,000 calls are 100,000 packets/s in and as many out);
* ``record``: the same, each call also recorded in stereo to a temporary directory;
* ``ivr``: one session per call playing a looped prompt on the media clock and listening
  for RFC 4733 key presses; rtpload sends into it and measures the prompt stream it gets
  back (50 packets/s per call each way).

Per step: calls, packets/s sent by the generator, loss %, RFC 3550 jitter p99 added by the
server (minus the generator's own, looped back at the same load), server CPU % of one core
(over exactly the sending phase), and the server's event-loop lag (a 10 ms sleeper, p50/p99
/max, over the same window). A step is *clean* when loss < 0.1 %, added jitter p99 < 5 ms,
loop lag p99 < 5 ms and the generator kept time (send lag p99 < 2 ms); for ``ivr`` loss is
the prompt streams' sequence gaps and no stream may be silent. Then the rtpengine reference
ramp (``reference_rtpengine.py``) runs, and the summary gives, per mode, Pomelo's most clean
calls divided by rtpengine's.

An unclean step is run once more (``--retries``, both systems alike; ``tries`` says so):
on a shared machine other work only ever adds lag and jitter, so one clean run shows what
the relay can do.

Like the reference, the server is pinned to CPU 0 and rtpload to CPU 1, both SCHED_FIFO
when allowed (each falls back to normal scheduling, then to no pinning, when refused).

Bounded: each server exits by itself after its lifetime (and is killed by PID if not), each
ramp stops after two unclean steps in a row or at its share of ``--budget`` seconds, and
recordings are deleted. Loopback only. Step lines on stderr, the summary on stdout:

    .venv/bin/python bench/media_relay.py [--quick] [--modes relay,ivr] [--steps 100,500]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reference_rtpengine as reference
import rtp_load
from rtp_load import Stream

HOST = "127.0.0.1"
BENCH = Path(__file__).resolve().parent
SERVER = BENCH / "media_relay_server.py"
MODES = ("relay", "record", "ivr")
STEPS = (100, 250, 500, 750, 1000, 1250, 1500)
IVR_EXTRA_STEPS = (2000, 2500)  # one stream per IVR call: it goes further
QUICK_STEPS = (100, 500)
POMELO_PORTS = (10000, 19999)  # same range as the reference's rtpengine (never both at once)
MAX_LOSS_PCT = 0.1
MAX_ADDED_JITTER_MS = 5.0
MAX_LOOP_LAG_MS = 5.0
SERVER_START_S = 30.0  # imports + opening thousands of sockets
SERVER_STOP_S = 30.0  # finalising (fsync) a WAV per recorded call
STEP_OVERHEAD_S = 4.0  # start, set-up and stop of a server, beyond the sending phase
RTPENGINE_SHARE = 0.3  # of the budget, kept for the reference ramp


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- scheduling ----------------------------------------------------------------------------


def usable_scheduling(cpu: int, rt_priority: int) -> tuple[int, int]:
    """The (cpu, rt priority) a child may really get here: degrade instead of failing.

    ``rt_load.child_setup`` raises in the child when the kernel refuses SCHED_FIFO or the
    affinity (containers without CAP_SYS_NICE, cpusets); try it on ``true`` first.
    """
    for candidate_cpu, candidate_rt in ((cpu, rt_priority), (cpu, 0), (-1, 0)):
        cpus = {candidate_cpu} if candidate_cpu >= 0 else None
        try:
            subprocess.run(
                ["true"], preexec_fn=rtp_load.child_setup(cpus, candidate_rt), check=True
            )
        except (subprocess.SubprocessError, OSError):
            continue
        return candidate_cpu, candidate_rt
    return -1, 0


def _cpus(cpu: int) -> set[int] | None:
    return {cpu} if cpu >= 0 else None


# -- the server process --------------------------------------------------------------------


class Server:
    """One ``media_relay_server.py`` process and its JSON-lines conversation."""

    __slots__ = ("_buffer", "log_path", "process")

    def __init__(self, mode: str, args: argparse.Namespace, work: Path, lifetime: float) -> None:
        self.log_path = work / f"server-{mode}-{time.monotonic_ns()}.log"
        command = [
            sys.executable,
            str(SERVER),
            "--mode", mode,
            "--port-min", str(POMELO_PORTS[0]),
            "--port-max", str(POMELO_PORTS[1]),
            "--record-dir", str(work / "recordings"),
            "--lifetime", f"{lifetime:.0f}",
        ]  # fmt: skip
        with self.log_path.open("wb") as err:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                preexec_fn=rtp_load.child_setup(_cpus(args.relay_cpu), args.rt_priority),
            )
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()

    def receive(self, timeout: float) -> dict[str, Any]:
        """The next JSON line, or an error naming what the server logged."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise RuntimeError(f"server silent for {timeout:g}s: {self.tail()}")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise RuntimeError(f"server exited ({self.process.poll()}): {self.tail()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message

    def finish(self) -> dict[str, Any]:
        """Ask it to stop; its closing report, or {} when it had to be killed."""
        report: dict[str, Any] = {}
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            self.send({"quit": True})
            report = self.receive(SERVER_STOP_S)
        reference.stop(self.process, grace=SERVER_STOP_S)  # SIGTERM, then SIGKILL, by PID
        return report

    def tail(self) -> str:
        return reference._tail(self.log_path)


# -- one step --------------------------------------------------------------------------------


def pomelo_step(
    mode: str, calls: int, args: argparse.Namespace, work: Path, baseline: Callable[[int], float]
) -> dict[str, Any]:
    per_call = 1 if mode == "ivr" else 2
    peers = rtp_load.free_udp_ports(per_call * calls, HOST)
    lifetime = SERVER_START_S + args.seconds + SERVER_STOP_S + 30
    server = Server(mode, args, work, lifetime)
    try:
        server.send({"peers": peers})
        ready = server.receive(SERVER_START_S)
        streams = [
            Stream(HOST, port, peer) for port, peer in zip(ready["ports"], peers, strict=True)
        ]
        run = rtp_load.run_load(
            streams,
            args.seconds,
            target_pids=[server.pid],
            cpus=_cpus(args.tool_cpu),
            rt_priority=args.rt_priority,
        )
        window = run.get("sending_monotonic") or [0.0, time.monotonic()]
        server.send({"lag": window})
        stats = server.receive(10.0)
    finally:
        closed = server.finish()
        if mode == "record":
            shutil.rmtree(work / "recordings", ignore_errors=True)
    step = _step_figures(mode, calls, run, stats, baseline(per_call * calls))
    step["setup_s"] = ready["setup_s"]
    step["server"] = {**stats, **closed}
    return step


def _step_figures(
    mode: str, calls: int, run: dict[str, Any], stats: dict[str, Any], base_jitter: float
) -> dict[str, Any]:
    # IVR: the prompt streams are not the packets sent, so only sequence gaps count as loss
    loss = run["seq_lost_pct"] if mode == "ivr" else max(run["lost_pct"], run["seq_lost_pct"])
    jitter = run["jitter_ms"]["p99"]
    jitter = jitter if jitter is not None else float("inf")
    lag = stats["loop_lag_ms"]["p99"]
    step: dict[str, Any] = {
        "mode": mode,
        "calls": calls,
        "packets_per_s": run["packets_per_s"],
        "loss_pct": loss,
        "jitter_p99_ms": jitter,
        "added_jitter_p99_ms": round(max(0.0, jitter - base_jitter), 4),
        "server_cpu_pct": next(iter(run["target_cpu_pct"].values())),
        "loop_lag_ms": stats["loop_lag_ms"],
        "silent_streams": run["silent_streams"],
        "send_lag_p99_ms": run["send_lag_ms"]["p99"],
        "udp_rcvbuf_errors": run.get("udp_rcvbuf_errors"),
        "generator_ok": run["send_lag_ms"]["p99"] < reference.GENERATOR_MAX_LAG_MS,
    }
    step["clean"] = (
        loss < MAX_LOSS_PCT
        and step["added_jitter_p99_ms"] < MAX_ADDED_JITTER_MS
        and lag is not None
        and lag < MAX_LOOP_LAG_MS
        and step["generator_ok"]
        and run["silent_streams"] == 0
    )
    return step


class Baselines:
    """The generator looped back onto itself, once per stream count: its own jitter."""

    __slots__ = ("_args", "_jitter")

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args
        self._jitter: dict[int, float] = {}

    def __call__(self, streams: int) -> float:
        if not self._args.baseline_each:
            return 0.0
        if streams not in self._jitter:
            step = reference.baseline_step((streams + 1) // 2, self._args)
            self._jitter[streams] = step["jitter_p99_ms"] or 0.0
            log(json.dumps({"baseline_streams": streams, **step}))
        return self._jitter[streams]


# -- ramps -------------------------------------------------------------------------------------


def _guarded(run_step: Callable[[int], dict[str, Any]], count: int) -> dict[str, Any]:
    try:
        return run_step(count)
    except RuntimeError as exc:  # a server that cannot cope at all is an unclean step
        return {"calls": count, "clean": False, "error": str(exc)[-600:]}


def ramp(
    steps: list[int],
    deadline: float,
    planned_s: float,
    retries: int,
    run_step: Callable[[int], dict[str, Any]],
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    unclean_in_a_row = 0
    for count in steps:
        if time.monotonic() + planned_s > deadline:
            log(f"budget reached: skipping {count} calls and above")
            break
        step = reference.run_retrying(functools.partial(_guarded, run_step), count, retries)
        results.append(step)
        log(json.dumps(step))
        unclean_in_a_row = 0 if step["clean"] else unclean_in_a_row + 1
        if unclean_in_a_row >= 2:
            log("two unclean steps in a row: stopping the ramp")
            break
    return results


def bench_pomelo(
    args: argparse.Namespace, modes: list[str], steps: list[int], deadline: float
) -> dict[str, Any]:
    baselines = Baselines(args)
    planned = args.seconds + STEP_OVERHEAD_S + (args.seconds + 1 if args.baseline_each else 0)
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pomelo-media-bench-") as tmp:
        work = Path(tmp)
        for index, mode in enumerate(modes):
            share = (deadline - time.monotonic()) / (len(modes) - index)
            mode_steps = list(steps)
            if mode == "ivr" and not args.steps and not args.quick:
                mode_steps += [s for s in IVR_EXTRA_STEPS if s > max(steps)]
            run_step = functools.partial(
                pomelo_step, mode, args=args, work=work, baseline=baselines
            )
            ramp_steps = ramp(mode_steps, time.monotonic() + share, planned, args.retries, run_step)
            clean = [s["calls"] for s in ramp_steps if s["clean"]]
            result[mode] = {"steps": ramp_steps, "max_clean_calls": max(clean, default=0)}
    return result


def bench_rtpengine(args: argparse.Namespace, steps: list[int], budget: float) -> dict[str, Any]:
    ref_args = argparse.Namespace(
        seconds=args.seconds,
        budget=budget,
        relay_cpu=args.relay_cpu,
        tool_cpu=args.tool_cpu,
        rt_priority=args.rt_priority,
        baseline_each=args.baseline_each,
        retries=args.retries,
    )
    try:
        return reference.bench_rtpengine(ref_args, steps)
    except RuntimeError as exc:
        return {"system": "rtpengine", "error": str(exc)[-600:], "max_clean_calls": 0}


def summary_table(pomelo: dict[str, Any]) -> list[str]:
    lines = ["mode    calls  pkt/s    loss%   +jit99ms  cpu%   lag99ms  clean"]
    for mode, ramp_result in pomelo.items():
        for s in ramp_result["steps"]:
            if "error" in s:
                lines.append(f"{mode:<7} {s['calls']:>5}  error: {s['error'][:60]}")
                continue
            lines.append(
                f"{mode:<7} {s['calls']:>5}  {s['packets_per_s']:>7.0f}  {s['loss_pct']:>6.3f}"
                f"  {s['added_jitter_p99_ms']:>8.3f}  {s['server_cpu_pct'] or 0:>5.1f}"
                f"  {s['loop_lag_ms']['p99'] or 0:>7.2f}  {s['clean']}"
            )
    return lines


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop servers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, well under a minute")
    parser.add_argument("--modes", default=",".join(MODES), help="of relay,record,ivr")
    parser.add_argument("--steps", help="comma-separated call counts (all modes)")
    parser.add_argument("--rtpengine-steps", help="default: the reference's own ramp")
    parser.add_argument("--no-rtpengine", action="store_true")
    parser.add_argument("--no-baseline", dest="baseline_each", action="store_false")
    parser.add_argument("--seconds", type=float, default=5.0, help="per step")
    parser.add_argument("--retries", type=int, default=1, help="reruns of an unclean step")
    parser.add_argument("--budget", type=float, default=600.0, help="wall seconds, all ramps")
    parser.add_argument("--relay-cpu", type=int, default=0, help="-1: do not pin")
    parser.add_argument("--tool-cpu", type=int, default=1, help="-1: do not pin")
    parser.add_argument("--rt-priority", type=int, default=20, help="SCHED_FIFO (0: normal)")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    if args.quick:
        args.seconds = min(args.seconds, 1.5)
        args.budget = min(args.budget, 90.0)
        args.retries = 0
    steps = [int(s) for s in args.steps.split(",")] if args.steps else None
    steps = steps or list(QUICK_STEPS if args.quick else STEPS)
    ref_steps = [int(s) for s in args.rtpengine_steps.split(",")] if args.rtpengine_steps else None
    ref_steps = ref_steps or list(reference.QUICK_STEPS if args.quick else reference.STEPS)
    requested = (args.relay_cpu, args.tool_cpu, args.rt_priority)
    args.relay_cpu, relay_rt = usable_scheduling(args.relay_cpu, args.rt_priority)
    args.tool_cpu, tool_rt = usable_scheduling(args.tool_cpu, args.rt_priority)
    args.rt_priority = min(relay_rt, tool_rt)
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    rtp_load.build_tool()
    ref_budget = 0.0 if args.no_rtpengine else args.budget * RTPENGINE_SHARE
    pomelo = bench_pomelo(args, modes, steps, started + args.budget - ref_budget)
    result: dict[str, Any] = {
        "bench": "media_relay",
        "scheduling": {
            "requested_cpu_relay_tool_rt": list(requested),
            "relay_cpu": args.relay_cpu,
            "tool_cpu": args.tool_cpu,
            "rt_priority": args.rt_priority,
        },
        "seconds_per_step": args.seconds,
        "criteria": {
            "loss_pct_below": MAX_LOSS_PCT,
            "added_jitter_p99_ms_below": MAX_ADDED_JITTER_MS,
            "loop_lag_p99_ms_below": MAX_LOOP_LAG_MS,
            "generator_send_lag_p99_ms_below": reference.GENERATOR_MAX_LAG_MS,
        },
        "pomelo": pomelo,
    }
    if not args.no_rtpengine:
        remaining = max(60.0, started + args.budget - time.monotonic())
        rtpengine = bench_rtpengine(args, ref_steps, remaining)
        result["rtpengine"] = rtpengine
        best = rtpengine.get("max_clean_calls") or 0
        result["ratio_vs_rtpengine"] = {
            mode: (round(pomelo[mode]["max_clean_calls"] / best, 3) if best else None)
            for mode in pomelo
        }
    result["wall_s"] = round(time.monotonic() - started, 1)
    for line in summary_table(pomelo):
        log(line)
    for step in result.get("rtpengine", {}).get("steps", []):
        log(
            f"rtpengine {step['calls']:>5}  {step['packets_per_s']:>7.0f}  {step['loss_pct']:>6.3f}"
            f"  {step['added_jitter_p99_ms']:>8.3f}  {step['rtpengine_cpu_pct'] or 0:>5.1f}"
            f"        -  {step['clean']}"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
