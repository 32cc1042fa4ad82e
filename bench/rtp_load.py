"""RTP load through any relay: builds and runs ``bench/tools/rtpload``, measures a target's CPU.

``rtpload`` (C, compiled here on demand with ``gcc -O2`` into ``bench/.build/``) sends paced
20 ms G.711 RTP on N streams and receives on their local ports; see the comment at the top
of ``tools/rtpload.c`` for what it measures. This wrapper knows nothing of any particular
relay: it takes the stream list (where each stream sends, which port it listens on), and
the PIDs whose CPU should be charged to the run (read from ``/proc/<pid>/stat``, all
threads included, over exactly the sending phase the tool reports on stderr).

Used as a library by ``reference_rtpengine.py`` (and, later, Pomelo's own relay bench), or
on its own:

    .venv/bin/python bench/rtp_load.py --loopback 1000 --seconds 5      # generator baseline
    .venv/bin/python bench/rtp_load.py --streams s.txt --seconds 10 --pid 1234

A streams file has one ``SEND_IP SEND_PORT LOCAL_PORT`` per line. Bounded: the tool stops
by itself and is killed (by its PID) if it overruns.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
SOURCE = BENCH / "tools" / "rtpload.c"
BUILD = BENCH / ".build"
BINARY = BUILD / "rtpload"
CLK_TCK = os.sysconf("SC_CLK_TCK")
OVERRUN_S = 30.0  # grace beyond the planned run before the tool is killed
PORT_FLOOR = 20000  # generator ports: below the ephemeral range, above rtpengine's default


@dataclass(frozen=True, slots=True)
class Stream:
    send_host: str
    send_port: int  # 0: receive only
    local_port: int

    def line(self) -> str:
        return f"{self.send_host} {self.send_port} {self.local_port}\n"


def build_tool(force: bool = False) -> Path:
    """Compile rtpload if the binary is missing or older than its source."""
    if (
        not force
        and BINARY.exists()
        and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime
        and os.access(BINARY, os.X_OK)
    ):
        return BINARY
    BUILD.mkdir(parents=True, exist_ok=True)
    partial = BUILD / f"rtpload.{os.getpid()}.tmp"
    command = ["gcc", "-O2", "-Wall", "-Wextra", "-o", str(partial), str(SOURCE), "-lm"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"building rtpload failed:\n{done.stderr}")
    partial.replace(BINARY)  # atomic: a concurrent run never sees half a binary
    return BINARY


def free_udp_ports(count: int, host: str = "127.0.0.1", floor: int = PORT_FLOOR) -> list[int]:
    """``count`` UDP ports from ``floor`` up that nobody has bound right now.

    Checked by binding, so another program may still grab one before rtpload does; rtpload
    then fails loudly naming the port rather than measuring the wrong thing.
    """
    ports: list[int] = []
    port = floor
    while len(ports) < count:
        if port > 32767:
            raise RuntimeError(f"not enough free UDP ports between {floor} and 32767")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                pass
            else:
                ports.append(port)
        port += 1
    return ports


def loopback_streams(calls: int, host: str = "127.0.0.1") -> list[Stream]:
    """Two streams per call sending straight to each other: the generator's own baseline."""
    ports = free_udp_ports(2 * calls, host)
    streams: list[Stream] = []
    for a, b in zip(ports[0::2], ports[1::2], strict=True):
        streams += [Stream(host, b, a), Stream(host, a, b)]
    return streams


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all its threads) so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # comm may contain spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def udp_drops() -> int | None:
    """System-wide UDP datagrams dropped for a full receive buffer (other traffic included)."""
    try:
        lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    except OSError:
        return None
    udp = [fields for fields in lines if fields and fields[0] == "Udp:"]
    if len(udp) < 2 or "RcvbufErrors" not in udp[0]:
        return None
    return int(udp[1][udp[0].index("RcvbufErrors")])


def _cpu_snapshot(pids: Iterable[int]) -> dict[int, float]:
    snapshot: dict[int, float] = {}
    for pid in pids:
        try:
            snapshot[pid] = cpu_seconds(pid)
        except (OSError, ValueError, IndexError):
            continue  # gone: reported as missing
    return snapshot


def rt_allowed() -> bool:
    """Whether SCHED_FIFO can be asked for (root, or an RLIMIT_RTPRIO above zero)."""
    if not hasattr(os, "sched_setscheduler"):
        return False
    return os.geteuid() == 0 or resource.getrlimit(resource.RLIMIT_RTPRIO)[0] > 0


def child_setup(cpus: set[int] | None, rt_priority: int = 0) -> Callable[[], None]:
    """What a measuring process needs before exec: CPUs, real-time priority, fd limit.

    On a shared machine, other work on the same CPU delays a normally scheduled generator
    by milliseconds, which would be charged to the relay as jitter. SCHED_FIFO makes it run
    as soon as a packet is due; it sleeps between packets and stops by itself, and the
    kernel's RT throttling (95 % of each second by default) bounds it anyway.
    """
    usable = (cpus & os.sched_getaffinity(0)) if cpus else set()
    rt = rt_priority if rt_priority > 0 and rt_allowed() else 0

    def setup() -> None:
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if usable:
            os.sched_setaffinity(0, usable)
        if rt:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(rt))

    return setup


