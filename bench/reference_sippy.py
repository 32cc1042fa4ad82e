"""Reference for the B2BUA bench: SIPp uac → sippy B2BUA (PyPI ``sippy``) → SIPp uas, calls/s.

sippy's full B2BUA (the ``b2bua`` console script of the ``sippy`` package, module
``sippy.b2bua``; ``--b2bua-flavour simple`` runs ``sippy.b2bua_simple`` instead) runs as a
subprocess of the venv's Python in the foreground, pinned to CPU 0, listening on a free
127.0.0.1 UDP port with a static route to the SIPp UAS, RADIUS authentication and accounting
off, its command socket and logs in a private temporary directory and its SIP log level at
WARN. ``sipp_ramp.ramp`` drives calls to it (Request-URI ``sip:[service]@<sippy>``), SIPp
pinned to CPU 1. One JSON line ``{"bench": "reference_sippy", ...}`` reports the highest clean
rate and sippy's version.

sippy is not a project dependency: install it into the venv by hand
(``.venv/bin/pip install sippy``); without it the line says ``skipped``.

Fairness note: SIPp's built-in scenarios write ``transport=UDP`` in Contact; sippy 2.5 then
does not complete the BYE. The ramp's scenarios write ``transport=udp`` by default (the same
messages are used for Pomelo and Kamailio); ``--transport-param UDP`` reproduces the failure.

Bounded: the ramp has a wall-time budget (about 3 minutes at ``--seconds 10``), every SIPp
run has its own timeouts, and sippy is stopped by PID in ``finally`` (SIGTERM, then SIGKILL:
sippy 2.5 does not always exit on SIGTERM). Loopback only.

    .venv/bin/python bench/reference_sippy.py [--seconds 10] [--confirm-seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import importlib.metadata
import importlib.util
import json
import os
import platform
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

SIPPY_RATES = "50,100,150,200,250,300,350,400,500,600"
FLAVOURS = {"full": "sippy.b2bua", "simple": "sippy.b2bua_simple"}


def sippy_version() -> str | None:
    try:
        return importlib.metadata.version("sippy")
    except importlib.metadata.PackageNotFoundError:
        return None


def udp_port_bound(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def b2bua_command(flavour: str, port: int, uas_port: int, rundir: Path) -> list[str]:
    module = FLAVOURS[flavour]
    launcher = [sys.executable, "-c", f"import sys; from {module} import main_func; main_func()"]
    if flavour == "simple":
        # b2bua_simple: -f foreground, -l/-p listen, -n next hop; no auth, no accounting.
        return [*launcher, "-f", "-l", "127.0.0.1", "-p", str(port), "-n", f"127.0.0.1:{uas_port}"]
    return [
        *launcher,
        "-f",
        "-l", "127.0.0.1",
        "-p", str(port),
        "-s", f"127.0.0.1:{uas_port}",  # static route: every call to the UAS
        "-u",  # no RADIUS authentication
        "-A", "0",  # no RADIUS accounting
        f"--b2bua_socket={rundir / 'b2bua.sock'}",
        f"--logfile={rundir / 'b2bua.log'}",
        f"--pidfile={rundir / 'b2bua.pid'}",
    ]  # fmt: skip


async def stop(process: asyncio.subprocess.Process, grace: float = 3.0) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


RunBody = Callable[[asyncio.subprocess.Process], Awaitable[dict[str, Any]]]


async def with_sippy(
    args: argparse.Namespace, port: int, uas_port: int, body: RunBody
) -> tuple[dict[str, Any], list[str]]:
    """Start a fresh sippy B2BUA on ``port``, ``await body(process)``, stop it (always).

    Returns the body's result and sippy's log lines.
    """
    pin = sipp_ramp.pin_prefix(args.sut_cpus or None)
    env = dict(os.environ)
    env.update(SIPLOG_BEND="stderr", SIPLOG_LVL=args.log_level, PYTHONUNBUFFERED="1")
    with tempfile.TemporaryDirectory(prefix="sippy-ref-") as tmp:
        rundir = Path(tmp)
        log_path = rundir / "sippy.log"
        command = [*pin, *b2bua_command(args.flavour, port, uas_port, rundir)]
        with log_path.open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=rundir,
                env=env,
            )
        try:
            deadline = time.monotonic() + 15
            while not udp_port_bound("127.0.0.1", port):
                if process.returncode is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"sippy b2bua did not start: {tail}")
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.3)
            outcome = await body(process)
        finally:
            await stop(process)
        log_lines = log_path.read_text(errors="replace").splitlines()
    return outcome, log_lines


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"bench": "reference_sippy", "system": "sippy"}
    version = sippy_version()
    if version is None or importlib.util.find_spec(FLAVOURS[args.flavour]) is None:
        result.update(
            skipped="sippy not installed in this Python (pip install sippy)", max_clean_cps=0
        )
        return result
    result.update(sippy_version=version, flavour=args.flavour, entry_point=FLAVOURS[args.flavour])
    port = args.port or sipp_ramp.free_udp_port()
    uas_port = args.uas_port or sipp_ramp.free_udp_port()
    result["sut_cpus"] = args.sut_cpus if sipp_ramp.pin_prefix(args.sut_cpus or None) else None

    def ramp_body(rates: list[int], seconds: float) -> RunBody:
        async def body(process: asyncio.subprocess.Process) -> dict[str, Any]:
            return await sipp_ramp.ramp(
                f"127.0.0.1:{port}",
                uas_port,
                rates=rates,
                seconds=seconds,
                service=args.service,
                request_uri=None,  # the B2BUA routes every call to the UAS
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
    ramp, log_lines = await with_sippy(args, port, uas_port, ramp_body(rates, args.seconds))
    result.update(ramp)
    if args.confirm_seconds > 0:

        async def run_at(rate: int) -> dict[str, Any]:
            sipp_ramp.stderr_log(f"confirm {rate}/s for {args.confirm_seconds:g}s, fresh sippy")
            outcome, more = await with_sippy(
                args, port, uas_port, ramp_body([rate], args.confirm_seconds)
            )
            log_lines.extend(more)
            return outcome

        result["confirm_seconds"] = args.confirm_seconds
        result.update(await sipp_ramp.confirm(run_at, ramp))
    result["bench"] = "reference_sippy"
    result["max_clean_cps"] = ramp.get("max_clean_cps", 0)
    problems = [line for line in log_lines if "Traceback" in line or "ERROR" in line]
    if problems:
        result["sippy_log_problems"] = {"count": len(problems), "first": problems[:3]}
        if "Traceback" in "\n".join(problems):
            start = next(i for i, line in enumerate(log_lines) if "Traceback" in line)
            result["sippy_log_problems"]["first_traceback"] = log_lines[start : start + 40]
    result["python"] = platform.python_version()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sipp_ramp.add_ramp_arguments(parser)
    parser.set_defaults(rates=SIPPY_RATES)
    parser.add_argument("--port", type=int, default=0, help="sippy UDP port (0 = a free one)")
    parser.add_argument("--flavour", choices=sorted(FLAVOURS), default="full")
    parser.add_argument("--log-level", default="WARN", help="sippy SIPLOG_LVL")
    parser.add_argument("--sut-cpus", default="0", help="taskset CPU list for sippy")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args))))


if __name__ == "__main__":
    main()
