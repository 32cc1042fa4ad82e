"""Real WAV recordings for tests, catalogued the way the call path catalogues them."""

from __future__ import annotations

import asyncio
import uuid
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pomelo.recordings.service import NewRecording

if TYPE_CHECKING:
    from pomelo.app import Platform

RATE = 8000


def pcm(seconds: float, rate: int = RATE, channels: int = 2) -> bytes:
    """Deterministic, non-repeating 16-bit samples, so any byte range is distinguishable."""
    frames = int(seconds * rate)
    return bytes((i * 7 + i // 251) % 256 for i in range(frames * channels * 2))


def write_wav(path: Path, seconds: float, rate: int = RATE, channels: int = 2) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm(seconds, rate, channels))
    return path.stat().st_size


async def make_recording(
    platform: Platform,
    tenant_id: str,
    *,
    user_ids: tuple[str, ...] = (),
    group_id: str | None = None,
    started_at: datetime | None = None,
    seconds: float = 1.0,
    from_number: str = "+74950000001",
    to_number: str = "101",
) -> tuple[str, Path]:
    """Write a WAV where the recorder would and catalogue it; returns (id, file)."""
    started = started_at or datetime.now(UTC) - timedelta(minutes=5)
    call_id = uuid.uuid4().hex
    catalog = platform.recordings
    path = await catalog.allocate_path(tenant_id, call_id, started)
    size = await asyncio.to_thread(write_wav, path, seconds)
    recording_id = await catalog.add(
        NewRecording(
            tenant_id=tenant_id,
            call_id=call_id,
            path=path,
            started_at=started,
            ended_at=started + timedelta(seconds=seconds),
            duration_s=seconds,
            size_bytes=size,
            sample_rate=RATE,
            channels=2,
            from_number=from_number,
            to_number=to_number,
            group_id=group_id,
            user_ids=user_ids,
        )
    )
    return recording_id, path
