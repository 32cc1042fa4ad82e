"""Reference for the media relay bench: rtpload → rtpengine (userspace) → rtpload, calls ramp.

rtpengine (Debian ``rtpengine-daemon``; this script installs nothing) runs in the
foreground without a config file, without the kernel forwarding table (``--table=-1``:
every packet goes through userspace, as it would in Pomelo), on 127.0.0.1 with its own RTP
port range, an ``ng`` control port and one worker thread (``--num-threads=1``), pinned to
CPU 0 so that it is comparable with one Python core. Calls are created over the ng protocol
(bencoded dictionaries over UDP: ``offer``/``answer``, ``delete`` at the end); each call
has two rtpload streams, one per direction, each sending to the port rtpengine announced
to the other side and receiving on the port its own SDP announced (symmetric RTP).

For each step of the ramp (calls), rtpload (pinned to CPU 1) runs the streams through
rtpengine, then straight to each other (the generator's own baseline at that load, unless
``--no-baseline``). One JSON line per step on stderr and a summary on stdout: calls,
packets/s, loss %, RFC 3550 jitter p99 (ms, across streams) through the relay and added by
it (minus the baseline), rtpengine's CPU % of one core (all threads, /proc/<pid>/stat over
the sending phase), and ``max_clean_calls``: the most calls with loss < 0.1 % and added
jitter p99 < 5 ms, the generator itself keeping time (send lag p99 < 2 ms). One call is
two streams, so 1,000 calls are 100,000 packets/s into the relay and as many out.

Both rtpengine and rtpload run SCHED_FIFO (``--rt-priority``, 20 by default, when
allowed): on a shared machine, other work on the same CPU otherwise adds milliseconds of
scheduling delay that would be charged to the relay. The kernel's RT throttling leaves 5 %
of each CPU to everything else, so a saturated relay shows about 95 % CPU, not 100 %.

Bounded: each rtpload run stops by itself (and is killed if it overruns), the ramp skips
steps beyond a wall-time budget and stops after two unclean steps in a row, and rtpengine
is stopped by its PID in ``finally`` (also on error, Ctrl-C or SIGTERM). Loopback only.

    .venv/bin/python bench/reference_rtpengine.py [--quick] [--seconds 5] [--steps 100,250]
    .venv/bin/python bench/reference_rtpengine.py --baseline   # rtpload looped back only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rtp_load
from rtp_load import Stream

HOST = "127.0.0.1"
STEPS = (100, 250, 500, 1000, 1250, 1500, 2000)
QUICK_STEPS = (100, 500)
RELAY_PORTS = (10000, 19999)  # rtpengine's RTP range; rtpload uses 20000 and up
MAX_LOSS_PCT = 0.1
MAX_ADDED_JITTER_MS = 5.0
GENERATOR_MAX_LAG_MS = 2.0
NG_WINDOW = 64  # ng requests in flight
NG_RETRY_S = 0.5
NG_TRIES = 6

# -- bencode (the ng protocol's encoding) ------------------------------------------------

Bencodable = bytes | str | int | list["Bencodable"] | dict[str, "Bencodable"]


def bencode(value: Bencodable) -> bytes:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(item) for item in value) + b"e"
    if isinstance(value, dict):  # keys sorted as raw bytes, as the format requires
        items = sorted((key.encode(), item) for key, item in value.items())
        return b"d" + b"".join(bencode(key) + bencode(item) for key, item in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    value, end = _bdecode_at(data, 0)
    if end != len(data):
        raise ValueError("trailing bytes after bencoded value")
    return value


def _bdecode_at(data: bytes, i: int) -> tuple[Any, int]:
    lead = data[i : i + 1]
    if lead == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1 : end]), end + 1
    if lead == b"l":
        items, i = [], i + 1
        while data[i : i + 1] != b"e":
            item, i = _bdecode_at(data, i)
            items.append(item)
        return items, i + 1
    if lead == b"d":
        mapping, i = {}, i + 1
        while data[i : i + 1] != b"e":
            key, i = _bdecode_at(data, i)
            mapping[key.decode() if isinstance(key, bytes) else key], i = _bdecode_at(data, i)
        return mapping, i + 1
    if lead.isdigit():
        colon = data.index(b":", i)
        start = colon + 1
        end = start + int(data[i:colon])
        if end > len(data):
            raise ValueError("bencoded string runs past the end")
        return data[start:end], end
    raise ValueError(f"bad bencode at byte {i}")


# -- ng control client -------------------------------------------------------------------


class NgClient:
    """Pipelined ng requests over UDP with retransmission (rtpengine caches by cookie)."""

    __slots__ = ("_address", "_sock")

    def __init__(self, port: int, host: str = HOST) -> None:
        self._address = (host, port)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, 0))

    def close(self) -> None:
        self._sock.close()

    def request(self, command: dict[str, Bencodable]) -> dict[str, Any]:
        return self.requests([command])[0]

    def requests(self, commands: list[dict[str, Bencodable]]) -> list[dict[str, Any]]:
        """Replies in order; raises if any is missing after retries or says error."""
        replies: dict[int, dict[str, Any]] = {}
        sent_at: dict[bytes, tuple[int, float, int]] = {}  # cookie -> index, time, tries
        prefix = secrets.token_hex(4)
        messages = {
            f"{prefix}_{i}".encode(): (i, bencode(command)) for i, command in enumerate(commands)
        }
        pending = iter(messages.items())
        exhausted = False
        while len(replies) < len(commands):
            while not exhausted and len(sent_at) < NG_WINDOW:
                item = next(pending, None)
                if item is None:
                    exhausted = True
                    break
                cookie, (index, body) = item
                self._send(cookie, body)
                sent_at[cookie] = (index, time.monotonic(), 1)
            self._receive(sent_at, replies)
            self._retransmit(sent_at, messages)
        for index, reply in sorted(replies.items()):
            if reply.get("result") not in (b"ok", b"pong"):
                reason = reply.get("error-reason", b"?").decode(errors="replace")
                raise RuntimeError(f"ng {commands[index].get('command')!r} failed: {reason}")
        return [replies[i] for i in range(len(commands))]

    def _send(self, cookie: bytes, body: bytes) -> None:
        self._sock.sendto(cookie + b" " + body, self._address)

    def _receive(
        self, sent_at: dict[bytes, tuple[int, float, int]], replies: dict[int, dict[str, Any]]
    ) -> None:
        self._sock.settimeout(0.05)
        with contextlib.suppress(TimeoutError, BlockingIOError):
            while sent_at:
                data = self._sock.recv(65535)
                cookie, _, body = data.partition(b" ")
                entry = sent_at.pop(cookie, None)
                if entry is not None:
                    replies[entry[0]] = bdecode(body)
                self._sock.settimeout(0)  # then take whatever else is already queued

    def _retransmit(
        self,
        sent_at: dict[bytes, tuple[int, float, int]],
        messages: dict[bytes, tuple[int, bytes]],
    ) -> None:
        now = time.monotonic()
        for cookie, (index, when, tries) in list(sent_at.items()):
            if now - when < NG_RETRY_S:
                continue
            if tries >= NG_TRIES:
                raise RuntimeError("rtpengine does not answer ng requests")
            self._send(cookie, messages[cookie][1])
            sent_at[cookie] = (index, now, tries + 1)


# -- rtpengine process -------------------------------------------------------------------


def find_rtpengine() -> str | None:
    return shutil.which("rtpengine") or next(
        (p for p in ("/usr/bin/rtpengine", "/usr/sbin/rtpengine") if os.access(p, os.X_OK)),
        None,
    )


def rtpengine_version(binary: str) -> str | None:
    try:
        done = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"Version:\s*(\S+)", done.stdout + done.stderr)
    return match.group(1) if match else None


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def running_rtpengine(
    binary: str, log_path: Path, cpu: int | None, rt_priority: int
) -> Iterator[tuple[subprocess.Popen[bytes], NgClient]]:
    """A fresh rtpengine answering ng pings; stopped by its PID however the block ends."""
    ng_port = free_udp_port()
    command = [
        binary,
        "--config-file=none",
        "--foreground",
        "--log-stderr",
        "--no-log-timestamps",
        "--log-level=4",
        "--table=-1",
        f"--interface={HOST}",
        f"--listen-ng={HOST}:{ng_port}",
        f"--port-min={RELAY_PORTS[0]}",
        f"--port-max={RELAY_PORTS[1]}",
        "--num-threads=1",
        "--media-num-threads=1",
        "--delete-delay=0",
        "--timeout=600",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=rtp_load.child_setup({cpu} if cpu is not None else None, rt_priority),
        )
    client = NgClient(ng_port)
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"rtpengine exited: {_tail(log_path)}")
            try:
                client.request({"command": "ping"})
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"rtpengine not answering: {_tail(log_path)}") from None
        yield process, client
    finally:
        client.close()
        stop(process)


def stop(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait()


def _tail(path: Path, size: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""


# -- calls -------------------------------------------------------------------------------


def sdp(port: int, session: int) -> str:
    return (
        "v=0\r\n"
        f"o=- {session} 1 IN IP4 {HOST}\r\n"
        "s=rtpload\r\n"
        f"c=IN IP4 {HOST}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=ptime:20\r\n"
        "a=sendrecv\r\n"
    )


def media_address(body: bytes) -> tuple[str, int]:
    text = body.decode()
    port = re.search(r"^m=audio (\d+) ", text, re.MULTILINE)
    host = re.search(r"^c=IN IP4 (\S+)", text, re.MULTILINE)
    if port is None or host is None:
        raise RuntimeError(f"no audio address in rtpengine's SDP: {text!r}")
    return host.group(1), int(port.group(1))


class Calls:
    """Calls through rtpengine, grown step by step; two rtpload streams per call."""

    __slots__ = ("_client", "_ids", "_tag", "streams")

    def __init__(self, client: NgClient) -> None:
        self._client = client
        self._tag = secrets.token_hex(4)
        self._ids: list[str] = []
        self.streams: list[Stream] = []

    def grow(self, total: int) -> None:
        new = total - len(self._ids)
        if new <= 0:
            return
        ports = rtp_load.free_udp_ports(2 * new, HOST, self._next_port_floor())
        first = len(self._ids)
        ids = [f"rtpload-{self._tag}-{first + i}" for i in range(new)]
        offers: list[dict[str, Bencodable]] = [
            {
                "command": "offer",
                "call-id": call_id,
                "from-tag": "caller",
                "sdp": sdp(ports[2 * i], first + i),
                "replace": ["origin"],
            }
            for i, call_id in enumerate(ids)
        ]
        offered = self._client.requests(offers)
        answers: list[dict[str, Bencodable]] = [
            {
                "command": "answer",
                "call-id": call_id,
                "from-tag": "caller",
                "to-tag": "callee",
                "sdp": sdp(ports[2 * i + 1], first + i),
                "replace": ["origin"],
            }
            for i, call_id in enumerate(ids)
        ]
        answered = self._client.requests(answers)
        for i in range(new):
            caller_port, callee_port = ports[2 * i], ports[2 * i + 1]
            to_callee = media_address(offered[i]["sdp"])  # where the callee must send
            to_caller = media_address(answered[i]["sdp"])  # where the caller must send
            self.streams += [
                Stream(to_caller[0], to_caller[1], caller_port),
                Stream(to_callee[0], to_callee[1], callee_port),
            ]
        self._ids += ids

    def _next_port_floor(self) -> int:
        return max((s.local_port for s in self.streams), default=rtp_load.PORT_FLOOR - 1) + 1

    def delete_all(self) -> None:
        if self._ids:
            self._client.requests(
                [
                    {"command": "delete", "call-id": call_id, "from-tag": "caller"}
                    for call_id in self._ids
                ]
            )
        self._ids.clear()
        self.streams.clear()


# -- the ramp ----------------------------------------------------------------------------


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def baseline_step(calls: int, args: argparse.Namespace) -> dict[str, Any]:
    run = rtp_load.run_load(
        rtp_load.loopback_streams(calls, HOST),
        args.seconds,
        cpus=_cpus(args.tool_cpu),
        rt_priority=args.rt_priority,
    )
    return {"calls": calls, **_figures(run)}


def _figures(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "packets_per_s": run["packets_per_s"],
        "loss_pct": max(run["lost_pct"], run["seq_lost_pct"]),
        "jitter_p99_ms": run["jitter_ms"]["p99"],
        "jitter_max_ms": run["jitter_ms"]["max"],
        "duplicated": run["duplicated"],
        "reordered": run["reordered"],
        "send_lag_p99_ms": run["send_lag_ms"]["p99"],
        "rtpload_cpu_pct": run["cpu_pct"],
        "udp_rcvbuf_errors": run.get("udp_rcvbuf_errors"),
        # a generator running late measures itself, not the relay
        "generator_ok": run["send_lag_ms"]["p99"] < GENERATOR_MAX_LAG_MS,
    }


def _cpus(cpu: int) -> set[int] | None:
    return {cpu} if cpu >= 0 else None


def relay_step(
    calls: Calls, process: subprocess.Popen[bytes], count: int, args: argparse.Namespace
) -> dict[str, Any]:
    calls.grow(count)
    run = rtp_load.run_load(
        calls.streams[: 2 * count],  # the ramp may also go down: calls are only ever added
        args.seconds,
        target_pids=[process.pid],
        cpus=_cpus(args.tool_cpu),
        rt_priority=args.rt_priority,
    )
    step = {"calls": count, **_figures(run)}
    step["rtpengine_cpu_pct"] = run["target_cpu_pct"][str(process.pid)]
    if args.baseline_each:
        base = baseline_step(count, args)
        step["baseline_jitter_p99_ms"] = base["jitter_p99_ms"]
        step["added_jitter_p99_ms"] = round(
            max(0.0, step["jitter_p99_ms"] - base["jitter_p99_ms"]), 4
        )
    else:
        step["added_jitter_p99_ms"] = step["jitter_p99_ms"]
    step["clean"] = (
        step["loss_pct"] < MAX_LOSS_PCT
        and step["added_jitter_p99_ms"] < MAX_ADDED_JITTER_MS
        and step["generator_ok"]
    )
    return step


def planned_run_s(args: argparse.Namespace) -> float:
    runs = 2 if args.baseline_each else 1
    return runs * (float(args.seconds) + 1.0)


def ramp(
    steps: list[int], args: argparse.Namespace, run_step: Callable[[int], dict[str, Any]]
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + args.budget
    unclean_in_a_row = 0
    for count in steps:
        if time.monotonic() + planned_run_s(args) > deadline:
            log(f"budget of {args.budget:g}s reached: skipping {count} calls and above")
            break
        step = run_retrying(run_step, count, getattr(args, "retries", 0))
        results.append(step)
        log(json.dumps(step))
        unclean_in_a_row = 0 if step.get("clean", True) else unclean_in_a_row + 1
        if unclean_in_a_row >= 2:
            log("two unclean steps in a row: stopping the ramp")
            break
    return results


def run_retrying(
    run_step: Callable[[int], dict[str, Any]], count: int, retries: int
) -> dict[str, Any]:
    """Run a step again while unclean, up to ``retries`` times: on a shared machine noise
    only ever adds, so one clean run shows the relay can do it. ``tries`` says how many."""
    step = run_step(count)
    tries = 1
    while not step.get("clean", True) and tries <= retries:
        log(f"{count} calls unclean: trying again ({json.dumps(step)[:300]})")
        step = run_step(count)
        tries += 1
    step["tries"] = tries
    return step


def bench_rtpengine(args: argparse.Namespace, steps: list[int]) -> dict[str, Any]:
    result: dict[str, Any] = {"bench": "reference_rtpengine", "system": "rtpengine"}
    binary = find_rtpengine()
    if binary is None:
        result["skipped"] = "rtpengine not installed (Debian: apt-get install rtpengine-daemon)"
        result["max_clean_calls"] = 0
        return result
    result["rtpengine_version"] = rtpengine_version(binary)
    result["options"] = "userspace (--table=-1), --num-threads=1, --media-num-threads=1"
    result.update(
        relay_cpu=args.relay_cpu,
        tool_cpu=args.tool_cpu,
        seconds_per_step=args.seconds,
        rt_priority=args.rt_priority if rtp_load.rt_allowed() else 0,
    )
    rtp_load.build_tool()
    with tempfile.TemporaryDirectory(prefix="rtpengine-ref-") as tmp:
        log_path = Path(tmp) / "rtpengine.log"
        relay_cpu = _cpu_or_none(args.relay_cpu)
        with running_rtpengine(binary, log_path, relay_cpu, args.rt_priority) as (proc, ng):
            calls = Calls(ng)

            def run_step(count: int) -> dict[str, Any]:
                if proc.poll() is not None:
                    raise RuntimeError(f"rtpengine died: {_tail(log_path)}")
                return relay_step(calls, proc, count, args)

            try:
                result["steps"] = ramp(steps, args, run_step)
            finally:
                with contextlib.suppress(RuntimeError, OSError):
                    calls.delete_all()
        errors = [line for line in _tail(log_path, 1 << 20).splitlines() if "ERR" in line]
    if errors:
        result["rtpengine_errors"] = {"count": len(errors), "first": errors[:5]}
    clean = [step["calls"] for step in result["steps"] if step["clean"]]
    result["max_clean_calls"] = max(clean, default=0)
    result["criteria"] = {
        "loss_pct_below": MAX_LOSS_PCT,
        "added_jitter_p99_ms_below": MAX_ADDED_JITTER_MS,
        "generator_send_lag_p99_ms_below": GENERATOR_MAX_LAG_MS,
    }
    return result


def bench_baseline(args: argparse.Namespace, steps: list[int]) -> dict[str, Any]:
    rtp_load.build_tool()
    return {
        "bench": "rtpload_baseline",
        "tool_cpu": args.tool_cpu,
        "seconds_per_step": args.seconds,
        "rt_priority": args.rt_priority if rtp_load.rt_allowed() else 0,
        "steps": ramp(steps, args, lambda count: baseline_step(count, args)),
    }


def _cpu_or_none(cpu: int) -> int | None:
    return cpu if cpu >= 0 and cpu in os.sched_getaffinity(0) else None


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop rtpengine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="about 10 s smoke run")
    parser.add_argument("--baseline", action="store_true", help="rtpload looped back only")
    parser.add_argument("--no-baseline", dest="baseline_each", action="store_false")
    parser.add_argument("--steps", help="comma-separated call counts")
    parser.add_argument("--seconds", type=float, default=5.0, help="per step")
    parser.add_argument("--budget", type=float, default=240.0, help="wall seconds, ramp")
    parser.add_argument("--retries", type=int, default=0, help="reruns of an unclean step")
    parser.add_argument("--relay-cpu", type=int, default=0, help="-1: do not pin")
    parser.add_argument("--tool-cpu", type=int, default=1, help="-1: do not pin")
    parser.add_argument(
        "--rt-priority",
        type=int,
        default=20,
        help="SCHED_FIFO priority for rtpengine and rtpload when allowed (0: normal)",
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds = min(args.seconds, 1.5)
        args.budget = min(args.budget, 20.0)
    steps = [int(s) for s in args.steps.split(",")] if args.steps else None
    steps = steps or list(QUICK_STEPS if args.quick else STEPS)
    if args.tool_cpu >= 0 and args.tool_cpu not in os.sched_getaffinity(0):
        args.tool_cpu = -1
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    result = bench_baseline(args, steps) if args.baseline else bench_rtpengine(args, steps)
    result["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
