"""Stateful UAS throughput: SIPp calls (INVITE/200/ACK/BYE/200) against a SipEndpoint.

A UAS built on :class:`pomelo.sip.endpoint.SipEndpoint` runs in this process (on uvloop when
importable) and answers INVITE 200 with SDP and BYE 200 through full server transactions.
SIPp's built-in ``uac`` scenario drives it over loopback UDP at increasing call rates, each
for ``--seconds``; the run stops at the first rate with a failed call. One JSON line reports
the highest rate that completed with zero failed calls while SIPp sustained at least 90 % of
the target rate, plus every run's SIPp statistics.

Bounded: every SIPp run has ``-timeout`` and a hard kill; total wall time stays under about
``len(rates) * (seconds + 3)`` seconds. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import platform
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pomelo.sip.endpoint import SipEndpoint
from pomelo.sip.message import SipRequest
from pomelo.sip.transaction import ServerTransaction
from pomelo.sip.transport import Source
from pomelo.sip.uri import NameAddr, SipUri

SDP = (
    b"v=0\r\no=pomelo 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 20000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
SDP_HEADERS = [("Content-Type", "application/sdp")]


class Uas:
    """The whole application: a synchronous handler, no task per request."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {"INVITE": 0, "BYE": 0, "ACK": 0, "other": 0}
        self.contact = NameAddr(SipUri("127.0.0.1", user="bench"))

    def __call__(self, tx: ServerTransaction) -> None:
        method = tx.request.method
        if method == "INVITE":
            self.counts["INVITE"] += 1
            tx.reply(200, contact=self.contact, body=SDP, headers=SDP_HEADERS)
        elif method == "BYE":
            self.counts["BYE"] += 1
            tx.reply(200)
        else:
            self.counts["other"] += 1
            tx.reply(200)

    def on_ack(self, ack: SipRequest, source: Source) -> None:
        self.counts["ACK"] += 1


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def read_stats(path: Path) -> dict[str, int]:
    """Last row of SIPp's ``-trace_stat`` CSV: cumulative counters."""
    wanted = {
        "SuccessfulCall(C)": "ok",
        "FailedCall(C)": "failed",
        "Retransmissions(C)": "retrans",
        "TotalCallCreated": "created",
    }
    result: dict[str, int] = {}
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle, delimiter=";"))
    except OSError:
        return result
    if len(rows) < 2:
        return result
    header, last = rows[0], rows[-1]
    for column, name in wanted.items():
        if column in header:
            value = last[header.index(column)].strip()
            if value.isdigit():
                result[name] = int(value)
    return result


async def run_rate(
    sipp: str, port: int, rate: int, seconds: float, workdir: Path
) -> dict[str, Any]:
    calls = max(1, int(rate * seconds))
    stat_file = workdir / f"stat_{rate}.csv"
    command = [
        sipp,
        f"127.0.0.1:{port}",
        "-sn", "uac",
        "-i", "127.0.0.1",
        "-p", str(free_udp_port()),
        "-r", str(rate),
        "-m", str(calls),
        "-l", str(max(100, rate * 4)),
        "-timeout", f"{int(seconds) + 15}s",
        "-timeout_error",
        "-nostdin",
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
        code = await asyncio.wait_for(process.wait(), seconds + 25)
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
        "retrans": stats.get("retrans"),
        "exit": code,
        "seconds": round(elapsed, 2),
        "achieved_cps": round(ok / elapsed, 1) if elapsed > 0 else None,
    }


async def bench(rates: list[int], seconds: float) -> dict[str, Any]:
    sipp = shutil.which("sipp")
    result: dict[str, Any] = {"bench": "sip_transactions", "python": platform.python_version()}
    if sipp is None:
        result["skipped"] = "sipp not installed (apt: sip-tester)"
        return result
    uas = Uas()
    endpoint = SipEndpoint(uas, on_ack=uas.on_ack, max_server_transactions=200_000)
    transport = await endpoint.listen("UDP", "127.0.0.1", 0)
    runs: list[dict[str, Any]] = []
    best = 0
    try:
        with tempfile.TemporaryDirectory(prefix="pomelo-bench-") as tmp:
            for rate in rates:
                run = await run_rate(sipp, transport.local_address[1], rate, seconds, Path(tmp))
                run["live_server_transactions_after"] = len(
                    endpoint.transactions.server_transactions
                )
                runs.append(run)
                run["sustained"] = (run["achieved_cps"] or 0) >= 0.9 * rate
                if run["exit"] != 0 or run["failed"] or run["ok"] < run["calls"]:
                    break
                if not run["sustained"]:
                    break  # no failures, but SIPp had to slow down: this is past the ceiling
                best = rate
                await asyncio.sleep(0.5)
    finally:
        await endpoint.close()
    result.update(
        max_rate_zero_failures=best,
        seconds_per_rate=seconds,
        transport="UDP",
        runs=runs,
        handled=uas.counts,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rates", default="250,500,1000,1500,2000,2500,3000")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    rates = [int(part) for part in args.rates.split(",") if part.strip()]
    loop_name = "asyncio"
    try:
        import uvloop

        runner: Any = uvloop.run
        loop_name = "uvloop"
    except ImportError:
        runner = asyncio.run
    result = runner(bench(rates, args.seconds))
    result["loop"] = loop_name
    print(json.dumps(result))


if __name__ == "__main__":
    main()
