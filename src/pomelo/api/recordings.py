"""Routes of call recordings: the catalogue, the audio (with byte ranges, so players can seek),
download and deletion."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from io import BufferedReader
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from pydantic import AwareDatetime
from starlette.responses import Response, StreamingResponse

from pomelo.api.deps import ActorDep, PagingDep, PlatformDep, guarded
from pomelo.api.problems import PROBLEM_SCHEMA, PROBLEM_TYPE, problem, problem_responses
from pomelo.api.schemas import Page
from pomelo.auth.permissions import Permission
from pomelo.recordings.schemas import RecordingPublic
from pomelo.recordings.service import RecordingFilter, RecordingInfo

log = logging.getLogger(__name__)

LISTEN = Permission.RECORDINGS_LISTEN
AUDIO_TYPE = "audio/wav"
#: Bytes read per thread hop: large enough that a long call is few hops, small enough that a
#: slow client holds little memory.
CHUNK = 128 * 1024

router = APIRouter(
    prefix="/api/v1", tags=["recordings"], responses=problem_responses(400, 401, 403, 404, 422)
)


def _headers(*names: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {n: {"schema": {"type": "string"}, "required": n in required} for n in names}


_AUDIO_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The whole WAV file.",
        "content": {AUDIO_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        "headers": _headers("Accept-Ranges", "Content-Disposition", required=("Accept-Ranges",)),
    },
    206: {
        "description": "The requested byte range of the WAV file.",
        "content": {AUDIO_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        "headers": _headers(
            "Accept-Ranges",
            "Content-Range",
            "Content-Disposition",
            required=("Accept-Ranges", "Content-Range"),
        ),
    },
    416: {
        "description": "range-not-satisfiable",
        "content": {PROBLEM_TYPE: {"schema": PROBLEM_SCHEMA}},
        "headers": _headers("Content-Range", required=("Content-Range",)),
    },
}


@router.get("/recordings", **guarded(LISTEN))
async def list_recordings(
    actor: ActorDep,
    platform: PlatformDep,
    paging: PagingDep,
    call_id: Annotated[str | None, Query(max_length=64)] = None,
    user_id: Annotated[str | None, Query(max_length=32, description="A participant.")] = None,
    since: Annotated[AwareDatetime | None, Query(description="Started at or after.")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Started before.")] = None,
) -> Page[RecordingPublic]:
    """Recordings the caller may hear, newest first: an operator's own calls, a group head's
    groups' calls, everything for company-wide roles."""
    found = await platform.recordings.list(
        actor,
        RecordingFilter(call_id=call_id, user_id=user_id, since=since, until=until),
        limit=paging.limit,
        offset=paging.offset,
    )
    return Page(
        items=[_public(i) for i in found.items],
        total=found.total,
        limit=paging.limit,
        offset=paging.offset,
    )


@router.get("/recordings/{recording_id}", **guarded(LISTEN))
async def get_recording(
    recording_id: str, actor: ActorDep, platform: PlatformDep
) -> RecordingPublic:
    return _public(await platform.recordings.get(actor, recording_id))


@router.get(
    "/recordings/{recording_id}/audio",
    response_class=Response,
    responses=_AUDIO_RESPONSES,
    **guarded(LISTEN),
)
async def recording_audio(
    recording_id: str,
    actor: ActorDep,
    platform: PlatformDep,
    download: Annotated[bool, Query(description="Send as an attachment (save, not play).")] = False,
    range_header: Annotated[
        str | None,
        Header(alias="Range", max_length=200, description="bytes=first-last, first- or -suffix."),
    ] = None,
) -> Response:
    """The WAV audio. A single byte range is honoured (206); others, and ranges this server
    does not understand, get the whole file (200), as HTTP allows."""
    path, size = await platform.recordings.open(actor, recording_id)
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private"}
    if download:
        headers["Content-Disposition"] = f'attachment; filename="recording-{recording_id}.wav"'
    try:
        span = parse_range(range_header, size)
    except RangeNotSatisfiable:
        response = problem(
            416,
            "range-not-satisfiable",
            "Range not satisfiable",
            f"the recording has {size} bytes; the requested range lies outside them",
        )
        response.headers["Content-Range"] = f"bytes */{size}"
        return response
    status = 200
    first, last = 0, size - 1
    if span is not None:
        status = 206
        first, last = span
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    length = last - first + 1
    headers["Content-Length"] = str(length)
    return StreamingResponse(
        _read(path, first, length), status_code=status, media_type=AUDIO_TYPE, headers=headers
    )


@router.delete(
    "/recordings/{recording_id}", status_code=204, **guarded(Permission.RECORDINGS_DELETE)
)
async def delete_recording(recording_id: str, actor: ActorDep, platform: PlatformDep) -> None:
    """Deletes the recording and its audio for good (audited)."""
    await platform.recordings.delete(actor, recording_id)


class RangeNotSatisfiable(Exception):
    """The one range asked for lies wholly outside the file (416)."""


_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte span of a ``Range`` header (RFC 9110 §14), or None to send it all.

    None for no header, another unit, several ranges or malformed syntax: a server may
    ignore Range, and answering the whole file is always correct."""
    if not header:
        return None
    match = _RANGE.match(header)
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text and not last_text:
        return None
    if not first_text:  # a suffix: the last n bytes
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - suffix), size - 1
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # invalid syntax, not an unsatisfiable range
    if first >= size:
        raise RangeNotSatisfiable
    last = int(last_text) if last_text else size - 1
    return first, min(last, size - 1)


async def _read(path: Path, first: int, length: int) -> AsyncIterator[bytes]:
    """The span's bytes, read in a worker thread chunk by chunk (never on the event loop).

    The file is opened here rather than before the response: the catalogue has just checked
    it exists, and a file that vanishes in between only truncates this one response."""
    handle = await asyncio.to_thread(_open_at, path, first)
    try:
        remaining = length
        while remaining > 0:
            chunk = await asyncio.to_thread(handle.read, min(CHUNK, remaining))
            if not chunk:
                log.warning("recording %s shrank while being sent", path.name)
                return
            remaining -= len(chunk)
            yield chunk
    finally:
        # Synchronous on purpose: closing a file opened for reading does no I/O worth a thread,
        # and an await here would be cancelled again when the client went away.
        handle.close()


def _open_at(path: Path, offset: int) -> BufferedReader:
    handle = path.open("rb")
    handle.seek(offset)
    return handle


def _public(info: RecordingInfo) -> RecordingPublic:
    return RecordingPublic(
        id=info.id,
        call_id=info.call_id,
        started_at=info.started_at,
        ended_at=info.ended_at,
        duration_ms=info.duration_ms,
        size_bytes=info.size_bytes,
        sample_rate=info.sample_rate,
        channels=info.channels,
        from_number=info.from_number,
        to_number=info.to_number,
        group_id=info.group_id,
        user_ids=list(info.user_ids),
        created_at=info.created_at,
        audio_url=f"/api/v1/recordings/{info.id}/audio",
    )
