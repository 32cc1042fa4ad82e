"""A real softphone (baresip) against Pomelo's SIP server."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import Server, TenantFixture
from tests.integration.pbx.test_registrar import account
from tests.support.baresip import Baresip


async def test_baresip_registers_and_shows_in_the_api(
    server: Server, tenant: TenantFixture, tmp_path: Path
) -> None:
    await account(server, tenant, "401", "long-sip-password-401")
    phone = Baresip(
        tmp_path / "phone",
        user="401",
        domain=f"{tenant.slug}.sip",
        password="long-sip-password-401",
        proxy=("127.0.0.1", server.platform.sip_server.port),
    )
    await phone.start()
    try:
        assert await phone.registration() == "OK"
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            listed = (
                await http.get("/api/v1/registrations", headers=tenant["administrator"].headers)
            ).json()
        assert [r["extension"] for r in listed] == ["401"]
        assert listed[0]["user_agent"].startswith("baresip")
    finally:
        await phone.stop()


async def test_baresip_with_a_wrong_password_is_refused(
    server: Server, tenant: TenantFixture, tmp_path: Path
) -> None:
    await account(server, tenant, "402", "long-sip-password-402")
    phone = Baresip(
        tmp_path / "phone",
        user="402",
        domain=f"{tenant.slug}.sip",
        password="not-the-password",
        proxy=("127.0.0.1", server.platform.sip_server.port),
    )
    await phone.start()
    try:
        assert await phone.registration() == "ERR"
    finally:
        await phone.stop()


async def test_two_baresip_phones_call_each_other(
    server: Server, tenant: TenantFixture, tmp_path: Path
) -> None:
    from sqlalchemy import select

    from pomelo.pbx.cdr_models import CallRecord

    domain = f"{tenant.slug}.sip"
    proxy = ("127.0.0.1", server.platform.sip_server.port)
    await account(server, tenant, "411", "long-sip-password-411")
    await account(server, tenant, "412", "long-sip-password-412")
    caller = Baresip(
        tmp_path / "a",
        user="411",
        domain=domain,
        password="long-sip-password-411",
        proxy=proxy,
        tone=440,
    )
    callee = Baresip(
        tmp_path / "b",
        user="412",
        domain=domain,
        password="long-sip-password-412",
        proxy=proxy,
        auto_answer=True,
        tone=1000,
    )
    await caller.start()
    await callee.start()
    try:
        assert await caller.registration() == "OK"
        assert await callee.registration() == "OK"
        await caller.command("dial", f"sip:412@{domain}")
        incoming = await callee.wait_for("CALL_ESTABLISHED")
        assert incoming["direction"] == "incoming"
        assert incoming["peeruri"] == f"sip:411@{domain}"
        await caller.wait_for("CALL_ESTABLISHED")
        relayed = sum(c.media.counters.received for c in live_call_legs(server))
        await asyncio.sleep(2.0)
        relayed = sum(c.media.counters.received for c in live_call_legs(server)) - relayed
        await caller.command("hangup")
        await callee.wait_for("CALL_CLOSED")
    finally:
        await caller.stop()
        await callee.stop()
    # The media crossed the PBX (anchored), and each phone heard the other's tone.
    assert relayed > 100
    assert dominant_hz(heard_by(tmp_path / "a")) == pytest.approx(1000, abs=30)
    assert dominant_hz(heard_by(tmp_path / "b")) == pytest.approx(440, abs=30)
    # …and the media plane's metrics saw it
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        text = (await http.get("/metrics")).text
    received = [
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("pomelo_rtp_received_packets_total ")
    ]
    assert received and received[0] >= relayed
    assert 'pomelo_rtp_jitter_ms{quantile="0.99"}' in text
    await server.platform.call_recorder.drain()
    async with server.platform.db.session() as s:
        records = list(
            await s.scalars(
                select(CallRecord).where(
                    CallRecord.tenant_id == tenant.id, CallRecord.to_number == "412"
                )
            )
        )
    assert [(r.disposition, r.direction, r.hangup_side) for r in records] == [
        ("answered", "internal", "caller")
    ]


def live_call_legs(server: Server) -> list[Any]:
    """The RTP sessions of every leg of every live call."""
    out = []
    for call in server.platform.calls.calls.values():
        for leg in call.legs:
            if leg.media is not None:
                out.append(SimpleNamespace(media=leg.media.session))
    return out


def heard_by(phone_dir: Path) -> np.ndarray[Any, Any]:
    """What a baresip phone played (sndfile's decoder-side dump), as mono samples."""
    files = sorted(phone_dir.glob("*dec*.wav"))
    assert files, f"no recording in {phone_dir}: {list(phone_dir.iterdir())}"
    with wave.open(str(files[-1])) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        channels, rate = w.getnchannels(), w.getframerate()
    mono = data.reshape(-1, channels).mean(axis=1) if channels > 1 else data.astype(float)
    return np.asarray([rate, *mono[rate // 2 :]])  # skip the first half second


def dominant_hz(samples: np.ndarray[Any, Any]) -> float:
    rate, audio = int(samples[0]), samples[1:]
    assert np.abs(audio).mean() > 100, "silence"
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * rate / len(audio))


async def test_a_held_phone_hears_music_and_the_call_survives(
    server: Server, tenant: TenantFixture, tmp_path: Path
) -> None:
    """The callee puts the call on hold (re-INVITE a=sendonly): the caller hears the PBX's
    hold music instead of the callee's tone, and the callee again after resume — shown by
    the call's own recording (right channel: what the caller heard)."""
    from tests.integration.media.test_ivr import _dominant_hz, _recording_of

    domain = f"{tenant.slug}.sip"
    proxy = ("127.0.0.1", server.platform.sip_server.port)
    await account(server, tenant, "421", "long-sip-password-421")
    await account(server, tenant, "422", "long-sip-password-422")
    caller = Baresip(
        tmp_path / "a",
        user="421",
        domain=domain,
        password="long-sip-password-421",
        proxy=proxy,
        tone=440,
    )
    holder = Baresip(
        tmp_path / "b",
        user="422",
        domain=domain,
        password="long-sip-password-422",
        proxy=proxy,
        auto_answer=True,
        tone=1000,
    )
    await caller.start()
    await holder.start()
    clock = asyncio.get_running_loop().time
    marks: dict[str, float] = {}
    try:
        assert await caller.registration() == "OK"
        assert await holder.registration() == "OK"
        await caller.command("dial", f"sip:422@{domain}")
        await holder.wait_for("CALL_ESTABLISHED")
        marks["start"] = clock()
        await asyncio.sleep(1.5)
        marks["hold"] = clock()
        await holder.command("hold")
        await asyncio.sleep(3.0)
        marks["resume"] = clock()
        await holder.command("resume")
        await asyncio.sleep(1.5)
        marks["end"] = clock()
        await caller.command("hangup")
        await holder.wait_for("CALL_CLOSED")
    finally:
        await caller.stop()
        await holder.stop()
    calls = [c for c in server.platform.calls.calls.values() if c.route.tenant_id == tenant.id]
    assert not calls, "the call should be over"
    record = await _last_record_of(server, tenant)
    assert record.disposition == "answered" and record.hangup_reason == "bye"
    _left, heard = await _recording_of(server, tenant, record.id)

    def tone(start: float, end: float) -> float:
        a, b = int((start - marks["start"]) * 8000), int((end - marks["start"]) * 8000)
        return _dominant_hz(heard[a:b])

    assert tone(marks["start"] + 0.3, marks["hold"]) == pytest.approx(1000, abs=20)
    music = tone(marks["hold"] + 0.8, marks["resume"])
    assert abs(music - 1000) > 20, f"still the holder's tone ({music:.0f} Hz) while on hold"
    assert tone(marks["resume"] + 0.6, marks["end"] - 0.2) == pytest.approx(1000, abs=20)


async def _last_record_of(server: Server, tenant: TenantFixture) -> Any:
    from tests.integration.media.test_ivr import _last_record

    return await _last_record(server, tenant)
