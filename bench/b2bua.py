"""B2BUA call throughput: SIPp phone → Pomelo → SIPp phone, with CDRs and events written.

The full call path runs in this process: a ``SipServer`` with the ``CallService``, digest
authentication of every INVITE (407 round trip), routing through the configuration cache,
the callee reached through the location, and per call the CallOffered/CallRingingStarted/
CallAnswered/CallEnded events and the CDR row committed to SQLite by the recorder. SIPp's
``uac``-style scenario (authenticating, INVITE/ACK/BYE) drives it at increasing rates for
``--seconds`` each; SIPp's built-in ``uas`` answers as the callee.

The run stops at the first rate with a failed call or that SIPp could not sustain (it took
more than 10 % longer than nominal, plus a second for start-up and the last calls). It is
done once on asyncio and once on uvloop (each in a fresh subprocess, so one loop's warm
caches cannot help the other) and prints one JSON line with, per loop, the
highest rate sustained with zero failed calls, every run's figures, and whether every call's
CDR was written. Bounded: about ``2 × rates × (seconds + 3)`` seconds; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

CALLER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="caller">
  <send retrans="500"><![CDATA[
      INVITE sip:[field1]@[field0] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[field2]@[field0]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field1]@[field0]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:[field2]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

SDP
    ]]></send>
  <recv response="100" optional="true"/>
  <recv response="407" auth="true"/>
  <send><![CDATA[
      ACK sip:[field1]@[field0] SIP/2.0
      [last_Via:]
      From: <sip:[field2]@[field0]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
  <send retrans="500"><![CDATA[
      INVITE sip:[field1]@[field0] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-[pid]-[call_number]-inv2
      From: <sip:[field2]@[field0]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field1]@[field0]>
      Call-ID: [call_id]
      CSeq: 2 INVITE
      Contact: <sip:[field2]@[local_ip]:[local_port]>
      [field3]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

SDP
    ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true"/>
  <send><![CDATA[
      ACK sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[field2]@[field0]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field1]@[field0]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
  <pause milliseconds="200"/>
  <send retrans="500"><![CDATA[
      BYE sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[field2]@[field0]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field1]@[field0]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 3 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
  <recv response="200"/>
</scenario>
""".replace(
    "SDP\n",
    "v=0\no=u 1 1 IN IP4 [local_ip]\ns=-\nc=IN IP4 [media_ip]\nt=0 0\n"
    "m=audio [media_port] RTP/AVP 0\na=rtpmap:0 PCMU/8000\n",
)
PASSWORD = "bench-sip-password-201"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def read_stats(path: Path) -> dict[str, int]:
    """Last row of SIPp's ``-trace_stat`` CSV: cumulative counters."""
    wanted = {"SuccessfulCall(C)": "ok", "FailedCall(C)": "failed", "Retransmissions(C)": "rtx"}
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle, delimiter=";"))
    except OSError:
        return {}
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    result: dict[str, int] = {}
    for column, name in wanted.items():
        if column in header and last[header.index(column)].strip().isdigit():
            result[name] = int(last[header.index(column)])
    return result


class Location:
    def __init__(self, port: int) -> None:
        from pomelo.pbx.location import Contact

        self._contact = Contact(
            uri=f"sip:uas@127.0.0.1:{port}",
            transport="UDP",
            source=("127.0.0.1", port),
            connection=None,
            expires_at=time.time() + 86400,
        )
        self.callee_id = ""

    def contacts(self, account_id: str) -> list[Any]:
        return [self._contact] if account_id == self.callee_id else []


MEDIA_ANCHOR = True


async def setup(workdir: Path) -> tuple[Any, Any, str]:
    """A platform on a fresh SQLite database with one tenant and extensions 201 and 202."""
    from pomelo.app import build_platform
    from pomelo.auth.access import Actor
    from pomelo.config import load_settings
    from pomelo.pbx.schemas import SipAccountCreate

    settings = load_settings(
        mode="production",
        secret_key="bench-secret-0123456789abcdef",
        database_url=f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
        data_dir=workdir,
        sip_enabled=False,
        password_hash_time_cost=1,
        password_hash_memory_kib=8,
        media_anchor=MEDIA_ANCHOR,
        rtp_port_min=40000,
        rtp_port_max=59999,
    )
    plat = build_platform(settings)
    await plat.start()
    tenant = await plat.directory.create_tenant("bench", "Bench", "UTC")
    system = Actor.system(tenant.id)
    accounts = {}
    for ext in ("201", "202"):
        created = await plat.pbx.create_account(
            system, SipAccountCreate(extension=ext, password=PASSWORD)
        )
        accounts[ext] = created["id"]
    await plat.sip_cache.reload()
    return plat, accounts, tenant.id


async def run_rate(
    sipp: str, port: int, rate: int, seconds: float, workdir: Path
) -> dict[str, Any]:
    calls = max(1, int(rate * seconds))
    stat_file = workdir / f"stat_{rate}.csv"
    command = [
        sipp, f"127.0.0.1:{port}",
        "-sf", str(workdir / "caller.xml"),
        "-inf", str(workdir / "users.csv"),
        "-i", "127.0.0.1", "-p", str(free_udp_port()),
        "-r", str(rate), "-m", str(calls), "-l", str(max(100, rate * 4)),
        "-timeout", f"{int(seconds) + 20}s", "-timeout_error", "-nostdin",
        "-trace_stat", "-stf", str(stat_file), "-fd", "1",
    ]  # fmt: skip
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=workdir,
    )
    try:
        code = await asyncio.wait_for(process.wait(), seconds + 30)
    except TimeoutError:
        code = -9
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    elapsed = time.perf_counter() - started
    stats = read_stats(stat_file)
    ok = stats.get("ok", 0)
    return {
        "rate": rate,
        "calls": calls,
        "ok": ok,
        "failed": stats.get("failed", calls - ok),
        "retrans": stats.get("rtx"),
        "exit": code,
        "seconds": round(elapsed, 2),
        "achieved_cps": round(ok / elapsed, 1) if elapsed > 0 else None,
    }


