"""Reference for the B2BUA bench: SIPp uac → Kamailio (stateful proxy) → SIPp uas, calls/s.

Kamailio (Debian package ``kamailio``; this script installs nothing) runs in the foreground
with ``bench/reference/kamailio.cfg`` (tm + t_relay, record-route, sanity; no DB, no auth),
listening on a free 127.0.0.1 UDP port, pinned to CPU 0 with a private runtime directory and
small memory pools. ``sipp_ramp.ramp`` drives calls through it with the Request-URI addressing
the SIPp UAS directly (a proxy relays to the R-URI), SIPp pinned to CPU 1. One JSON line
``{"bench": "reference_kamailio", ...}`` reports the highest clean rate and Kamailio's version.

Bounded: the ramp has a wall-time budget (default about 3 minutes at ``--seconds 10``), every
SIPp run has its own timeouts, and Kamailio and all its children are stopped by PID in
``finally``. Loopback only.

    .venv/bin/python bench/reference_kamailio.py [--seconds 10] [--confirm-seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sipp_ramp

CFG = Path(__file__).resolve().parent / "reference" / "kamailio.cfg"
KAMAILIO_RATES = "500,1000,2000,2500,3000,3500,4000,5000"


def find_kamailio() -> str | None:
    return shutil.which("kamailio") or next(
        (p for p in ("/usr/sbin/kamailio", "/usr/local/sbin/kamailio") if os.access(p, os.X_OK)),
        None,
    )


def kamailio_version(binary: str) -> str | None:
    try:
        out = subprocess.run(
            [binary, "-v"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"version:\s*kamailio\s+(\S+)", out)
    return match.group(1) if match else None


def udp_port_bound(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def descendants(pid: int) -> list[int]:
    table = sipp_ramp._proc_table()
    found: list[int] = []
    stack = [pid]
    while stack:
        parent = stack.pop()
        for child, (ppid, _) in table.items():
            if ppid == parent and child not in found:
                found.append(child)
                stack.append(child)
    return found


async def stop_tree(process: asyncio.subprocess.Process, grace: float = 5.0) -> None:
    """SIGTERM the main process (Kamailio stops its children), then SIGKILL any survivor."""
    children = descendants(process.pid) if process.returncode is None else []
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    deadline = time.monotonic() + 2
    for pid in children:
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            await asyncio.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


RunBody = Callable[[int, asyncio.subprocess.Process], Awaitable[dict[str, Any]]]


async def with_kamailio(
    binary: str, args: argparse.Namespace, port: int, body: RunBody
) -> tuple[dict[str, Any], list[str]]:
    """Start a fresh Kamailio on ``port``, ``await body(port, process)``, stop it (always).

    Returns the body's result and Kamailio's ERROR/CRITICAL log lines.
    """
    pin = sipp_ramp.pin_prefix(args.sut_cpus or None)
    with tempfile.TemporaryDirectory(prefix="kamailio-ref-") as tmp:
        rundir = Path(tmp)
        log_path = rundir / "kamailio.log"
        command = [
            *pin, binary,
            "-DD", "-E",
            "-f", str(CFG),
            "-A", f"SIP_PORT={port}",
            "-Y", str(rundir),
            "-P", str(rundir / "kamailio.pid"),
            "-w", str(rundir),
            "-m", str(args.shm_mb),
            "-M", str(args.pkg_mb),
            "-n", str(args.children),
        ]  # fmt: skip
        with log_path.open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=rundir,
            )
        try:
            deadline = time.monotonic() + 10
            while not udp_port_bound("127.0.0.1", port):
                if process.returncode is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"kamailio did not start: {tail}")
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # children forked and ready
            outcome = await body(port, process)
        finally:
            await stop_tree(process)
        errors = [
            line
            for line in log_path.read_text(errors="replace").splitlines()
            if " ERROR: " in line or "CRITICAL" in line
        ]
    return outcome, errors


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"bench": "reference_kamailio", "system": "kamailio"}
    binary = find_kamailio()
    if binary is None:
        result.update(
            skipped="kamailio not installed (Debian: apt-get install -y kamailio)",
            max_clean_cps=0,
        )
        return result
    result["kamailio_version"] = kamailio_version(binary)
    result["config"] = str(CFG.relative_to(CFG.parents[2]))
    result.update(children=args.children, shm_mb=args.shm_mb, pkg_mb=args.pkg_mb)
    port = args.port or sipp_ramp.free_udp_port()
    uas_port = args.uas_port or sipp_ramp.free_udp_port()
    result["sut_cpus"] = args.sut_cpus if sipp_ramp.pin_prefix(args.sut_cpus or None) else None

    def ramp_body(rates: list[int], seconds: float) -> RunBody:
        async def body(port: int, process: asyncio.subprocess.Process) -> dict[str, Any]:
            result["processes"] = 1 + len(descendants(process.pid))
            return await sipp_ramp.ramp(
                f"127.0.0.1:{port}",
                uas_port,
                rates=rates,
                seconds=seconds,
                service=args.service,
                request_uri=sipp_ramp.uas_request_uri(uas_port),
                pause_ms=args.pause_ms,
                transport_param=args.transport_param,
                sipp_cpus=args.sipp_cpus or None,
                sut_pids=[process.pid],
                alive=lambda: process.returncode is None,
                budget_s=args.budget,
                log=sipp_ramp.stderr_log,
                keep_dir=args.keep,
            )

        return body

    rates = sipp_ramp.parse_rates(args.rates, args.max_rate)
    ramp, errors = await with_kamailio(binary, args, port, ramp_body(rates, args.seconds))
    result.update(ramp)
    if args.confirm_seconds > 0:

        async def run_at(rate: int) -> dict[str, Any]:
            sipp_ramp.stderr_log(f"confirm {rate}/s for {args.confirm_seconds:g}s, fresh Kamailio")
            outcome, more = await with_kamailio(
                binary, args, port, ramp_body([rate], args.confirm_seconds)
            )
            errors.extend(more)
            return outcome

        result["confirm_seconds"] = args.confirm_seconds
        result.update(await sipp_ramp.confirm(run_at, ramp))
    result["bench"] = "reference_kamailio"
    result["max_clean_cps"] = ramp.get("max_clean_cps", 0)
    if errors:
        result["kamailio_errors"] = {"count": len(errors), "first": errors[:5]}
    result["python"] = platform.python_version()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sipp_ramp.add_ramp_arguments(parser)
    parser.set_defaults(rates=KAMAILIO_RATES)
    parser.add_argument("--port", type=int, default=0, help="Kamailio UDP port (0 = free one)")
    parser.add_argument("--children", type=int, default=1, help="UDP worker processes (-n)")
    parser.add_argument("--shm-mb", type=int, default=512, help="shared memory, MB (-m)")
    parser.add_argument("--pkg-mb", type=int, default=8, help="private memory per process (-M)")
    parser.add_argument("--sut-cpus", default="0", help="taskset CPU list for Kamailio")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args))))


if __name__ == "__main__":
    main()
