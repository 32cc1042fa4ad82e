"""End to end against the real SIPp: a tiny UAS on :class:`SipEndpoint` answers SIPp's UAC.

SIPp is the reference load generator for SIP; if our transactions or Via handling were off,
it would count failed calls and exit non-zero. Skipped only when the ``sipp`` binary is
missing (Debian/Ubuntu package ``sip-tester``).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pomelo.sip.endpoint import SipEndpoint
from pomelo.sip.message import SipRequest
from pomelo.sip.transaction import ServerTransaction
from pomelo.sip.transport import Source
from pomelo.sip.uri import NameAddr, SipUri
from tests.conftest import require_tool

SIPP = shutil.which("sipp")
pytestmark = pytest.mark.usefixtures("sipp")


@pytest.fixture(scope="module")
def sipp() -> str:
    """Skips the module without SIPp, or fails it when CI demands real peers."""
    return require_tool("sipp", "sip-tester")


SDP = (
    b"v=0\r\no=pomelo 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 20000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)

OPTIONS_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="options">
  <send retrans="500">
    <![CDATA[
      OPTIONS sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 OPTIONS
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" />
</scenario>
"""


class TinyUas:
    """Answers OPTIONS and BYE 200, INVITE 200 with SDP; counts ACKs."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.contact = NameAddr(SipUri("127.0.0.1", user="pomelo"))

    def __call__(self, tx: ServerTransaction) -> None:
        method = tx.request.method
        self.counts[method] = self.counts.get(method, 0) + 1
        if method == "INVITE":
            tx.reply(
                200,
                contact=self.contact,
                body=SDP,
                headers=[("Content-Type", "application/sdp")],
            )
        else:
            tx.reply(200)

    def on_ack(self, ack: SipRequest, source: Source) -> None:
        self.counts["ACK"] = self.counts.get("ACK", 0) + 1


@pytest.fixture
async def uas() -> AsyncIterator[tuple[SipEndpoint, TinyUas]]:
    app = TinyUas()
    endpoint = SipEndpoint(app, on_ack=app.on_ack)
    await endpoint.listen("UDP")
    await endpoint.listen("TCP")
    try:
        yield endpoint, app
    finally:
        await endpoint.close()


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def run_sipp(workdir: Path, port: int, *args: str, transport: str = "u1") -> tuple[int, str]:
    """Run SIPp in ``workdir`` (it writes its error logs to the current directory)."""
    assert SIPP is not None
    kind = socket.SOCK_DGRAM if transport == "u1" else socket.SOCK_STREAM
    command = [
        SIPP,
        f"127.0.0.1:{port}",
        "-i", "127.0.0.1",
        "-p", str(free_port(kind)),
        "-t", transport,
        "-timeout", "30s",
        "-timeout_error",
        "-nostdin",
        "-trace_err",
        *args,
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=workdir,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 45)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return process.returncode or 0, output.decode(errors="replace")[-3000:]


def port_of(endpoint: SipEndpoint, kind: str) -> int:
    transport = endpoint.transports.get(kind)
    assert transport is not None
    return transport.local_address[1]


async def test_sipp_options(uas: tuple[SipEndpoint, TinyUas], tmp_path: Path) -> None:
    endpoint, app = uas
    scenario = tmp_path / "options.xml"
    scenario.write_text(OPTIONS_SCENARIO)
    code, output = await run_sipp(
        tmp_path, port_of(endpoint, "UDP"), "-sf", str(scenario), "-m", "20", "-r", "50"
    )
    assert code == 0, output
    assert app.counts.get("OPTIONS") == 20


async def test_sipp_invite_ack_bye(uas: tuple[SipEndpoint, TinyUas], tmp_path: Path) -> None:
    endpoint, app = uas
    code, output = await run_sipp(
        tmp_path, port_of(endpoint, "UDP"), "-sn", "uac", "-m", "20", "-r", "20"
    )
    assert code == 0, output
    assert app.counts.get("INVITE") == 20 and app.counts.get("BYE") == 20
    assert app.counts.get("ACK", 0) >= 20


async def test_sipp_invite_over_tcp(uas: tuple[SipEndpoint, TinyUas], tmp_path: Path) -> None:
    endpoint, app = uas
    code, output = await run_sipp(
        tmp_path, port_of(endpoint, "TCP"), "-sn", "uac", "-m", "20", "-r", "20", transport="t1"
    )
    assert code == 0, output
    assert app.counts.get("BYE") == 20


@pytest.mark.slow
async def test_sipp_survives_packet_loss(uas: tuple[SipEndpoint, TinyUas], tmp_path: Path) -> None:
    """SIPp drops 10 % of messages; retransmissions on both sides must still finish calls."""
    endpoint, app = uas
    code, output = await run_sipp(
        tmp_path, port_of(endpoint, "UDP"), "-sn", "uac", "-m", "20", "-r", "20", "-lost", "10"
    )
    assert code == 0, output
    assert app.counts.get("INVITE") == 20
