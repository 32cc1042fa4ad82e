"""Response bodies of the recordings API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class RecordingPublic(BaseModel):
    id: str
    call_id: str = Field(description="Pomelo's id of the call (the CDR's id).")
    started_at: datetime
    ended_at: datetime
    duration_ms: int
    size_bytes: int
    sample_rate: int
    channels: int = Field(description="2: the caller on the left channel, the callee on the right.")
    from_number: str
    to_number: str
    group_id: str | None = Field(description="The group whose number was called, if any.")
    user_ids: list[str] = Field(description="Employees who took part in the call.")
    created_at: datetime
    audio_url: str = Field(description="Streams the WAV; honours Range requests.")