async def bench(rates: list[int], seconds: float) -> dict[str, Any]:
    from sqlalchemy import func, select

    from pomelo.core.clock import SystemClock
    from pomelo.pbx.calls import CallService
    from pomelo.pbx.cdr import CallRecorder
    from pomelo.pbx.cdr_models import CallRecord
    from pomelo.pbx.routing import DbCallDirectory, Router
    from pomelo.pbx.server import SipServer
    from pomelo.runtime import tune_gc
    from pomelo.sip.digest import DigestAlgorithm

    sipp = shutil.which("sipp")
    if sipp is None:
        return {"skipped": "sipp not installed (apt: sip-tester)"}
    runs: list[dict[str, Any]] = []
    best = 0
    with tempfile.TemporaryDirectory(prefix="pomelo-b2bua-") as tmp:
        workdir = Path(tmp)
        plat, accounts, _tenant = await setup(workdir)
        uas_port = free_udp_port()
        location = Location(uas_port)
        location.callee_id = accounts["202"]
        directory = DbCallDirectory(plat.db)
        router = Router(
            plat.sip_cache,
            directory,
            secret=b"bench-nonce-secret-0123456789abcd",
            algorithms=(DigestAlgorithm.MD5, DigestAlgorithm.SHA256),
        )
        sip = SipServer("127.0.0.1", 0, transports=("UDP",))
        recorder = CallRecorder(plat.uow, directory)
        service = CallService(sip.endpoint, router, location, recorder, clock=SystemClock())
        service.install(sip)
        await sip.start()
        (workdir / "caller.xml").write_text(CALLER)
        auth = f"[authentication username=201 password={PASSWORD}]"
        (workdir / "users.csv").write_text(f"SEQUENTIAL\nbench.sip;202;201;{auth};\n")
        uas = await asyncio.create_subprocess_exec(
            sipp, "-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port), "-nostdin",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, cwd=workdir,
        )  # fmt: skip
        tune_gc()
        try:
            await asyncio.sleep(0.5)
            for rate in rates:
                run = await run_rate(sipp, sip.port, rate, seconds, workdir)
                run["recorder_backlog_after"] = recorder.backlog
                runs.append(run)
                # SIPp kept the pace when it finished within 10 % of the nominal time plus
                # one second (start-up and the last calls' own 0.2 s + signalling).
                run["sustained"] = run["seconds"] <= seconds * 1.1 + 1.0
                if run["exit"] != 0 or run["failed"] or run["ok"] < run["calls"]:
                    break
                if not run["sustained"]:
                    break
                best = rate
                await asyncio.sleep(1.0)
        finally:
            uas.kill()
            await uas.wait()
            await service.stop()
            await sip.stop()
            async with plat.db.session() as session:
                cdrs = await session.scalar(select(func.count()).select_from(CallRecord))
            await plat.stop()
    total_ok = sum(r["ok"] for r in runs)
    return {
        "max_rate_zero_failures": best,
        "runs": runs,
        "cdrs_written": cdrs,
        "calls_ok": total_ok,
        "events_written": recorder.written,
        "events_failed": recorder.failed,
    }


def one_loop(loop: str, rates: list[int], seconds: float) -> dict[str, Any]:
    if loop == "uvloop":
        import uvloop

        return uvloop.run(bench(rates, seconds))
    return asyncio.run(bench(rates, seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rates", default="100,200,300,400,500,600,700,800,1000")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], help=argparse.SUPPRESS)
    parser.add_argument(
        "--media",
        choices=["anchored", "passthrough"],
        default="anchored",
        help="anchored: two RTP sockets and SDP rewriting per call (the default); passthrough: "
        "SDP relayed unchanged, as before the media engine",
    )
    parser.add_argument("--loops", default="asyncio,uvloop")
    args = parser.parse_args()
    global MEDIA_ANCHOR
    MEDIA_ANCHOR = args.media == "anchored"
    rates = [int(part) for part in args.rates.split(",") if part.strip()]
    if args.loop:  # child: one loop, JSON on stdout
        print(json.dumps(one_loop(args.loop, rates, args.seconds)))
        return
    result: dict[str, Any] = {
        "bench": "b2bua",
        "python": platform.python_version(),
        "seconds_per_rate": args.seconds,
        "path": "SIPp uac (digest 407) -> Pomelo B2BUA -> SIPp uas, CDR + events on SQLite",
        "media": args.media,
    }
    loops = [loop for loop in args.loops.split(",") if loop]
    budget = len(rates) * (args.seconds + 8) + 30
    for loop in loops:
        child = subprocess.run(
            [sys.executable, __file__, "--loop", loop, "--rates", args.rates,
             "--seconds", str(args.seconds), "--media", args.media],
            capture_output=True, text=True, timeout=budget, check=False,
        )  # fmt: skip
        lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
        result[loop] = json.loads(lines[-1]) if lines else {"error": child.stderr[-500:]}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
