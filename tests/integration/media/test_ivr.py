"""Voice menus with real peers: SIPp sends RFC 4733 DTMF from a capture, baresip presses keys
and records what it heard. The branch taken is proven by which phone rings; the prompt by
correlating the phone's recording with the rendered text-to-speech."""

from __future__ import annotations

import asyncio
import socket
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pomelo.auth.access import Actor
from pomelo.auth.schemas import UserCreate
from pomelo.media.resample import resample
from pomelo.pbx.models import PhoneNumber, Scenario
from pomelo.pbx.schemas import NumberUpdate, SipAccountCreate
from tests.conftest import Server, TenantFixture, require_tool
from tests.support.baresip import Baresip

PROMPT = "Welcome to the test line. For sales press one, for support press two."

SIPP_CALL = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="menu caller">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Client" <sip:79161234567@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:79161234567@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=client 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15

    ]]>
  </send>
  <recv response="100" optional="true" />
  <recv response="200" />
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Client" <sip:79161234567@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="800" />
  <nop>
    <action>
      <exec play_pcap_audio="/usr/share/sip-tester/dtmf_2833_{digit}.pcap" />
    </action>
  </nop>
  <pause milliseconds="{hold_ms}" />
  <send retrans="500">
    <![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Client" <sip:79161234567@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" />
</scenario>
"""


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _menu_number(server: Server, tenant: TenantFixture) -> str:
    """Route the tenant's number to a menu: 1 → Sales, 2 → Support, nothing → hang up."""
    platform = server.platform
    sales, support = tenant.group_ids
    async with platform.db.session() as session, session.begin():
        scenario = Scenario(
            tenant_id=tenant.id,
            name="Test menu",
            definition={
                "type": "menu",
                "prompt": {"text": PROMPT, "lang": "en"},
                "options": {"1": {"group": sales}, "2": {"group": support}},
                "timeout": 6,
                "retries": 0,
            },
        )
        session.add(scenario)
        await session.flush()
        number = await session.get(PhoneNumber, tenant.number_id)
        assert number is not None
        did, scenario_id = number.number, scenario.id
    await platform.pbx.update_number(
        Actor.system(tenant.id),
        tenant.number_id,
        NumberUpdate(route_kind="scenario", route_target=scenario_id),
    )
    await platform.sip_cache.reload()
    return did


async def _support_phone(server: Server, tenant: TenantFixture, tmp_path: Path) -> Baresip:
    """A Support employee with extension 150 on a baresip that answers by itself."""
    platform = server.platform
    system = Actor.system(tenant.id)
    user = await platform.directory.create_user(
        system,
        UserCreate(
            username="support-1",
            display_name="Support One",
            password="long-enough-password-1",
            role="operator",
            group_ids=[tenant.group_ids[1]],
        ),
    )
    await platform.pbx.create_account(
        system, SipAccountCreate(extension="150", user_id=user["id"], password="phone-pass-150")
    )
    await platform.sip_cache.reload()
    phone = Baresip(
        tmp_path / "support",
        user="150",
        domain=f"{tenant.slug}.sip",
        password="phone-pass-150",
        proxy=("127.0.0.1", server.platform.sip_server.port),
        auto_answer=True,
        tone=700,
    )
    await phone.start()
    assert await phone.registration() == "OK"
    return phone


async def _run_sipp(
    server: Server, tmp_path: Path, did: str, digit: str, scenario: str = SIPP_CALL
) -> int:
    sipp = require_tool("sipp", "sip-tester")
    path = tmp_path / "menu.xml"
    path.write_text(scenario.replace("{digit}", digit).replace("{hold_ms}", "3500"))
    scenario_path = path
    process = await asyncio.create_subprocess_exec(
        sipp,
        f"127.0.0.1:{server.platform.sip_server.port}",
        "-sf",
        str(scenario_path),
        "-s",
        did,
        "-m",
        "1",
        "-i",
        "127.0.0.1",
        "-p",
        str(_free_udp_port()),
        "-mp",
        str(_free_udp_port() & ~1),
        "-timeout",
        "25",
        "-timeout_error",
        "-trace_err",
        "-nostdin",
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 40)
    assert process.returncode is not None
    if process.returncode != 0:
        logs = "".join(p.read_text() for p in tmp_path.glob("*errors.log"))
        pytest.fail(f"SIPp failed ({process.returncode}): {err.decode()} {logs}")
    return process.returncode


async def test_sipp_dtmf_2_reaches_the_support_phone(
    server: Server, tenant: TenantFixture, tmp_path: Path
) -> None:
    did = await _menu_number(server, tenant)
    phone = await _support_phone(server, tenant, tmp_path)
    try:
        sipp = asyncio.create_task(_run_sipp(server, tmp_path, did, "2"))
        incoming = await phone.wait_for("CALL_ESTABLISHED", timeout=20)
        assert incoming["direction"] == "incoming"
        await phone.wait_for("CALL_CLOSED", timeout=20)
        assert await sipp == 0
    finally:
        await phone.stop()
    record = await _last_record(server, tenant)
    assert record.disposition == "answered"
    assert record.group_id == tenant.group_ids[1]


SIPP_INFO = """
  <send>
    <![CDATA[
      INFO sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Client" <sip:79161234567@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 INFO
      Max-Forwards: 70
      Content-Type: application/dtmf-relay
      Content-Length: [len]

      Signal=2
      Duration=160
    ]]>
  </send>
  <recv response="200" />
"""


def _inband_pcap(path: Path, digit: str) -> None:
    """A capture SIPp can play: half a second of silence, then the key as audio tones (no
    telephone-events), as PCMU RTP packets 20 ms apart."""
    import struct

    from pomelo.media.dtmf import dtmf_tones
    from pomelo.media.g711 import ulaw_encode

    pcm = np.concatenate([np.zeros(4000, np.int16), dtmf_tones(digit, tone_ms=200, gap_ms=300)])
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i in range(len(pcm) // 160):
        rtp = struct.pack("!BBHII", 0x80, 0, i, i * 160, 0x1234) + ulaw_encode(
            pcm[i * 160 : (i + 1) * 160]
        )
        udp = struct.pack("!HHHH", 40000, 40002, 8 + len(rtp), 0) + rtp
        ip = (
            struct.pack(
                "!BBHHHBBH4s4s",
                0x45,
                0,
                20 + len(udp),
                i,
                0,
                64,
                17,
                0,
                bytes([127, 0, 0, 1]),
                bytes([127, 0, 0, 1]),
            )
            + udp
        )
        frame = b"\x00" * 12 + b"\x08\x00" + ip
        usec = i * 20_000
        out.append(
            struct.pack("<IIII", usec // 1_000_000, usec % 1_000_000, len(frame), len(frame))
        )
        out.append(frame)
    path.write_bytes(b"".join(out))


async def test_sip_info_and_inband_tones_choose_too(
    server: Server, tenant: TenantFixture, tmp_path: Path
) -> None:
    """Key 2 sent as SIP INFO (application/dtmf-relay), then as tones in the audio: both
    reach the Support phone, like RFC 4733 events do."""
    did = await _menu_number(server, tenant)
    phone = await _support_phone(server, tenant, tmp_path)
    pcap = tmp_path / "inband2.pcap"
    _inband_pcap(pcap, "2")
    info = SIPP_CALL.replace(
        """  <nop>
    <action>
      <exec play_pcap_audio="/usr/share/sip-tester/dtmf_2833_{digit}.pcap" />
    </action>
  </nop>
""",
        SIPP_INFO,
    ).replace("CSeq: 2 BYE", "CSeq: 3 BYE")
    inband = SIPP_CALL.replace("/usr/share/sip-tester/dtmf_2833_{digit}.pcap", str(pcap))
    try:
        for scenario in (info, inband):
            sipp = asyncio.create_task(_run_sipp(server, tmp_path, did, "2", scenario=scenario))
            incoming = await phone.wait_for("CALL_ESTABLISHED", timeout=20)
            assert incoming["direction"] == "incoming"
            await phone.wait_for("CALL_CLOSED", timeout=20)
            assert await sipp == 0
            record = await _last_record(server, tenant)
            assert record.group_id == tenant.group_ids[1]
    finally:
        await phone.stop()


async def test_sipp_key_without_an_employee_ends_the_call(
    server: Server, tenant: TenantFixture, tmp_path: Path
) -> None:
    """Key 1 → Sales, whose only phone (101) is not registered: the PBX hangs up on the
    caller (SIPp then gets our BYE and fails its own BYE with 481 — expected here)."""
    did = await _menu_number(server, tenant)
    sipp = require_tool("sipp", "sip-tester")
    scenario = tmp_path / "menu.xml"
    scenario.write_text(SIPP_CALL.replace("{digit}", "1").replace("{hold_ms}", "2500"))
    process = await asyncio.create_subprocess_exec(
        sipp,
        f"127.0.0.1:{server.platform.sip_server.port}",
        *("-sf", str(scenario), "-s", did, "-m", "1", "-i", "127.0.0.1"),
        *("-p", str(_free_udp_port()), "-mp", str(_free_udp_port() & ~1)),
        *("-timeout", "20", "-nostdin"),
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.wait_for(process.wait(), 40)
    record = await _last_record(server, tenant)
    assert record.hangup_side == "system"
    assert record.answered_at is None
    assert record.group_id == tenant.group_ids[0]


async def test_baresip_hears_the_prompt_and_its_key_is_detected(
    server: Server, tenant: TenantFixture, tmp_path: Path
) -> None:
    platform = server.platform
    did = await _menu_number(server, tenant)
    support = await _support_phone(server, tenant, tmp_path)
    await platform.pbx.create_account(
        Actor.system(tenant.id), SipAccountCreate(extension="160", password="phone-pass-160")
    )
    await platform.sip_cache.reload()
    caller = Baresip(
        tmp_path / "caller",
        user="160",
        domain=f"{tenant.slug}.sip",
        password="phone-pass-160",
        proxy=("127.0.0.1", platform.sip_server.port),
        tone=440,
    )
    await caller.start()
    try:
        assert await caller.registration() == "OK"
        await caller.command("dial", f"sip:{did}@{tenant.slug}.sip")
        await caller.wait_for("CALL_ESTABLISHED")
        await asyncio.sleep(3.0)  # hear part of the prompt
        await caller.command("sndcode", "2")
        await support.wait_for("CALL_ESTABLISHED", timeout=15)
        await asyncio.sleep(1.0)
        await caller.command("hangup")
        await support.wait_for("CALL_CLOSED")
    finally:
        await caller.stop()
        await support.stop()
    assert platform.calls.tts is not None
    rendered = await platform.calls.tts.prompt(PROMPT, "en")
    heard = _heard(tmp_path / "caller")
    other = await platform.calls.tts.prompt("Completely different words are spoken here.", "en")
    matched = _best_correlation(heard, rendered[: 8000 * 2])
    unrelated = _best_correlation(heard, other[: 8000 * 2])
    print(f"prompt correlation {matched:.2f}, unrelated phrase {unrelated:.2f}")
    assert matched > 0.6
    assert unrelated < 0.4
    record = await _last_record(server, tenant)
    assert record.group_id == tenant.group_ids[1]
    assert record.disposition == "answered"
    # The call was recorded from the moment the PBX answered: client left, what the client
    # heard (the prompt, then the employee) right.
    left, right = await _recording_of(server, tenant, record.id)
    assert _dominant_hz(left[8000:16000]) == pytest.approx(440, abs=20)
    assert _best_correlation(right, rendered[: 8000 * 2]) > 0.6
    assert _dominant_hz(right[-12000:-4000]) == pytest.approx(700, abs=20)


async def _recording_of(
    server: Server, tenant: TenantFixture, call_id: str
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    from sqlalchemy import select

    from pomelo.recordings.models import Recording

    platform = server.platform
    for _ in range(100):
        async with platform.db.session() as s:
            row = await s.scalar(
                select(Recording).where(
                    Recording.tenant_id == tenant.id, Recording.call_id == call_id
                )
            )
        if row is not None:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the call was not recorded")
    assert row.channels == 2 and row.sample_rate == 8000
    with wave.open(str(platform.recordings.root / row.path)) as w:
        assert w.getnchannels() == 2
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, 2)
    return data[:, 0].copy(), data[:, 1].copy()


def _dominant_hz(audio: np.ndarray[Any, Any], rate: int = 8000) -> float:
    assert np.abs(audio).mean() > 100, "silence"
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * rate / len(audio))


def _heard(phone_dir: Path) -> np.ndarray[Any, Any]:
    files = sorted(phone_dir.glob("*dec*.wav"))
    assert files, f"no recording in {phone_dir}"
    with wave.open(str(files[-1])) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        channels, rate = w.getnchannels(), w.getframerate()
    mono = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return resample(mono, rate, 8000)


def _best_correlation(haystack: np.ndarray[Any, Any], needle: np.ndarray[Any, Any]) -> float:
    """Peak normalised cross-correlation of ``needle`` anywhere in ``haystack``."""
    h = haystack.astype(np.float64)
    n = needle.astype(np.float64)
    n = (n - n.mean()) / (n.std() or 1)
    size = len(h) + len(n)
    corr = np.fft.irfft(np.fft.rfft(h, size) * np.conj(np.fft.rfft(n, size)), size)[: len(h)]
    window = np.convolve(h * h, np.ones(len(n)), "full")[len(n) - 1 : len(n) - 1 + len(h)]
    means = np.convolve(h, np.ones(len(n)), "full")[len(n) - 1 : len(n) - 1 + len(h)]
    energy = np.sqrt(np.maximum(window - means**2 / len(n), 1e-9))
    return float(np.max(corr / (energy * np.sqrt(len(n)))))


async def _last_record(server: Server, tenant: TenantFixture) -> Any:
    from sqlalchemy import select

    from pomelo.pbx.cdr_models import CallRecord

    await server.platform.call_recorder.drain()
    for _ in range(50):
        async with server.platform.db.session() as s:
            record = await s.scalar(
                select(CallRecord)
                .where(CallRecord.tenant_id == tenant.id)
                .order_by(CallRecord.started_at.desc())
            )
        if record is not None:
            return record
        await asyncio.sleep(0.1)
    raise AssertionError("no call record")
