"""Calls through the B2BUA over real SIP: SIPp phones on loopback on both sides of Pomelo.

SIPp as the caller authenticates its INVITE with digest (407), Pomelo routes it and places
its own INVITE to a second SIPp playing the callee's registered phone, and relays between the
two. Each test checks SIPp's verdict (exit code 0: every message it expected arrived, in
order), the CDR row, and the events published on the bus.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import select

from pomelo.auth.access import Actor
from pomelo.core.events import PublishedEvent
from pomelo.core.secrets import SecretBox
from pomelo.media.engine import MediaEngine
from pomelo.pbx.calls import CallService, CallSettings
from pomelo.pbx.cdr import CallRecorder
from pomelo.pbx.cdr_models import CallRecord
from pomelo.pbx.location import Contact
from pomelo.pbx.routing import DbCallDirectory, Router
from pomelo.pbx.schemas import NumberCreate, SipAccountCreate, TrunkCreate
from pomelo.pbx.server import SipServer
from pomelo.pbx.sipcache import TrunkInfo
from pomelo.sip.dialog import Dialog
from pomelo.sip.digest import (
    DigestAlgorithm,
    DigestChallenger,
    DigestOutcome,
    answer_challenge,
    ha1,
    select_challenge,
)
from pomelo.sip.endpoint import SipEndpoint
from pomelo.sip.message import SipRequest, SipResponse
from pomelo.sip.sdp import parse_sdp
from pomelo.sip.transaction import ServerTransaction, new_tag
from pomelo.sip.transport import Source, Target
from pomelo.sip.uri import NameAddr, SipUri
from pomelo.storage.db import Database
from tests.conftest import TEST_SECRET, Server, TenantFixture, require_tool

pytestmark = pytest.mark.usefixtures("sipp")


@pytest.fixture(scope="module")
def sipp() -> str:
    return require_tool("sipp", "sip-tester")


# -- SIPp scenarios -----------------------------------------------------------------------

SDP_BODY = """v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
"""

HOLD_BODY = SDP_BODY.replace("2353687637", "2353687638") + "a=sendonly\n"

CALLER_HEAD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
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
""".replace("SDP\n", SDP_BODY)

TRUNK_HEAD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="trunk">
  <send retrans="500"><![CDATA[
      INVITE sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-[pid]-[call_number]-inv2
      From: "Caller" <sip:+79161234567@[local_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field1]@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 2 INVITE
      Contact: <sip:+79161234567@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

SDP
    ]]></send>
  <recv response="100" optional="true"/>
""".replace("SDP\n", SDP_BODY)


def caller_request(method: str, cseq: int, body: str = "", retrans: bool = True) -> str:
    """An in-dialog request from the caller (ACK, BYE, re-INVITE)."""
    content = "Content-Type: application/sdp\n      " if body else ""
    return f"""  <send{' retrans="500"' if retrans else ""}><![CDATA[
      {method} sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[field2]@[field0]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field1]@[field0]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} {method}
      Contact: <sip:[field2]@[local_ip]:[local_port]>
      Max-Forwards: 70
      {content}Content-Length: [len]

{body}    ]]></send>
"""


ANSWERED = (
    """  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true"/>
