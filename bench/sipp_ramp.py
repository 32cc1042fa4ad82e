"""SIPp call-rate ramp through a system under test: UAC → SUT → UAS, loopback UDP only.

Shared driver for the B2BUA benchmark (Pomelo) and its references (Kamailio, sippy). For each
rate a fresh SIPp UAS (the callee) is started on ``uas_port`` and a SIPp UAC sends
``rate * seconds`` calls to the SUT at ``rate`` calls/s: INVITE → (180) → 200 → ACK, a pause of
``pause_ms``, then BYE → 200 from the caller. The ramp stops at the first rate with any failed
call (or a SIPp exit code other than 0), or where the answered-call rate falls below
``hold_fraction`` (90 %) of the target; the highest rate before that is ``max_clean_cps``.

How the UAC reaches the callee is the caller's choice:

* a B2BUA routes by itself, so the Request-URI is ``sip:[service]@<SUT>`` (the default,
  ``request_uri=None``) and the SUT is configured to send calls to ``uas_port``;
* a proxy relays to the Request-URI, so pass ``request_uri=uas_request_uri(uas_port)``
  (``sip:[service]@127.0.0.1:<uas_port>``) while the packets still go to the SUT's address.

The scenarios are generated here rather than SIPp's built-in ``uac``/``uas``: the UAC records
the route set (``rrs``) and sends ACK/BYE to the Contact of the 200 with ``[routes]`` (needed
through a record-routing proxy, harmless through a B2BUA), the UAS echoes Record-Route, and
``transport=`` in both Contacts is lower-case ``udp`` by default (SIPp's built-in scenarios
write ``transport=UDP``; sippy's B2BUA then fails to forward the BYE — see ``--transport-param``).

Figures per rate come from SIPp itself: ``-trace_stat`` CSV (attempted/succeeded/failed calls,
failure causes, retransmissions, mean response time) and ``-trace_rtt`` (per-call INVITE → 200
time, for p50/p95/max and the answered-call rate). When the SUT's PIDs are given, its CPU use
over each step is reported too, which tells a SUT-bound ceiling from a SIPp-bound one.

Bounded: every SIPp process has ``-timeout`` with ``-timeout_error``, ``-recv_timeout``, a hard
kill, and the ramp has a wall-time budget. SIPp's working files go to a temporary directory.

    .venv/bin/python bench/sipp_ramp.py                       # SIPp → SIPp baseline (no SUT)
    .venv/bin/python bench/sipp_ramp.py --target 127.0.0.1:5070 --uas-port 5092 --via-proxy
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import re
import resource
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

DEFAULT_RATES: tuple[int, ...] = (100, 200, 400, 800, 1200, 1600, 2000, 2500, 3000)
HOLD_FRACTION = 0.9
UAS_TIMEWAIT_MS = 1000

# Request-URI of the initial INVITE when the SUT routes by itself (B2BUA): SIPp's own default.
SUT_REQUEST_URI = "sip:[service]@[remote_ip]:[remote_port]"

UAC_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="pomelo-ramp-uac">
  <send retrans="500" start_txn="invite">
    <![CDATA[

      INVITE {ruri} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "ramp" <sip:ramp@[local_ip]:[local_port]>;tag=[pid]rampA[call_number]
      To: <{ruri}>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:ramp@[local_ip]:[local_port]{tparam}>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=ramp 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>

  <!-- Transactions (start_txn/response_txn/ack_txn) let SIPp ignore a provisional that a
       multi-process SUT delivers after the 200, and re-ACK a retransmitted 200. -->
  <recv response="100" optional="true" response_txn="invite"/>
  <recv response="180" optional="true" response_txn="invite"/>
  <recv response="183" optional="true" response_txn="invite"/>
  <!-- The dialog's remote target is taken from Contact with a regexp: SIPp's own [next_url]
       mangles a Contact that carries a display name (sippy sends "Anonymous <sip:...>"). -->
  <recv response="200" rtd="true" rrs="true" response_txn="invite">
    <action>
      <ereg regexp="sips?:[^>[:space:]]+" search_in="hdr" header="Contact:" check_it="true"
            assign_to="peer_contact"/>
    </action>
  </recv>

  <send ack_txn="invite">
    <![CDATA[

      ACK [$peer_contact] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "ramp" <sip:ramp@[local_ip]:[local_port]>;tag=[pid]rampA[call_number]
      To: <{ruri}>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>

  <pause/>

  <send retrans="500" start_txn="bye">
    <![CDATA[

      BYE [$peer_contact] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "ramp" <sip:ramp@[local_ip]:[local_port]>;tag=[pid]rampA[call_number]
      To: <{ruri}>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>

  <recv response="200" crlf="true" response_txn="bye"/>

  <ResponseTimeRepartition value="1, 2, 5, 10, 20, 50, 100, 200, 500"/>
  <CallLengthRepartition value="100, 500, 1000, 2000, 5000, 10000"/>
</scenario>
"""

