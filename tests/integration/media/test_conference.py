"""A conference room with three real phones: each hears the two others and not itself, and
the room is recorded with everybody in it."""

from __future__ import annotations

import asyncio
import uuid
import wave
from pathlib import Path

import numpy as np

from pomelo.auth.access import Actor
from pomelo.pbx.schemas import NumberCreate, SipAccountCreate
from tests.conftest import Server, TenantFixture
from tests.integration.media.test_supervision import _heard, _tones_in
from tests.support.baresip import Baresip

TONES = {"180": 440, "181": 1000, "182": 1800}


async def test_three_phones_in_a_room_hear_each_other_and_the_room_is_recorded(
    server: Server, tenant: TenantFixture, tmp_path: Path
) -> None:
    platform = server.platform
    system = Actor.system(tenant.id)
    room_number = f"+7495{uuid.uuid4().int % 10**7:07d}"
    await platform.pbx.create_number(
        system, NumberCreate(number=room_number, route_kind="conference", route_target="daily")
    )
    phones = []
    for ext in TONES:
        await platform.pbx.create_account(
            system,
            SipAccountCreate(
                extension=ext,
                user_id=tenant["operator"].id if ext == "180" else None,
                password=f"phone-pass-{ext}",
            ),
        )
    await platform.sip_cache.reload()
    try:
        for ext, hz in TONES.items():
            phone = Baresip(
                tmp_path / ext,
                user=ext,
                domain=f"{tenant.slug}.sip",
                password=f"phone-pass-{ext}",
                proxy=("127.0.0.1", platform.sip_server.port),
                tone=hz,
            )
            await phone.start()
            phones.append(phone)
            assert await phone.registration() == "OK"
        joined = []
        for phone in phones:
            await phone.command("dial", f"sip:{room_number}@{tenant.slug}.sip")
            await phone.wait_for("CALL_ESTABLISHED")
            joined.append(asyncio.get_running_loop().time())
        await asyncio.sleep(2.5)
        everyone = asyncio.get_running_loop().time()
        for phone in phones:
            await phone.command("hangup")
            await phone.wait_for("CALL_CLOSED")
    finally:
        for phone in phones:
            await phone.stop()
    assert not platform.calls.conferences.rooms, "the room closes with its last participant"
    for i, ext in enumerate(TONES):
        others = {h for e, h in TONES.items() if e != ext}
        start = joined[-1] - joined[i] + 0.6
        end = everyone - joined[i] - 0.2
        assert _tones_in(_heard(tmp_path / ext), start, end) == others, ext

    from sqlalchemy import select

    from pomelo.recordings.models import Recording

    for _ in range(100):
        async with platform.db.session() as s:
            row = await s.scalar(
                select(Recording).where(
                    Recording.tenant_id == tenant.id, Recording.to_number == "daily"
                )
            )
        if row is not None:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the room was not recorded")
    with wave.open(str(platform.recordings.root / row.path)) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).reshape(-1, 2)
    mix = data[:, 0].astype(np.float64)
    span = (joined[-1] - joined[0] + 0.6, everyone - joined[0] - 0.2)
    assert _tones_in((8000, mix), *span) == set(TONES.values())