"""
    + caller_request("ACK", 2, retrans=False)
    + '  <pause milliseconds="300"/>\n'
)
CALLER_BYE = caller_request("BYE", 3) + '  <recv response="200"/>\n</scenario>\n'
CALLER_HOLD = (
    caller_request("INVITE", 3, HOLD_BODY)
    + '  <recv response="200"/>\n'
    + caller_request("ACK", 3, retrans=False)
    + '  <pause milliseconds="200"/>\n'
    + caller_request("BYE", 4)
    + '  <recv response="200"/>\n</scenario>\n'
)
CALLER_GETS_BYE = """  <recv request="BYE"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]></send>
</scenario>
"""


def caller_final(status: int) -> str:
    return f"""  <recv response="180" optional="true"/>
  <recv response="{status}"/>
  <send><![CDATA[
      ACK sip:[field1]@[field0] SIP/2.0
      [last_Via:]
      From: <sip:[field2]@[field0]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
</scenario>
"""


CALLER_CANCELS = """  <recv response="180"/>
  <pause milliseconds="300"/>
  <send retrans="500"><![CDATA[
      CANCEL sip:[field1]@[field0] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-[pid]-[call_number]-inv2
      From: <sip:[field2]@[field0]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field1]@[field0]>
      Call-ID: [call_id]
      CSeq: 2 CANCEL
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
  <recv response="200"/>
""" + caller_final(487).replace('  <recv response="180" optional="true"/>\n', "")

RESPONSE_HEAD = """
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>"""


def callee_response(status: str, body: str = "", retrans: bool = False) -> str:
    content = "\n      Content-Type: application/sdp" if body else ""
    return f"""  <send{' retrans="500"' if retrans else ""}><![CDATA[
      SIP/2.0 {status}{RESPONSE_HEAD}{content}
      Content-Length: [len]

{body}    ]]></send>
"""


CALLEE_HEAD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="callee">
  <recv request="INVITE"/>
"""
CALLEE_ANSWERS = (
    CALLEE_HEAD
    + callee_response("180 Ringing")
    + callee_response("200 OK", SDP_BODY, retrans=True)
    + '  <recv request="ACK"/>\n'
)
# SIPp refuses variables that are set but never used: only the hanging-up callee saves From.
CALLEE_ANSWERS_SAVING_FROM = CALLEE_ANSWERS.replace(
    '<recv request="INVITE"/>',
    """<recv request="INVITE">
    <action><ereg regexp=".*" search_in="hdr" header="From:" assign_to="pbx"/></action>
  </recv>""",
)
CALLEE_ACCEPTS_BYE = """  <recv request="BYE"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]></send>
</scenario>
"""
CALLEE_HOLD = (
    '  <recv request="INVITE"/>\n'
    + callee_response(
        "200 OK", HOLD_BODY.replace("a=sendonly", "a=recvonly").replace("38 IN", "39 IN"), True
    )
    + '  <recv request="ACK"/>\n'
    + CALLEE_ACCEPTS_BYE
)
CALLEE_HANGS_UP = """  <pause milliseconds="300"/>
  <send retrans="500"><![CDATA[
      BYE sip:pomelo@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:callee@[local_ip]>;tag=[pid]SIPpTag01[call_number]
      To: [$pbx]
      Call-ID: [call_id]
      CSeq: 1 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
  <recv response="200"/>
</scenario>
"""
CALLEE_BUSY = (
    CALLEE_HEAD + callee_response("486 Busy Here") + '  <recv request="ACK"/>\n</scenario>\n'
)
CALLEE_RINGS_UNTIL_CANCEL = (
    CALLEE_HEAD
    + callee_response("180 Ringing")
    + """  <recv request="CANCEL"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]></send>
  <send><![CDATA[
      SIP/2.0 487 Request Terminated
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      CSeq: 1 INVITE
      Content-Length: 0

    ]]></send>
  <recv request="ACK"/>
</scenario>
"""
)


# -- harness ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MemoryLocation:
    """The callee's registered phones, filled by the test (the registrar does it for real)."""

    def __init__(self) -> None:
        self.bindings: dict[str, list[Contact]] = {}

    def add(self, account_id: str, port: int) -> None:
        contact = Contact(
            uri=f"sip:phone@127.0.0.1:{port}",
            transport="UDP",
            source=("127.0.0.1", port),
            connection=None,
            expires_at=time.time() + 3600,
        )
        self.bindings.setdefault(account_id, []).append(contact)

    def contacts(self, account_id: str) -> list[Contact]:
        return list(self.bindings.get(account_id, []))


class ManualTimers:
    """The PBX's timers on a clock the test moves (ring, session, maximum duration)."""

    class Handle:
        def __init__(self, when: float, callback: Callable[[], object]) -> None:
            self.when, self.callback, self.cancelled = when, callback, False

        def cancel(self) -> None:
            self.cancelled = True

    def __init__(self) -> None:
        self.now = 0.0
        self.handles: list[ManualTimers.Handle] = []

    def call_later(self, delay: float, callback: Callable[[], object]) -> ManualTimers.Handle:
        handle = ManualTimers.Handle(self.now + delay, callback)
        self.handles.append(handle)
        return handle

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        due = sorted(
            (h for h in self.handles if h.when <= self.now and not h.cancelled),
            key=lambda h: h.when,
        )
        self.handles = [h for h in self.handles if h not in due]
        for handle in due:
            handle.callback()
        await asyncio.sleep(0.1)


@dataclass
class Pbx:
    server: SipServer
    service: CallService
    location: MemoryLocation
    tenant: TenantFixture
    domain: str
    accounts: dict[str, str]
    db: Database
    events: list[PublishedEvent] = field(default_factory=list)
    tmp: Path = Path()
    timers: ManualTimers = field(default_factory=ManualTimers)
    anchored: bool = False

    @property
    def port(self) -> int:
        return self.server.port

    async def settle(self, *, cleared: bool = True) -> list[CallRecord]:
        """Wait until every call is cleared (or, on a lossy network where a peer may have
        quit before our last retransmission, only ended) and its record written."""
        for _ in range(300):
            quiet = not any(c.live for c in self.service.calls.values())
            if quiet and (not cleared or not self.service.calls):
                break
            await asyncio.sleep(0.02)
        assert not any(c.live for c in self.service.calls.values()), self.service.calls
        if cleared:
            assert not self.service.calls, self.service.calls
        await self.service.recorder.drain()
        async with self.db.session() as session:
            rows = await session.scalars(
                select(CallRecord)
                .where(CallRecord.tenant_id == self.tenant.id)
                .order_by(CallRecord.started_at)
            )
            return list(rows)

    def kinds(self) -> list[str]:
        return [
            e.event.kind
            for e in self.events
            if e.event.tenant_id == self.tenant.id and e.event.kind.startswith("Call")
        ]


PASSWORD = "long-sip-password-"


@asynccontextmanager
async def running_pbx(
    server: Server,
    tenant: TenantFixture,
    tmp_path: Path,
    settings: CallSettings,
    scheduler: ManualTimers | None = None,
    trunk_password: Callable[[TrunkInfo], str | None] | None = None,
    media: MediaEngine | None = None,
) -> AsyncIterator[Pbx]:
    platform = server.platform
    system = Actor.system(tenant.id)
    accounts = {}
    owners = {"201": tenant["operator"].id, "202": tenant["group_head"].id, "203": None}
    for ext, user in owners.items():
        created = await platform.pbx.create_account(
            system, SipAccountCreate(extension=ext, password=PASSWORD + ext, user_id=user)
        )
        accounts[ext] = created["id"]
    accounts["101"] = tenant.account_id
    await platform.sip_cache.reload()
    directory = DbCallDirectory(platform.db)
    router = Router(
        platform.sip_cache,
        directory,
        secret=b"test-call-nonce-secret-0123456789",
        algorithms=(DigestAlgorithm.MD5, DigestAlgorithm.SHA256),
    )
    sip = SipServer("127.0.0.1", 0, transports=("UDP",))
    location = MemoryLocation()
    service = CallService(
        sip.endpoint,
        router,
        location,
        CallRecorder(platform.uow, directory),
        clock=platform.clock,
        settings=settings,
        scheduler=scheduler,
        trunk_password=trunk_password,
        media=media,
    )
    service.install(sip)
    await sip.start()
    domain = f"{tenant.slug}.sip"
    box = Pbx(sip, service, location, tenant, domain, accounts, platform.db, tmp=tmp_path)

    async def collect(published: PublishedEvent) -> None:
        box.events.append(published)

    unsubscribe = platform.bus.subscribe(collect)
    try:
        yield box
    finally:
        unsubscribe()
        await service.stop()
        await sip.stop()


@pytest.fixture(params=["passthrough", "anchored"])
async def pbx(
    server: Server, tenant: TenantFixture, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Pbx]:
    """Every scenario runs twice: SDP relayed unchanged (signalling alone), and with the
    media anchored on the PBX (SDP translated per leg at every offer/answer point)."""
    media = None
    if request.param == "anchored":
        media = MediaEngine("127.0.0.1", 33000, 33999, rtp_timeout=0)
    settings = CallSettings(ring_timeout=10)
    try:
        async with running_pbx(server, tenant, tmp_path, settings, media=media) as box:
            box.anchored = media is not None
            yield box
    finally:
        if media is not None:
            await media.stop()


async def run_sipp(
    pbx: Pbx, name: str, scenario: str, *args: str, port: int | None = None
) -> asyncio.subprocess.Process:
    sipp = require_tool("sipp", "sip-tester")
    path = pbx.tmp / f"{name}.xml"
    path.write_text(scenario)
    command = [
        sipp,
        f"127.0.0.1:{pbx.port}",
        "-sf", str(path),
        "-i", "127.0.0.1",
        "-p", str(port or free_port()),
        "-timeout", "30s",
        "-timeout_error",
        "-nostdin",
        "-trace_err",
        "-max_recv_loops", "1000",
        *(["-trace_msg"] if os.environ.get("POMELO_SIPP_TRACE") else []),
        *args,
    ]  # fmt: skip
    return await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=pbx.tmp,
    )


async def finish(process: asyncio.subprocess.Process, limit: float = 45) -> tuple[int, str]:
    try:
        out, _ = await asyncio.wait_for(process.communicate(), limit)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode or 0, out.decode(errors="replace")[-3000:]


async def call(
    pbx: Pbx,
    caller_scenario: str,
    callee_scenario: str | None,
    *,
    dialled: str = "202",
    calls: int = 1,
    caller_args: tuple[str, ...] = (),
    callee_args: tuple[str, ...] = (),
    callee_account: str = "202",
) -> tuple[tuple[int, str], tuple[int, str] | None]:
    """Run the callee SIPp (registered for ``callee_account``), then the caller SIPp."""
    callee = None
    try:
        if callee_scenario is not None:
            port = free_port()
            pbx.location.add(pbx.accounts[callee_account], port)
            callee = await run_sipp(
                pbx, "callee", callee_scenario, "-m", str(calls), *callee_args, port=port
            )
            await asyncio.sleep(0.3)
        auth = f"[authentication username=201 password={PASSWORD}201]"
        (pbx.tmp / "users.csv").write_text(f"SEQUENTIAL\n{pbx.domain};{dialled};201;{auth};\n")
        caller = await run_sipp(
            pbx,
            "caller",
            caller_scenario,
            "-inf", str(pbx.tmp / "users.csv"),
            "-m", str(calls),
            "-r", "10",
            *caller_args,
        )  # fmt: skip
        caller_result = await finish(caller)
        callee_result = await finish(callee) if callee is not None else None
    finally:
        if callee is not None and callee.returncode is None:
            callee.kill()
            await callee.wait()
    return caller_result, callee_result


def ok(result: tuple[int, str] | None) -> bool:
    return result is not None and result[0] == 0


# -- tests ----------------------------------------------------------------------------------


async def test_extension_calls_extension(pbx: Pbx) -> None:
    caller, callee = await call(
        pbx, CALLER_HEAD + ANSWERED + CALLER_BYE, CALLEE_ANSWERS + CALLEE_ACCEPTS_BYE, calls=3
    )
    assert ok(caller), caller
    assert ok(callee), callee
    records = await pbx.settle()
    assert len(records) == 3
    for record in records:
        assert record.disposition == "answered"
        assert record.direction == "internal"
        assert (record.from_number, record.to_number) == ("201", "202")
        assert record.caller_account_id == pbx.accounts["201"]
        assert record.callee_account_id == pbx.accounts["202"]
        assert record.caller_user_id == pbx.tenant["operator"].id
        assert record.callee_user_id == pbx.tenant["group_head"].id
        assert record.answered_at is not None and record.ended_at >= record.answered_at
        assert (record.hangup_side, record.hangup_reason) == ("caller", "bye")
    kinds = pbx.kinds()
    for kind in ("CallOffered", "CallRingingStarted", "CallAnswered", "CallEnded"):
        assert kinds.count(kind) == 3, kinds
    ended = next(e.event for e in pbx.events if e.event.kind == "CallEnded")
    assert ended.audience.user_ids == {pbx.tenant["operator"].id, pbx.tenant["group_head"].id}
    assert set(pbx.tenant.group_ids[:1]) <= ended.audience.group_ids


async def test_cancel_while_ringing(pbx: Pbx) -> None:
    caller, callee = await call(pbx, CALLER_HEAD + CALLER_CANCELS, CALLEE_RINGS_UNTIL_CANCEL)
    assert ok(caller), caller
    assert ok(callee), callee  # the callee's phone saw the CANCEL and answered 487
    [record] = await pbx.settle()
    assert record.disposition == "cancelled"
    assert (record.hangup_side, record.hangup_code) == ("caller", 487)
    assert record.answered_at is None
    assert pbx.kinds() == ["CallOffered", "CallRingingStarted", "CallEnded"]


async def test_callee_hangs_up(pbx: Pbx) -> None:
    caller, callee = await call(
        pbx,
        CALLER_HEAD + ANSWERED.replace('  <pause milliseconds="300"/>\n', "") + CALLER_GETS_BYE,
        CALLEE_ANSWERS_SAVING_FROM + CALLEE_HANGS_UP,
    )
    assert ok(caller), caller
    assert ok(callee), callee
    [record] = await pbx.settle()
    assert (record.disposition, record.hangup_side) == ("answered", "callee")


async def test_busy_callee(pbx: Pbx) -> None:
    caller, callee = await call(pbx, CALLER_HEAD + caller_final(486), CALLEE_BUSY)
    assert ok(caller), caller
    assert ok(callee), callee
    [record] = await pbx.settle()
    assert (record.disposition, record.hangup_code) == ("busy", 486)


async def test_unknown_extension_is_404(pbx: Pbx) -> None:
    caller, _ = await call(pbx, CALLER_HEAD + caller_final(404), None, dialled="299")
    assert ok(caller), caller
    [record] = await pbx.settle()
    assert (record.disposition, record.hangup_code, record.to_number) == ("failed", 404, "299")


async def test_unregistered_extension_is_480(pbx: Pbx) -> None:
    caller, _ = await call(pbx, CALLER_HEAD + caller_final(480), None, dialled="203")
    assert ok(caller), caller
    [record] = await pbx.settle()
    assert (record.disposition, record.hangup_reason) == ("no_answer", "not-registered")


async def test_wrong_password_is_refused_without_a_record(pbx: Pbx) -> None:
    scenario = (CALLER_HEAD + caller_final(403)).replace("[field3]", "[field4]")
    auth = "[authentication username=201 password=wrong-password]"
    (pbx.tmp / "bad.csv").write_text(f"SEQUENTIAL\n{pbx.domain};202;201;x;{auth};\n")
    process = await run_sipp(pbx, "bad", scenario, "-inf", str(pbx.tmp / "bad.csv"), "-m", "1")
    result = await finish(process)
    assert ok(result), result
    assert await pbx.settle() == []


PCMA_BODY = (
    SDP_BODY.replace("2353687637", "2353687640")
    .replace("RTP/AVP 0", "RTP/AVP 8")
    .replace("0 PCMU/8000", "8 PCMA/8000")
)
CALLER_EARLY_UPDATE = (
    """  <recv response="180"/>
"""
    + caller_request("UPDATE", 3, PCMA_BODY)
    + """  <recv response="200">
    <action>
      <ereg regexp="RTP/AVP 8" search_in="body" check_it="true" assign_to="pcma"/>
    </action>
  </recv>
  <Reference variables="pcma"/>
  <recv response="200" rtd="true"/>
"""
    + caller_request("ACK", 2, retrans=False)
    + '  <pause milliseconds="200"/>\n'
    + caller_request("BYE", 4)
    + '  <recv response="200"/>\n</scenario>\n'
)
CALLEE_ANSWERS_LATE = (
    CALLEE_HEAD
    + callee_response("180 Ringing")
    + '  <pause milliseconds="1500"/>\n'
    + callee_response("200 OK", SDP_BODY, retrans=True)
    + '  <recv request="ACK"/>\n'
    + CALLEE_ACCEPTS_BYE
)


async def test_update_before_the_answer_is_answered_by_the_pbx(pbx: Pbx) -> None:
    """RFC 3311: the caller changes his offer (to A-law) while the callee rings; the PBX,
    being the caller's media end, answers it with A-law at once; the call then proceeds."""
    if not pbx.anchored:
        pytest.skip("early UPDATE is answered by the media anchor (without it: 481)")
    caller, callee = await call(pbx, CALLER_HEAD + CALLER_EARLY_UPDATE, CALLEE_ANSWERS_LATE)
    assert ok(caller), caller
    assert ok(callee), callee
    [record] = await pbx.settle()
    assert record.disposition == "answered"


CALLER_REQUIRES_100REL = CALLER_HEAD.replace(
    "      [field3]\n", "      [field3]\n      Require: 100rel\n      Supported: timer\n"
)
CALLER_PRACKS = (
    """  <recv response="180">
    <action>
      <ereg regexp="RSeq: *([0-9]+)" search_in="msg" check_it="true" assign_to="all,rseq"/>
    </action>
  </recv>
  <Reference variables="all"/>
  <send retrans="500"><![CDATA[
      PRACK sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[field2]@[field0]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field1]@[field0]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 3 PRACK
      RAck: [$rseq] 2 INVITE
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
  <recv response="200"/>
  <recv response="200" rtd="true"/>
"""
    + caller_request("ACK", 2, retrans=False)
    + '  <pause milliseconds="200"/>\n'
    + caller_request("BYE", 4)
    + '  <recv response="200"/>\n</scenario>\n'
)


async def test_a_caller_requiring_100rel_gets_reliable_provisionals(pbx: Pbx) -> None:
    """RFC 3262: the 180 carries Require: 100rel and an RSeq, the caller's PRACK (RAck naming
    it) is answered 200, and the call proceeds — instead of the 420 of before."""
    caller, callee = await call(pbx, CALLER_REQUIRES_100REL + CALLER_PRACKS, CALLEE_ANSWERS_LATE)
    assert ok(caller), caller
    assert ok(callee), callee
    [record] = await pbx.settle()
    assert record.disposition == "answered"


async def test_hold_is_relayed(pbx: Pbx) -> None:
    caller, callee = await call(
        pbx, CALLER_HEAD + ANSWERED + CALLER_HOLD, CALLEE_ANSWERS + CALLEE_HOLD
    )
    assert ok(caller), caller
    assert ok(callee), callee  # the callee got the re-INVITE with the caller's sendonly offer
    [record] = await pbx.settle()
    assert record.disposition == "answered"
    held = [e.event for e in pbx.events if e.event.kind == "CallHoldStarted"]
    assert len(held) == 1 and held[0].side == "caller"  # type: ignore[attr-defined]


CALLER_HOLDS_IN_ACK = (
    caller_request("INVITE", 3)
    + '  <recv response="200"/>\n'
    + caller_request("ACK", 3, HOLD_BODY, retrans=False)
    + '  <pause milliseconds="300"/>\n'
    + caller_request("BYE", 4)
    + '  <recv response="200"/>\n</scenario>\n'
)
CALLEE_OFFERS_IN_200 = (
    '  <recv request="INVITE"/>\n'
    + callee_response("200 OK", SDP_BODY.replace("2353687637", "2353687639"), True)
    + '  <recv request="ACK"/>\n'
    + CALLEE_ACCEPTS_BYE
)


async def test_hold_answered_in_the_ack_of_a_late_offer_reinvite(pbx: Pbx) -> None:
    """The caller re-INVITEs without SDP; the callee offers in its 200; the caller's answer
    (a=sendonly) comes in the ACK: that is hold too, and it reaches the callee in its ACK."""
    caller, callee = await call(
        pbx, CALLER_HEAD + ANSWERED + CALLER_HOLDS_IN_ACK, CALLEE_ANSWERS + CALLEE_OFFERS_IN_200
    )
    assert ok(caller), caller
    assert ok(callee), callee
    [record] = await pbx.settle()
    assert record.disposition == "answered"
    held = [e.event for e in pbx.events if e.event.kind == "CallHoldStarted"]
    assert len(held) == 1 and held[0].side == "caller"  # type: ignore[attr-defined]


async def test_did_call_from_trusted_trunk_rings_the_group(pbx: Pbx, server: Server) -> None:
    """The fixture tenant's DID routes to the Sales group (operator and group head); only
    the operator's extension 101 has a registered phone."""
    did = await did_of(pbx, server)
    caller, callee = await call(
        pbx,
        TRUNK_HEAD + ANSWERED + CALLER_BYE,
        CALLEE_ANSWERS + CALLEE_ACCEPTS_BYE,
        dialled=did.lstrip("+"),
        callee_account="101",
    )
    assert ok(caller), caller
    assert ok(callee), callee
    [record] = await pbx.settle()
    assert record.direction == "inbound" and record.did == did
    assert record.trunk_id == pbx.tenant.trunk_id
    assert record.from_number == "+79161234567"
    assert record.callee_account_id == pbx.accounts["101"]
    offered = next(e.event for e in pbx.events if e.event.kind == "CallOffered")
    assert pbx.tenant.group_ids[0] in offered.audience.group_ids


async def test_did_with_unknown_number_from_trunk_is_404(pbx: Pbx) -> None:
    scenario = TRUNK_HEAD + caller_final(404).replace("[field0]", "[remote_ip]")
    caller, _ = await call(pbx, scenario, None, dialled="74959999999")
    assert ok(caller), caller


async def test_did_routed_to_hangup_is_refused(pbx: Pbx, server: Server) -> None:
    system = Actor.system(pbx.tenant.id)
    number = await server.platform.pbx.create_number(
        system, NumberCreate(number="+74951230000", route_kind="hangup")
    )
    await server.platform.sip_cache.reload()
    try:
        scenario = TRUNK_HEAD + caller_final(480).replace("[field0]", "[remote_ip]")
        caller, _ = await call(pbx, scenario, None, dialled="74951230000")
        assert ok(caller), caller
        [record] = await pbx.settle()
        assert (record.direction, record.disposition) == ("inbound", "no_answer")
    finally:
        await server.platform.pbx.delete_number(system, number["id"])


async def did_of(pbx: Pbx, server: Server) -> str:
    from pomelo.pbx.models import PhoneNumber

    async with server.platform.db.session() as session:
        did = await session.scalar(
            select(PhoneNumber.number).where(PhoneNumber.id == pbx.tenant.number_id)
        )
    assert did is not None
    return did


@pytest.mark.slow
async def test_calls_complete_with_packet_loss(pbx: Pbx, server: Server) -> None:
    """The calling SIPp (a trunk) drops 10 % of what it sends and receives; retransmissions
    by SIPp and by Pomelo's transactions must still complete every call.

    SIPp's own retransmission handling has limits this scenario steers around: the caller
    is the trunk rather than a digest-authenticating phone (SIPp mishandles a 407 that is
    retransmitted after its ACK was lost); it waits 2.5 s after its ACK, so a lost ACK is
    repeated on our retransmitted 200 before it sends BYE (a 200 arriving while its BYE is
    outstanding stalls the SIPp call); and the callee is not lossy (a SIPp UAS takes an
    INVITE retransmitted after its own lost 200 for a new call)."""
    did = await did_of(pbx, server)
    caller, callee = await call(
        pbx,
        TRUNK_HEAD + ANSWERED.replace('"300"', '"2500"') + CALLER_BYE,
        CALLEE_ANSWERS + CALLEE_ACCEPTS_BYE,
        dialled=did.lstrip("+"),
        callee_account="101",
        calls=10,
        caller_args=("-lost", "10"),
    )
    assert ok(caller), caller
    assert ok(callee), callee
    records = await pbx.settle(cleared=False)
    assert [r.disposition for r in records] == ["answered"] * 10


# -- flows SIPp cannot script: Python phones on Pomelo's own SIP stack ---------------------

PHONE_SDP = (
    "v=0\r\no={name} 100 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
SDP_TYPE = ("Content-Type", "application/sdp")


class Phone:
    """A small user agent: answers (or only rings), records what it receives, places calls
    with digest authentication and sends in-dialog requests."""

    def __init__(self, name: str, *, answer: bool = True) -> None:
        self.name = name
        self.answer = answer
        self.endpoint = SipEndpoint(self.on_request, on_ack=self.on_ack)
        self.requests: list[SipRequest] = []
        self.ringing: list[ServerTransaction] = []
        self.acks: list[SipRequest] = []
        self.dialogs: dict[str, Dialog] = {}
        self.port = 0
        self.pbx_port = 0

    async def start(self, pbx_port: int) -> Phone:
        transport = await self.endpoint.listen("UDP", "127.0.0.1", 0)
        self.port = transport.local_address[1]
        self.pbx_port = pbx_port
        return self

    @property
    def contact(self) -> NameAddr:
        return NameAddr(SipUri("127.0.0.1", user=self.name, port=self.port))

    @property
    def target(self) -> Target:
        transport = self.endpoint.transports.get("UDP")
        assert transport is not None
        return Target(transport, ("127.0.0.1", self.pbx_port))

    def sdp(self, version: int = 1) -> bytes:
        return PHONE_SDP.format(name=self.name, version=version, port=self.port).encode()

    def on_request(self, tx: ServerTransaction) -> None:
        request = tx.request
        self.requests.append(request)
        if request.method == "INVITE" and not request.to.tag:
            tx.reply(180, contact=self.contact)
            self.ringing.append(tx)
            if self.answer:
                sent = tx.reply(200, body=self.sdp(), headers=[SDP_TYPE], contact=self.contact)
                assert sent is not None
                self.dialogs[request.call_id] = Dialog.from_uas(request, sent)
            return
        dialog = self.dialogs.get(request.call_id)
        if dialog is None or dialog.check_request(request) is not None:
            tx.reply(481)
            return
        if request.method == "INVITE":
            tx.reply(200, body=self.sdp(), headers=[SDP_TYPE], contact=self.contact)
        else:
            tx.reply(200)
        if request.method == "BYE":
            dialog.terminate()

    def on_ack(self, request: SipRequest, source: Source) -> None:
        self.acks.append(request)

    def received(self, method: str, call_id: str | None = None) -> list[SipRequest]:
        return [
            r
            for r in self.requests
            if r.method == method and (call_id is None or r.call_id == call_id)
        ]

    async def wait_for(self, method: str, count: int = 1, call_id: str | None = None) -> None:
        for _ in range(250):
            if len(self.received(method, call_id)) >= count:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{self.name} did not receive {count} {method}: {self.requests}")

    async def call(
        self, pbx: Pbx, ext: str, dialled: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> tuple[SipResponse, str]:
        invite = SipRequest(
            "INVITE",
            f"sip:{dialled}@{pbx.domain}",
            from_=NameAddr(f"sip:{ext}@{pbx.domain}", params={"tag": new_tag()}),
            to=NameAddr(f"sip:{dialled}@{pbx.domain}"),
            call_id=f"{new_tag()}@{self.name}",
            contacts=[self.contact],
            body=self.sdp(),
            headers=[SDP_TYPE, *headers],
        )
        response = await self.endpoint.request(invite, target=self.target)
        if response.status == 407:
            invite = invite.copy()
            invite.vias, invite.cseq = [], 2
            challenge = select_challenge(response.header_values("Proxy-Authenticate"))
            value = answer_challenge(challenge, "INVITE", str(invite.uri), ext, PASSWORD + ext)
            invite.set_header("Proxy-Authorization", value)
            response = await self.endpoint.request(invite, target=self.target)
        if 200 <= response.status < 300:
            dialog = Dialog.from_uac(invite, response)
            self.dialogs[invite.call_id] = dialog
            await self.endpoint.send_ack(dialog.create_ack(invite.cseq), target=self.target)
        return response, invite.call_id

    async def send(
        self,
        call_id: str,
        method: str,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
    ) -> SipResponse:
        dialog = self.dialogs[call_id]
        extra = list(headers or [])
        if body:
            extra.append(SDP_TYPE)
        request = dialog.create_request(method, body=body, headers=extra)
        response = await self.endpoint.request(request, target=self.target)
        if method == "INVITE" and 200 <= response.status < 300:
            await self.endpoint.send_ack(dialog.create_ack(request.cseq), target=self.target)
        return response

    async def close(self) -> None:
        await self.endpoint.close()


@asynccontextmanager
async def phones(pbx: Pbx, *names: str, answer: bool = True) -> AsyncIterator[list[Phone]]:
    """Phones registered (in the test location) as the extensions ``names``."""
    started = [await Phone(f"p{name}", answer=answer).start(pbx.port) for name in names]
    for name, phone in zip(names, started, strict=True):
        pbx.location.add(pbx.accounts[name], phone.port)
    try:
        yield started
    finally:
        for phone in started:
            await phone.close()


def relayed_sdp(pbx: Pbx, body: bytes, original: bytes) -> bool:
    """Did ``original`` (a phone's SDP) reach the other side? Passed through, it arrives as it
    is; with anchored media it arrives as the PBX's own description of the same stream: the
    PBX's origin and port, and a codec the phone offered."""
    if not pbx.anchored:
        return body == original
    ours, theirs = parse_sdp(body), parse_sdp(original)
    offered = set(theirs.media[0].formats)
    return (
        ours.origin.username == "pomelo"
        and ours.media[0].port != theirs.media[0].port
        and bool(offered & set(ours.media[0].formats))
    )


@pytest.fixture(params=["passthrough", "anchored"])
async def timed(
    server: Server, tenant: TenantFixture, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Pbx]:
    """A PBX whose timers only move when the test says so (media relayed unchanged, then
    anchored, like ``pbx``)."""
    timers = ManualTimers()
    settings = CallSettings(ring_timeout=30, max_duration=3600, transfer_grace=2)
    media = None
    if request.param == "anchored":
        media = MediaEngine("127.0.0.1", 34000, 34999, rtp_timeout=0)
    try:
        async with running_pbx(server, tenant, tmp_path, settings, timers, media=media) as box:
            box.timers = timers
            box.anchored = media is not None
            yield box
    finally:
        if media is not None:
            await media.stop()


async def test_ring_timeout_cancels_and_answers_480(timed: Pbx) -> None:
    async with phones(timed, "201") as [a], phones(timed, "202", answer=False) as [b]:
        pending = asyncio.ensure_future(a.call(timed, "201", "202"))
        await b.wait_for("INVITE")
        await timed.timers.advance(30)
        response, _ = await pending
        assert response.status == 480
        assert b.ringing[0].cancelled  # the PBX CANCELled the phone that rang out
    [record] = await timed.settle()
    assert (record.disposition, record.hangup_reason) == ("no_answer", "no-answer")


async def test_max_duration_hangs_up_both_sides(timed: Pbx) -> None:
    async with phones(timed, "201", "202") as [a, b]:
        response, _ = await a.call(timed, "201", "202")
        assert response.status == 200
        await timed.timers.advance(3600)
        await a.wait_for("BYE")
        await b.wait_for("BYE")
    [record] = await timed.settle()
    assert (record.hangup_side, record.hangup_reason) == ("system", "max-duration")


async def test_pbx_refreshes_sessions_it_is_refresher_of(timed: Pbx) -> None:
    """Neither phone does session timers, so the PBX refreshes both legs (re-INVITE with the
    unchanged SDP: same o= version), and the call goes on."""
    async with phones(timed, "201", "202") as [a, b]:
        response, call_id = await a.call(timed, "201", "202")
        assert response.status == 200
        assert response.header("Session-Expires") == "1800;refresher=uas"
        await timed.timers.advance(900)
        await a.wait_for("INVITE")
        await b.wait_for("INVITE", 2)
        refresh = a.received("INVITE")[0]
        assert relayed_sdp(timed, refresh.body, b.sdp()) and refresh.header("Session-Expires")
        await timed.timers.advance(900)
        await a.wait_for("INVITE", 2)
        assert not a.received("BYE") and not b.received("BYE")
        assert (await a.send(call_id, "BYE")).status == 200
        await b.wait_for("BYE")
    [record] = await timed.settle()
    assert record.hangup_reason == "bye"


async def test_missed_refresh_ends_the_call(timed: Pbx) -> None:
    headers = (("Supported", "timer"), ("Session-Expires", "120;refresher=uac"))
    async with phones(timed, "201", "202") as [a, b]:
        response, call_id = await a.call(timed, "201", "202", headers)
        assert response.header("Session-Expires") == "120;refresher=uac"
        assert response.header("Require") == "timer"
        await timed.timers.advance(70)  # the phone refreshes in time: the PBX answers itself
        refresh = await a.send(call_id, "UPDATE", headers=[("Session-Expires", "120")])
        assert refresh.status == 200 and refresh.header("Session-Expires")
        assert not b.received("UPDATE")
        await timed.timers.advance(70)
        assert not a.received("BYE")
        await timed.timers.advance(30)  # 120 - min(32, 120/3) = 88 s after the refresh
        await a.wait_for("BYE")
        await b.wait_for("BYE")
    [record] = await timed.settle()
    assert (record.hangup_side, record.hangup_reason) == ("system", "session-timer")


async def test_too_small_session_interval_is_422(timed: Pbx) -> None:
    async with phones(timed, "201") as [a]:
        response, _ = await a.call(timed, "201", "202", (("Session-Expires", "30"),))
    assert response.status == 422 and response.header("Min-SE") == "90"


async def test_info_and_hold_are_relayed(timed: Pbx) -> None:
    async with phones(timed, "201", "202") as [a, b]:
        _, call_id = await a.call(timed, "201", "202")
        info = await a.send(
            call_id, "INFO", b"Signal=5\r\nDuration=160\r\n",
            [("Content-Type", "application/dtmf-relay")],
        )  # fmt: skip
        assert info.status == 200
        await b.wait_for("INFO")
        assert b.received("INFO")[0].body == b"Signal=5\r\nDuration=160\r\n"
        held = await a.send(
            call_id, "INVITE", a.sdp(2).replace(b"PCMU/8000", b"PCMU/8000\r\na=sendonly")
        )
        assert held.status == 200 and relayed_sdp(timed, held.body, b.sdp())
        resumed = await a.send(call_id, "INVITE", a.sdp(3))
        assert resumed.status == 200
        await b.wait_for("INVITE", 3)  # the initial INVITE, hold and resume
        await a.send(call_id, "BYE")
    await timed.settle()
    kinds = timed.kinds()
    assert kinds.count("CallHoldStarted") == 1 and kinds.count("CallResumed") == 1


async def test_blind_transfer(timed: Pbx) -> None:
    """201 calls 202; 202 transfers 201 to 203 with REFER. The PBX calls 203 (no offer),
    gives 203's offer to 201 in a re-INVITE, tells 202 how it went (NOTIFY sipfrag) and
    releases it; 201 and 203 are then talking."""
    async with phones(timed, "201", "202", "203") as [a, b, c]:
        response, a_call = await a.call(timed, "201", "202")
        assert response.status == 200
        b_call = b.received("INVITE")[0].call_id
        refer = await b.send(b_call, "REFER", headers=[("Refer-To", f"<sip:203@{timed.domain}>")])
        assert refer.status == 202
        await c.wait_for("INVITE")
        assert c.received("INVITE")[0].body == b""  # third-party call control: no offer
        await a.wait_for("INVITE")  # re-INVITE carrying 203's offer
        assert relayed_sdp(timed, a.received("INVITE")[0].body, c.sdp())
        await b.wait_for("NOTIFY", 2)
        frags = [n.body for n in b.received("NOTIFY")]
        assert frags[0].startswith(b"SIP/2.0 100") and frags[-1].startswith(b"SIP/2.0 200")
        assert (
            b.received("NOTIFY")[-1]
            .header(
                "Subscription-State",
            )
            .startswith("terminated")
        )
        await timed.timers.advance(2)  # the transferor did not hang up: the PBX does
        await b.wait_for("BYE")
        for _ in range(50):
            if c.acks:
                break
            await asyncio.sleep(0.02)
        assert c.acks and relayed_sdp(
            timed, c.acks[-1].body, a.sdp()
        )  # 201's answer reached 203 in the ACK
        assert (await a.send(a_call, "BYE")).status == 200
        await c.wait_for("BYE")
    [record] = await timed.settle()
    assert record.disposition == "answered"
    transferred = [e.event for e in timed.events if e.event.kind == "CallTransferred"]
    assert len(transferred) == 1
    assert transferred[0].mode == "blind" and transferred[0].target == "203"  # type: ignore[attr-defined]


async def test_blind_transfer_to_unknown_target_keeps_the_call(timed: Pbx) -> None:
    async with phones(timed, "201", "202") as [a, b]:
        _, a_call = await a.call(timed, "201", "202")
        b_call = b.received("INVITE")[0].call_id
        refer = await b.send(b_call, "REFER", headers=[("Refer-To", f"<sip:299@{timed.domain}>")])
        assert refer.status == 202
        await b.wait_for("NOTIFY", 2)
        assert b.received("NOTIFY")[-1].body.startswith(b"SIP/2.0 404")
        assert (await a.send(a_call, "BYE")).status == 200
        await b.wait_for("BYE")


async def test_attended_transfer(timed: Pbx) -> None:
    """201 calls 202 (call 1); 202 consults 203 (call 2), then REFERs call 1 to 203 with
    Replaces naming call 2: the PBX joins 201 and 203 and releases both of 202's legs."""
    async with phones(timed, "201", "202", "203") as [a, b, c]:
        _, a_call = await a.call(timed, "201", "202")
        b_call1 = b.received("INVITE")[0].call_id
        response, b_call2 = await b.call(timed, "202", "203")
        assert response.status == 200
        dialog = b.dialogs[b_call2]
        replaces = f"{b_call2};to-tag={dialog.remote_tag};from-tag={dialog.local_tag}"
        refer_to = f"<sip:203@{timed.domain}?Replaces={quote(replaces, safe='')}>"
        refer = await b.send(b_call1, "REFER", headers=[("Refer-To", refer_to)])
        assert refer.status == 202
        await b.wait_for("BYE", call_id=b_call2)  # its consultation leg is released at once
        c_call = c.received("INVITE")[0].call_id
        await c.wait_for("INVITE", 2, call_id=c_call)  # re-INVITE without offer
        await a.wait_for("INVITE")  # re-INVITE with 203's offer
        assert relayed_sdp(timed, a.received("INVITE")[0].body, c.sdp())
        await b.wait_for("NOTIFY", 2)
        assert b.received("NOTIFY")[-1].body.startswith(b"SIP/2.0 200")
        await timed.timers.advance(2)
        await b.wait_for("BYE", call_id=b_call1)
        assert (await a.send(a_call, "BYE")).status == 200
        await c.wait_for("BYE")
    records = await timed.settle()
    assert sorted(r.hangup_reason or "" for r in records) == ["bye", "transferred"]
    transferred = [e.event for e in timed.events if e.event.kind == "CallTransferred"]
    assert [t.mode for t in transferred] == ["attended"]  # type: ignore[attr-defined]


class Provider(Phone):
    """A telephony provider behind a trunk: challenges every INVITE (401) and answers the
    one that carries valid digest credentials."""

    def __init__(self, username: str, password: str) -> None:
        super().__init__("provider")
        self.challenger = DigestChallenger("provider.example", b"provider-nonce-secret-0123456789")
        self.ha1 = ha1(username, "provider.example", password, DigestAlgorithm.SHA256)

    def on_request(self, tx: ServerTransaction) -> None:
        request = tx.request
        if request.method != "INVITE" or request.to.tag:
            super().on_request(tx)
            return
        header = request.header("Authorization")
        if header is None:
            self.requests.append(request)
            challenges = self.challenger.challenge()
            tx.reply(401, headers=[("WWW-Authenticate", c) for c in challenges])
            return
        outcome = self.challenger.verify_header("INVITE", header, lambda *_: self.ha1)
        if outcome is not DigestOutcome.OK:
            tx.reply(403)
            return
        super().on_request(tx)


async def test_outside_number_through_the_trunk_with_digest(
    server: Server, tenant: TenantFixture, tmp_path: Path
) -> None:
    provider = await Provider("pomelo-trunk", "provider-password").start(0)
    system = Actor.system(tenant.id)
    trunk = await server.platform.pbx.create_trunk(
        system,
        TrunkCreate(
            name="A-provider",  # sorts before the fixture's "Carrier": the tenant's first trunk
            kind="peer",
            host="127.0.0.1",
            port=provider.port,
            username="pomelo-trunk",
            password="provider-password",
            caller_id="+74950001122",
            strip_digits=1,
            prefix="00",
        ),
    )
    box = SecretBox(TEST_SECRET)

    def trunk_password(info: TrunkInfo) -> str | None:
        return box.open(info.password_sealed) if info.password_sealed else None

    settings = CallSettings()
    try:
        async with running_pbx(
            server, tenant, tmp_path, settings, trunk_password=trunk_password
        ) as pbx:
            async with phones(pbx, "201") as [a]:
                response, call_id = await a.call(pbx, "201", "89161234567")
                assert response.status == 200 and response.body == provider.sdp()
                [first, second] = provider.received("INVITE")
                assert str(second.uri) == f"sip:009161234567@127.0.0.1:{provider.port}"
                assert second.from_.uri.user == "+74950001122"  # type: ignore[union-attr]
                assert second.cseq == first.cseq + 1 and second.header("Authorization")
                assert (await a.send(call_id, "BYE")).status == 200
                await provider.wait_for("BYE")
            [record] = await pbx.settle()
            assert record.direction == "outbound" and record.trunk_id == trunk["id"]
            assert (record.to_number, record.disposition) == ("89161234567", "answered")
    finally:
        await provider.close()
        await server.platform.pbx.delete_trunk(system, trunk["id"])