UAS_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="pomelo-ramp-uas">
  <recv request="INVITE" crlf="true"/>

  <send>
    <![CDATA[

      SIP/2.0 180 Ringing
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]rampB[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:callee@[local_ip]:[local_port]{tparam}>
      Content-Length: 0

    ]]>
  </send>

  <send retrans="500">
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]rampB[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:callee@[local_ip]:[local_port]{tparam}>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=callee 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>

  <recv request="ACK" optional="true" rtd="true" crlf="true"/>
  <recv request="BYE"/>

  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:callee@[local_ip]:[local_port]{tparam}>
      Content-Length: 0

    ]]>
  </send>

  <!-- keep the call a moment to answer a retransmitted BYE -->
  <timewait milliseconds="{timewait}"/>
</scenario>
"""

# SIPp -trace_stat columns reported per run (cumulative counters of the last row).
_STAT_COLUMNS = {
    "TotalCallCreated": "attempted",
    "SuccessfulCall(C)": "succeeded",
    "FailedCall(C)": "failed",
    "Retransmissions(C)": "retransmissions",
    "OutOfCallMsgs(C)": "out_of_call_msgs",
    "DeadCallMsgs(C)": "dead_call_msgs",
    "CurrentCall": "current_calls",
}


def uas_request_uri(uas_port: int, host: str = "127.0.0.1") -> str:
    """Request-URI addressing the UAS directly (for a proxy that relays to the R-URI)."""
    return f"sip:[service]@{host}:{uas_port}"


def uac_scenario(request_uri: str | None = None, transport_param: str = "udp") -> str:
    tparam = f";transport={transport_param}" if transport_param else ""
    return UAC_XML.format(ruri=request_uri or SUT_REQUEST_URI, tparam=tparam)


def uas_scenario(transport_param: str = "udp", timewait_ms: int = UAS_TIMEWAIT_MS) -> str:
    tparam = f";transport={transport_param}" if transport_param else ""
    return UAS_XML.format(tparam=tparam, timewait=timewait_ms)


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def sipp_version(sipp: str = "sipp") -> str | None:
    path = shutil.which(sipp)
    if path is None:
        return None
    import subprocess

    try:
        out = subprocess.run(
            [path, "-v"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"SIPp\s+v?([\w.\-]+)", out)
    return match.group(1).rstrip(".") if match else None


def pin_prefix(cpus: str | None) -> list[str]:
    """``taskset -c CPUS`` when asked for, available and the CPUs exist; else nothing."""
    if not cpus:
        return []
    taskset = shutil.which("taskset")
    if taskset is None:
        return []
    try:
        wanted = {int(part) for part in cpus.replace("-", ",").split(",") if part}
    except ValueError:
        return []
    if not wanted <= set(os.sched_getaffinity(0)):
        return []
    return [taskset, "-c", cpus]


# ---------------------------------------------------------------- CPU accounting (Linux /proc)

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, cpu seconds user+system) for every visible process."""
    table: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        # after "(comm) ": state ppid ... utime is field 14 overall → index 11 here
        table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _CLK_TCK)
    return table