def run_load(
    streams: Sequence[Stream],
    seconds: float,
    *,
    target_pids: Sequence[int] = (),
    mode: str = "symmetric",
    granularity_us: int = 100,
    drain_ms: int = 300,
    bind: str = "127.0.0.1",
    cpus: set[int] | None = None,
    rt_priority: int = 0,
) -> dict[str, Any]:
    """Run rtpload once over ``streams``; return its JSON plus the targets' CPU use.

    ``target_cpu`` maps each target PID to its CPU percent of one core over the sending
    phase (``None`` if it died meanwhile). ``cpus`` pins the tool to those CPUs;
    ``rt_priority`` > 0 runs it SCHED_FIFO at that priority when allowed.
    """
    binary = build_tool()
    drops_before = udp_drops()
    command = [
        str(binary),
        "-d", f"{seconds:g}",
        "-s", mode,
        "-g", str(granularity_us),
        "-w", str(drain_ms),
        "-b", bind,
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=child_setup(cpus, rt_priority),
    )
    assert process.stdin is not None
    assert process.stdout is not None
    assert process.stderr is not None
    timer = threading.Timer(seconds + drain_ms / 1000 + OVERRUN_S, process.kill)
    timer.start()
    try:
        process.stdin.write("".join(stream.line() for stream in streams))
        process.stdin.close()
        phases, errors = _follow_phases(process.stderr, target_pids)
        out = process.stdout.read()
        errors += process.stderr.read().splitlines()
        code = process.wait()
    finally:
        timer.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    if code != 0 or not out.strip():
        raise RuntimeError(f"rtpload failed (exit {code}): {' | '.join(errors)[-2000:]}")
    result: dict[str, Any] = json.loads(out)
    result["target_cpu_pct"] = _cpu_percent(phases, target_pids)
    if len(phases) >= 2:  # time.monotonic() bounds, for targets that sample their own lag
        result["sending_monotonic"] = [phases[0][0], phases[-1][0]]
    drops_after = udp_drops()
    if drops_before is not None and drops_after is not None:
        result["udp_rcvbuf_errors"] = drops_after - drops_before
    result["tool_rt_priority"] = rt_priority if rt_priority > 0 and rt_allowed() else 0
    if errors:
        result["tool_stderr"] = errors[:10]
    return result


Phase = tuple[float, dict[int, float]]


def _follow_phases(stderr: Any, pids: Sequence[int]) -> tuple[list[Phase], list[str]]:
    """Snapshot the targets' CPU at the 'sending' and 'sent' lines of the tool."""
    phases: list[Phase] = []
    errors: list[str] = []
    for raw in stderr:
        line = raw.rstrip("\n")
        if line in ("rtpload: sending", "rtpload: sent"):
            phases.append((time.monotonic(), _cpu_snapshot(pids)))
            if line == "rtpload: sent":
                break
        else:
            errors.append(line)
    return phases, errors


def _cpu_percent(phases: list[Phase], pids: Sequence[int]) -> dict[str, float | None]:
    if len(phases) < 2:
        return {str(pid): None for pid in pids}
    (t0, before), (t1, after) = phases[0], phases[-1]
    wall = max(t1 - t0, 1e-9)
    return {
        str(pid): (
            round(100 * (after[pid] - before[pid]) / wall, 1)
            if pid in before and pid in after
            else None
        )
        for pid in pids
    }


def read_streams(path: Path) -> list[Stream]:
    streams = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        try:
            host, send_port, local_port = line.split()
            streams.append(Stream(host, int(send_port), int(local_port)))
        except ValueError:
            raise SystemExit(f"{path}:{number}: expected 'SEND_IP SEND_PORT LOCAL_PORT'") from None
    return streams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--streams", type=Path, help="file of 'SEND_IP SEND_PORT LOCAL_PORT'")
    source.add_argument("--loopback", type=int, metavar="CALLS", help="baseline, no relay")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--pid", type=int, action="append", default=[], help="target PID")
    parser.add_argument("--mode", choices=["symmetric", "shared"], default="symmetric")
    parser.add_argument("--granularity-us", type=int, default=100)
    parser.add_argument("--drain-ms", type=int, default=300)
    parser.add_argument("--cpu", type=int, action="append", help="pin rtpload to this CPU")
    parser.add_argument("--rt", type=int, default=0, help="SCHED_FIFO priority (0: normal)")
    parser.add_argument("--build", action="store_true", help="rebuild the tool first")
    args = parser.parse_args()
    if args.build:
        build_tool(force=True)
    streams = read_streams(args.streams) if args.streams else loopback_streams(args.loopback)
    result = run_load(
        streams,
        args.seconds,
        target_pids=args.pid,
        mode=args.mode,
        granularity_us=args.granularity_us,
        drain_ms=args.drain_ms,
        cpus=set(args.cpu) if args.cpu else None,
        rt_priority=args.rt,
    )
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
