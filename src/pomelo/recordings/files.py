"""Where recordings live on disk, and the file operations the catalogue runs off the loop.

Layout: ``<recordings_dir>/<tenant_id>/<yyyy>/<mm>/<dd>/<call_id>.wav`` (UTC date of the call's
start). One directory per tenant makes a tenant's audio easy to export or purge; one per day
keeps directories small enough for any filesystem and makes the retention sweep's files local.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat as stat_module
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

#: Ids become file and directory names: nothing that could climb out of the directory.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def recording_path(directory: Path, tenant_id: str, call_id: str, started_at: datetime) -> Path:
    """The absolute file a call's recording is written to (parents are not created)."""
    for label, value in (("tenant_id", tenant_id), ("call_id", call_id)):
        if not _SAFE_NAME.match(value) or ".." in value:
            raise ValueError(f"{label} {value!r} cannot be used in a file name")
    if started_at.tzinfo is None:
        raise ValueError("started_at must be timezone-aware")
    day = started_at.astimezone(UTC)
    return (
        Path(os.path.abspath(directory))
        / tenant_id
        / f"{day:%Y}"
        / f"{day:%m}"
        / f"{day:%d}"
        / f"{call_id}.wav"
    )


def relative_to_root(root: Path, path: Path) -> str:
    """``path`` as stored in the catalogue; refuses anything outside ``root``.

    Purely lexical (no filesystem access, so safe on the event loop): the recorder hands over
    paths built by :func:`recording_path`, not user input.
    """
    absolute = Path(os.path.normpath(path))
    if not absolute.is_absolute():
        raise ValueError(f"recording path {path} is not absolute")
    try:
        return absolute.relative_to(root).as_posix()
    except ValueError:
        raise ValueError(f"recording path {path} is outside {root}") from None


def resolve_stored(root: Path, stored: str) -> Path:
    """The absolute file of a catalogue row, refusing rows that point outside ``root`` (a
    tampered or corrupted row must not turn the audio route into a file reader)."""
    absolute = Path(os.path.normpath(root / stored))
    if absolute == root or not absolute.is_relative_to(root):
        raise ValueError(f"stored recording path {stored!r} escapes {root}")
    return absolute


async def file_size(path: Path) -> int | None:
    """Size of ``path``, None when it is not a regular file (stat runs in a thread)."""

    def stat() -> int | None:
        try:
            result = path.stat()
        except OSError:
            return None
        return result.st_size if stat_module.S_ISREG(result.st_mode) else None

    return await asyncio.to_thread(stat)


async def remove_files(paths: Iterable[Path]) -> None:
    """Delete files in one thread hop; already missing ones are fine (deletion is the goal)."""
    targets = list(paths)

    def unlink_all() -> None:
        for target in targets:
            target.unlink(missing_ok=True)

    if targets:
        await asyncio.to_thread(unlink_all)


async def make_parent(path: Path) -> None:
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