def tree_cpu_seconds(pids: Iterable[int]) -> float:
    """CPU seconds used so far by these processes and all their live descendants."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    stack = [pid for pid in pids if pid in table]
    total = 0.0
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += table[pid][1]
        stack.extend(children.get(pid, ()))
    return total


def udp_rcvbuf_errors() -> int | None:
    """Host-wide UDP datagrams dropped for a full receive buffer (/proc/net/snmp)."""
    try:
        lines = [
            line.split()
            for line in Path("/proc/net/snmp").read_text().splitlines()
            if line.startswith("Udp:")
        ]
        return int(lines[1][lines[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return None


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------- SIPp output parsing


def read_stat_csv(path: Path) -> dict[str, Any]:
    """Cumulative counters from the last row of SIPp's ``-trace_stat`` CSV."""
    try:
        with path.open(newline="", encoding="latin-1") as handle:
            rows = [row for row in csv.reader(handle, delimiter=";") if row]
    except OSError:
        return {}
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    result: dict[str, Any] = {}
    causes: dict[str, int] = {}
    for index, column in enumerate(header):
        if index >= len(last):
            break
        value = last[index].strip()
        if column in _STAT_COLUMNS and value.isdigit():
            result[_STAT_COLUMNS[column]] = int(value)
        elif column.startswith("Failed") and column.endswith("(C)") and column != "FailedCall(C)":
            if value.isdigit() and int(value):
                causes[column[len("Failed") : -len("(C)")]] = int(value)
        elif column == "ResponseTime1(C)":
            result["response_time_mean_ms"] = _sipp_duration_ms(value)
    if causes:
        result["failure_causes"] = causes
    return result


def _sipp_duration_ms(value: str) -> float | None:
    """SIPp's ``HH:MM:SS:micro`` duration to milliseconds."""
    parts = value.split(":")
    if len(parts) != 4 or not all(part.isdigit() for part in parts):
        return None
    hours, minutes, seconds, micros = (int(part) for part in parts)
    return round(((hours * 60 + minutes) * 60 + seconds) * 1000 + micros / 1000, 3)


def read_rtt(paths: Sequence[Path]) -> dict[str, Any]:
    """Per-call INVITE → 200 times from ``-trace_rtt`` (ms resolution) and the answer rate."""
    dates: list[float] = []
    rtts: list[float] = []
    for path in paths:
        try:
            lines = path.read_text(encoding="latin-1").splitlines()
        except OSError:
            continue
        for line in lines[1:]:
            fields = line.split(";")
            if len(fields) < 3 or fields[2].strip() != "1":
                continue
            try:
                dates.append(float(fields[0]))
                rtts.append(float(fields[1]))
            except ValueError:
                continue
    if not rtts:
        return {}
    rtts.sort()

    def pct(q: float) -> float:
        return rtts[min(len(rtts) - 1, int(q * len(rtts)))]

    result: dict[str, Any] = {
        "samples": len(rtts),
        "p50": pct(0.50),
        "p95": pct(0.95),
        "p99": pct(0.99),
        "max": rtts[-1],
    }
    span_ms = max(dates) - min(dates)
    if len(dates) > 1 and span_ms > 0:
        result["answer_rate_cps"] = round((len(dates) - 1) * 1000.0 / span_ms, 1)
    return result


# ---------------------------------------------------------------- processes


