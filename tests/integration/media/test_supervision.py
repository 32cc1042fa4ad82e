"""Listen, whisper and barge with three real phones: each phone sends its own tone, and what
each phone heard (baresip's capture of its speaker) shows who was mixed to whom."""

from __future__ import annotations

import asyncio
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from pomelo.auth.access import Actor
from pomelo.pbx.schemas import SipAccountCreate
from tests.conftest import Server, TenantFixture
from tests.support.baresip import Baresip

CLIENT_HZ, EMPLOYEE_HZ, SUPERVISOR_HZ = 440, 1000, 1800
PHASE = 2.0


async def _phone(
    server: Server, tenant: TenantFixture, tmp_path: Path, ext: str, user_id: str | None, hz: int
) -> Baresip:
    platform = server.platform
    await platform.pbx.create_account(
        Actor.system(tenant.id),
        SipAccountCreate(extension=ext, user_id=user_id, password=f"phone-pass-{ext}"),
    )
    await platform.sip_cache.reload()
    phone = Baresip(
        tmp_path / ext,
        user=ext,
        domain=f"{tenant.slug}.sip",
        password=f"phone-pass-{ext}",
        proxy=("127.0.0.1", platform.sip_server.port),
        auto_answer=user_id is not None,
        tone=hz,
    )
    await phone.start()
    assert await phone.registration() == "OK"
    return phone


async def test_listen_whisper_barge_are_heard_by_the_right_phones(
    server: Server, tenant: TenantFixture, tmp_path: Path
) -> None:
    head = tenant["group_head"]
    api = httpx.AsyncClient(
        base_url=server.base_url, headers={"Authorization": f"Bearer {head.api_key}"}
    )
    client = await _phone(server, tenant, tmp_path, "170", None, CLIENT_HZ)
    employee = await _phone(server, tenant, tmp_path, "171", tenant["operator"].id, EMPLOYEE_HZ)
    supervisor = await _phone(server, tenant, tmp_path, "172", head.id, SUPERVISOR_HZ)
    marks: dict[str, float] = {}
    try:
        await client.command("dial", f"sip:171@{tenant.slug}.sip")
        await employee.wait_for("CALL_ESTABLISHED")
        marks["employee"] = time.monotonic()
        await client.wait_for("CALL_ESTABLISHED")
        marks["client"] = time.monotonic()
        live = (await api.get("/api/v1/calls/live")).json()
        assert live["total"] == 1, live
        call_id = live["items"][0]["id"]

        # Operators may not supervise; other tenants' heads do not even see the call.
        operator = {"Authorization": f"Bearer {tenant['operator'].api_key}"}
        refused = await api.put(
            f"/api/v1/calls/live/{call_id}/supervision", json={"mode": "listen"}, headers=operator
        )
        assert refused.status_code == 403

        for mode in ("listen", "whisper", "barge"):
            reply = await api.put(f"/api/v1/calls/live/{call_id}/supervision", json={"mode": mode})
            assert reply.status_code == 202, reply.text
            if mode == "listen":
                await supervisor.wait_for("CALL_ESTABLISHED")
                marks["supervisor"] = time.monotonic()
                await _until_active(api, call_id)
            marks[mode] = time.monotonic()
            await asyncio.sleep(PHASE)
        marks["end"] = time.monotonic()
        assert (await api.delete(f"/api/v1/calls/live/{call_id}/supervision")).status_code == 204
        await supervisor.wait_for("CALL_CLOSED")
        assert (await api.get(f"/api/v1/calls/live/{call_id}")).json()["supervision"] is None
        await asyncio.sleep(0.5)
        await client.command("hangup")
        await employee.wait_for("CALL_CLOSED")
    finally:
        await api.aclose()
        for phone in (client, employee, supervisor):
            await phone.stop()

    heard = {
        "client": _heard(tmp_path / "170"),
        "employee": _heard(tmp_path / "171"),
        "supervisor": _heard(tmp_path / "172"),
    }

    def tones(who: str, phase: str) -> set[int]:
        start = marks[phase] - marks[who] + 0.6
        end = start + PHASE - 0.9
        return _tones_in(heard[who], start, end)

    # listen: the supervisor hears both, nobody hears him
    assert tones("supervisor", "listen") == {CLIENT_HZ, EMPLOYEE_HZ}
    assert tones("client", "listen") == {EMPLOYEE_HZ}
    assert tones("employee", "listen") == {CLIENT_HZ}
    # whisper: only the employee hears him
    assert tones("supervisor", "whisper") == {CLIENT_HZ, EMPLOYEE_HZ}
    assert tones("client", "whisper") == {EMPLOYEE_HZ}
    assert tones("employee", "whisper") == {CLIENT_HZ, SUPERVISOR_HZ}
    # barge: everybody hears everybody
    assert tones("client", "barge") == {EMPLOYEE_HZ, SUPERVISOR_HZ}
    assert tones("employee", "barge") == {CLIENT_HZ, SUPERVISOR_HZ}
    assert tones("supervisor", "barge") == {CLIENT_HZ, EMPLOYEE_HZ}


async def _until_active(api: httpx.AsyncClient, call_id: str) -> None:
    for _ in range(100):
        call = (await api.get(f"/api/v1/calls/live/{call_id}")).json()
        if call["supervision"] and call["supervision"]["state"] == "active":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"supervision never became active: {call}")


def _heard(phone_dir: Path) -> tuple[int, np.ndarray[Any, Any]]:
    files = sorted(phone_dir.glob("*dec*.wav"))
    assert files, f"no capture in {phone_dir}"
    with wave.open(str(files[-1])) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        channels, rate = w.getnchannels(), w.getframerate()
    return rate, data.reshape(-1, channels).mean(axis=1)


def _tones_in(capture: tuple[int, np.ndarray[Any, Any]], start: float, end: float) -> set[int]:
    """Which of the three test tones stand out of the spectrum between start and end (s)."""
    rate, audio = capture
    window = audio[int(start * rate) : int(end * rate)]
    assert len(window) > rate // 4, f"capture too short for {start:.1f}-{end:.1f} s"
    spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window))))
    peaks = {}
    for hz in (CLIENT_HZ, EMPLOYEE_HZ, SUPERVISOR_HZ):
        k = round(hz * len(window) / rate)
        peaks[hz] = float(spectrum[max(k - 3, 0) : k + 4].max())
    loudest = max(peaks.values())
    assert loudest > 1000 * len(window) / rate, "silence"
    # A tone is heard when it is within 20 dB of the loudest one (G.711 noise and
    # intermodulation stay 35 dB or more below).
    return {hz for hz, peak in peaks.items() if peak > loudest / 10}