async def _stop(process: asyncio.subprocess.Process, grace: float = 2.0) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def run_rate(
    rate: int,
    seconds: float,
    *,
    target: str,
    uas_port: int,
    workdir: Path,
    sipp: str = "sipp",
    service: str = "bench",
    request_uri: str | None = None,
    pause_ms: int = 1000,
    transport_param: str = "udp",
    sipp_cpus: str | None = "1",
    local_ip: str = "127.0.0.1",
    sut_pids: Sequence[int] = (),
    recv_timeout_s: float = 10.0,
) -> dict[str, Any]:
    """One step: a fresh UAS, then ``rate * seconds`` calls from the UAC; figures of both."""
    step = workdir / f"r{rate}_{int(time.time() * 1000) % 1_000_000}"
    step.mkdir()
    (step / "uac.xml").write_text(uac_scenario(request_uri, transport_param))
    (step / "uas.xml").write_text(uas_scenario(transport_param))
    calls = max(1, round(rate * seconds))
    pause_s = pause_ms / 1000
    # Generous concurrency limit: if calls pile up beyond it the SUT is far behind anyway.
    limit = max(100, int(rate * (pause_s + 3)))
    hard_timeout = seconds + pause_s + recv_timeout_s + 15
    pin = pin_prefix(sipp_cpus)
    common = [
        "-i", local_ip,
        "-nostdin",
        "-max_socket", "4096",
        "-buff_size", "1048576",
        "-timeout", f"{int(hard_timeout)}s",
        "-timeout_error",
        "-trace_stat", "-fd", "1",
    ]  # fmt: skip
    uas_cmd = [
        *pin, sipp,
        "-sf", str(step / "uas.xml"),
        "-p", str(uas_port),
        "-m", str(calls),
        "-recv_timeout", f"{int(recv_timeout_s * 1000)}",
        "-stf", str(step / "uas_stat.csv"),
        *common,
    ]  # fmt: skip
    uac_cmd = [
        *pin, sipp, target,
        "-sf", str(step / "uac.xml"),
        "-s", service,
        "-p", str(free_udp_port(local_ip)),
        "-r", str(rate),
        "-rp", "1000",
        "-m", str(calls),
        "-l", str(limit),
        "-d", str(pause_ms),
        "-recv_timeout", f"{int(recv_timeout_s * 1000)}",
        "-stf", str(step / "uac_stat.csv"),
        "-trace_rtt", "-rtt_freq", str(max(1, min(100, calls // 50))),
        *common,
    ]  # fmt: skip
    devnull = asyncio.subprocess.DEVNULL
    children_cpu0 = _children_cpu_seconds()
    drops0 = udp_rcvbuf_errors()
    sut_cpu0 = tree_cpu_seconds(sut_pids) if sut_pids else None
    uas = await asyncio.create_subprocess_exec(
        *uas_cmd, stdin=devnull, stdout=devnull, stderr=devnull, cwd=step
    )
    uac: asyncio.subprocess.Process | None = None
    uac_code: int | None = None
    uas_code: int | None = None
    sut_cpu1: float | None = None
    drops1: int | None = None
    wall = 0.0
    try:
        await asyncio.sleep(0.3)  # let the UAS bind
        if uas.returncode is not None:
            raise RuntimeError(f"SIPp UAS exited at start (code {uas.returncode}); port in use?")
        started = time.perf_counter()
        uac = await asyncio.create_subprocess_exec(
            *uac_cmd, stdin=devnull, stdout=devnull, stderr=devnull, cwd=step
        )
        try:
            uac_code = await asyncio.wait_for(uac.wait(), hard_timeout + 5)
        except TimeoutError:
            uac_code = None
        wall = time.perf_counter() - started
        sut_cpu1 = tree_cpu_seconds(sut_pids) if sut_pids else None
        drops1 = udp_rcvbuf_errors()
        # The UAS ends by itself after its last call's timewait when nothing was lost.
        try:
            uas_code = await asyncio.wait_for(uas.wait(), UAS_TIMEWAIT_MS / 1000 + 1.5)
        except TimeoutError:
            uas_code = None
    finally:
        if uac is not None:
            await _stop(uac)
        await _stop(uas)
    sipp_cpu = _children_cpu_seconds() - children_cpu0

    uac_stats = read_stat_csv(step / "uac_stat.csv")
    uas_stats = read_stat_csv(step / "uas_stat.csv")
    rtt = read_rtt(sorted(step.glob("*_rtt.csv")))
    succeeded = uac_stats.get("succeeded", 0)
    failed = uac_stats.get("failed", 0)
    # Rate at which calls were answered (from per-call 200 OK times); else a wall-clock bound.
    achieved = rtt.get("answer_rate_cps")
    busy = max(wall - pause_s, 1e-3)
    if achieved is None:
        achieved = round(succeeded / busy, 1) if succeeded else 0.0
    result: dict[str, Any] = {
        "rate": rate,
        "seconds": seconds,
        "calls": calls,
        "attempted": uac_stats.get("attempted", 0),
        "succeeded": succeeded,
        "failed": failed,
        "retransmissions": uac_stats.get("retransmissions"),
        "achieved_cps": achieved,
        "response_ms": {
            key: rtt[key] for key in ("p50", "p95", "p99", "max", "samples") if key in rtt
        }
        | {"mean": uac_stats.get("response_time_mean_ms")},
        "uac_exit": uac_code,
        "wall_s": round(wall, 2),
        "uas": {
            "exit": uas_code,
            **{
                key: uas_stats.get(key)
                for key in ("attempted", "succeeded", "failed", "retransmissions")
            },
        },
        "sipp_cpu_pct": round(100 * sipp_cpu / busy, 1),
    }
    if uac_stats.get("failure_causes"):
        result["failure_causes"] = uac_stats["failure_causes"]
    if uas_stats.get("failure_causes"):
        result["uas"]["failure_causes"] = uas_stats["failure_causes"]
    for key in ("out_of_call_msgs", "dead_call_msgs"):
        if uac_stats.get(key):
            result[key] = uac_stats[key]
    if drops0 is not None and drops1 is not None:
        result["udp_rcvbuf_drops"] = drops1 - drops0  # host-wide, during the UAC run
    if sut_cpu0 is not None and sut_cpu1 is not None:
        result["sut_cpu_pct"] = round(100 * (sut_cpu1 - sut_cpu0) / busy, 1)
    # Clean only when both ends completed every call: a SUT that answers the caller's BYE but
    # never delivers it to the callee leaves the UAS with open calls (it then exits non-zero).
    uas_clean = uas_code == 0 and uas_stats.get("succeeded") == calls
    result["uas"]["clean"] = uas_clean
    result["clean"] = uac_code == 0 and failed == 0 and succeeded == calls and uas_clean
    result["held"] = achieved >= HOLD_FRACTION * rate
    return result


async def ramp(
    target: str,
    uas_port: int,
    *,
    rates: Sequence[int] = DEFAULT_RATES,
    seconds: float = 10.0,
    confirm_seconds: float = 0.0,
    service: str = "bench",
    request_uri: str | None = None,
    pause_ms: int = 1000,
    transport_param: str = "udp",
    sipp: str = "sipp",
    sipp_cpus: str | None = "1",
    local_ip: str = "127.0.0.1",
    sut_pids: Sequence[int] | Callable[[], Sequence[int]] = (),
    alive: Callable[[], bool] | None = None,
    budget_s: float = 170.0,
    settle_s: float = 1.0,
    log: Callable[[str], None] | None = None,
    keep_dir: Path | None = None,
    confirm_cooldown_s: float = 10.0,
) -> dict[str, Any]:
    """Run the UAC at each rate in turn through ``target``; stop at the first unclean rate.

    ``target`` is the SUT's ``host:port`` (SIPp's remote address), ``uas_port`` where the SIPp
    UAS (callee) listens on ``local_ip``. ``request_uri`` may use SIPp keywords; ``None`` means
    ``sip:[service]@[remote_ip]:[remote_port]`` (the SUT routes). ``sut_pids`` (or a callable
    returning them) are measured for CPU use with their descendants. ``alive`` is polled between
    steps: if it returns False the ramp stops (the SUT died). ``confirm_seconds`` > 0 re-runs the
    best rate that long (e.g. 30 s, as the issue asks), stepping down one rate if that fails,
    after ``confirm_cooldown_s`` of quiet; the SUT has just been overloaded by the failing step,
    so where the SUT can be restarted prefer :func:`confirm` with a fresh one.
    No step starts once ``budget_s`` of wall time has passed. ``keep_dir`` keeps SIPp's working
    files (scenarios, stat/rtt CSVs) there instead of in a temporary directory.
    """
    sipp_path = shutil.which(sipp)
    result: dict[str, Any] = {
        "target": target,
        "uas": f"{local_ip}:{uas_port}",
        "service": service,
        "request_uri": request_uri or SUT_REQUEST_URI,
        "transport_param": transport_param or None,
        "pause_ms": pause_ms,
        "seconds_per_rate": seconds,
        "hold_fraction": HOLD_FRACTION,
        "sipp_version": sipp_version(sipp),
        "sipp_cpus": sipp_cpus if pin_prefix(sipp_cpus) else None,
    }
    if sipp_path is None:
        result.update(skipped="sipp not installed (Debian package sip-tester)", max_clean_cps=0)
        return result

    def pids() -> Sequence[int]:
        return sut_pids() if callable(sut_pids) else sut_pids

    def say(text: str) -> None:
        if log is not None:
            log(text)

    options = dict(
        target=target,
        uas_port=uas_port,
        sipp=sipp_path,
        service=service,
        request_uri=request_uri,
        pause_ms=pause_ms,
        transport_param=transport_param,
        sipp_cpus=sipp_cpus,
        local_ip=local_ip,
    )
    runs: list[dict[str, Any]] = []
    clean_rates: list[int] = []
    best = 0
    stop_reason = "all_rates_clean"
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if keep_dir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sipp-ramp-")))
        else:
            workdir = Path(keep_dir)
            workdir.mkdir(parents=True, exist_ok=True)
        for rate in rates:
            if time.perf_counter() - t0 + seconds + pause_ms / 1000 + 3 > budget_s:
                stop_reason = "time_budget"
                break
            if alive is not None and not alive():
                stop_reason = "sut_died"
                break
            run = await run_rate(rate, seconds, workdir=workdir, sut_pids=pids(), **options)
            runs.append(run)
            say(_describe(run))
            if not run["clean"]:
                if run["failed"] or run["succeeded"] < run["calls"]:
                    stop_reason = "failed_calls"
                elif not run["uas"]["clean"]:
                    stop_reason = "callee_calls_incomplete"  # e.g. BYE not delivered to the UAS
                else:
                    stop_reason = f"sipp_exit_{run['uac_exit']}"
                break
            if not run["held"]:
                stop_reason = "rate_not_held"
                break
            best = rate
            clean_rates.append(rate)
            await asyncio.sleep(settle_s)
        if alive is not None and not alive():
            stop_reason = "sut_died"
        result["runs"] = runs
        result["max_clean_cps"] = best
        result["stop_reason"] = stop_reason
        if confirm_seconds > 0 and clean_rates and (alive is None or alive()):
            confirmed = 0
            confirm_runs: list[dict[str, Any]] = []
            await asyncio.sleep(confirm_cooldown_s)
            for rate in list(reversed(clean_rates))[:2]:
                await asyncio.sleep(settle_s)
                run = await run_rate(
                    rate, confirm_seconds, workdir=workdir, sut_pids=pids(), **options
                )
                confirm_runs.append(run)
                say("confirm " + _describe(run))
                if run["clean"] and run["held"]:
                    confirmed = rate
                    break
            result["confirm_seconds"] = confirm_seconds
            result["confirm_runs"] = confirm_runs
            result["confirmed_cps"] = confirmed
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    return result


async def confirm(
    run_at: Callable[[int], Awaitable[dict[str, Any]]],
    ramp_result: dict[str, Any],
    tries: int = 2,
) -> dict[str, Any]:
    """Re-check the best clean rate(s) of ``ramp_result``, highest first, with ``run_at(rate)``.

    ``run_at`` should start a fresh SUT, ``ramp`` it at that single rate for the long duration
    (e.g. ``seconds=30``) and stop it; the first rate that comes back clean is ``confirmed_cps``.
    """
    clean = [run["rate"] for run in ramp_result.get("runs", []) if run["clean"] and run["held"]]
    runs: list[dict[str, Any]] = []
    confirmed = 0
    for rate in reversed(clean[-tries:]):
        result = await run_at(rate)
        runs.extend(result.get("runs") or [])
        if result.get("max_clean_cps") == rate:
            confirmed = rate
            break
    return {"confirm_runs": runs, "confirmed_cps": confirmed}


def _describe(run: dict[str, Any]) -> str:
    resp = run["response_ms"]
    parts = [
        f"rate {run['rate']:>5}/s x {run['seconds']:g}s:",
        f"ok {run['succeeded']}/{run['calls']}",
        f"(uas ok {run['uas'].get('succeeded')})",
        f"failed {run['failed']}",
        f"retrans {run['retransmissions']}",
        f"achieved {run['achieved_cps']}/s",
        f"p50 {resp.get('p50')} ms p95 {resp.get('p95')} ms",
        f"sipp cpu {run['sipp_cpu_pct']}%",
    ]
    if run.get("udp_rcvbuf_drops"):
        parts.append(f"udp drops {run['udp_rcvbuf_drops']}")
    if "sut_cpu_pct" in run:
        parts.append(f"sut cpu {run['sut_cpu_pct']}%")
    if run.get("failure_causes"):
        parts.append(f"causes {run['failure_causes']}")
    parts.append("clean" if run["clean"] and run["held"] else "STOP")
    return " ".join(parts)


def parse_rates(text: str, max_rate: int | None = None) -> list[int]:
    rates = [int(part) for part in text.split(",") if part.strip()]
    return [rate for rate in rates if max_rate is None or rate <= max_rate]


def add_ramp_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by the CLIs that drive a ramp (this one and the references)."""
    parser.add_argument("--rates", default=",".join(str(r) for r in DEFAULT_RATES))
    parser.add_argument("--max-rate", type=int, default=None, help="drop rates above this")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per rate")
    parser.add_argument(
        "--confirm-seconds",
        type=float,
        default=0.0,
        help="re-run the best rate this long (the issue's 30 s); 0 = off",
    )
    parser.add_argument("--pause-ms", type=int, default=1000, help="ACK → BYE pause (SIPp -d)")
    parser.add_argument("--service", default="bench", help="Request-URI user (SIPp -s)")
    parser.add_argument(
        "--transport-param",
        default="udp",
        help="transport= in the SIPp Contacts: udp (default), UDP (SIPp's own), '' for none",
    )
    parser.add_argument("--sipp-cpus", default="1", help="taskset CPU list for SIPp; '' = no pin")
    parser.add_argument("--uas-port", type=int, default=0, help="callee port (0 = a free one)")
    parser.add_argument("--budget", type=float, default=170.0, help="wall-time budget, seconds")
    parser.add_argument("--keep", type=Path, default=None, help="keep SIPp's files in this dir")


def stderr_log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--target",
        default=None,
        help="SUT host:port; default: the UAS itself (SIPp → SIPp baseline, no SUT)",
    )
    parser.add_argument(
        "--via-proxy",
        action="store_true",
        help="Request-URI addresses the UAS (for a proxy); default: the SUT (B2BUA)",
    )
    parser.add_argument("--request-uri", default=None, help="explicit Request-URI template")
    parser.add_argument("--sut-pid", type=int, action="append", default=[], help="for CPU %%")
    add_ramp_arguments(parser)
    args = parser.parse_args()
    uas_port = args.uas_port or free_udp_port()
    target = args.target or f"127.0.0.1:{uas_port}"
    request_uri = args.request_uri
    if request_uri is None and args.via_proxy:
        request_uri = uas_request_uri(uas_port)
    result = asyncio.run(
        ramp(
            target,
            uas_port,
            rates=parse_rates(args.rates, args.max_rate),
            seconds=args.seconds,
            confirm_seconds=args.confirm_seconds,
            service=args.service,
            request_uri=request_uri,
            pause_ms=args.pause_ms,
            transport_param=args.transport_param,
            sipp_cpus=args.sipp_cpus or None,
            sut_pids=args.sut_pid,
            budget_s=args.budget,
            log=stderr_log,
            keep_dir=args.keep,
        )
    )
    result["bench"] = "sipp_ramp" if args.target else "sipp_ramp_baseline"
    print(json.dumps(result))


if __name__ == "__main__":
    main()
