"""The recordings catalogue: the only code that writes the recordings tables and their files.

Who may hear a recording follows the role's scope, like every other query: an operator the
calls he took part in, a group head those of his groups' members and of calls to his groups'
numbers, a company-wide role all of the tenant's. A recording outside that reach is a 404.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Select, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from pomelo.audit import service as audit
from pomelo.auth.access import Actor, get_one
from pomelo.auth.models import GroupMember
from pomelo.auth.permissions import Permission, Scope
from pomelo.core.errors import NotFound
from pomelo.core.events import Audience
from pomelo.core.ids import new_id
from pomelo.recordings.events import RecordingDeleted, RecordingStored
from pomelo.recordings.files import (
    file_size,
    make_parent,
    recording_path,
    relative_to_root,
    remove_files,
    resolve_stored,
)
from pomelo.recordings.models import Recording, RecordingParticipant
from pomelo.storage.uow import UnitOfWork

log = logging.getLogger(__name__)

#: Recordings removed per transaction by the retention sweep (bounded memory and lock time).
SWEEP_BATCH = 500


@dataclass(frozen=True, slots=True)
class NewRecording:
    """A finished recording handed over by the call path. ``path`` is absolute and under the
    recordings directory (see :func:`recording_path`)."""

    tenant_id: str
    call_id: str
    path: Path
    started_at: datetime
    ended_at: datetime
    duration_s: float
    size_bytes: int
    sample_rate: int
    channels: int
    from_number: str
    to_number: str
    group_id: str | None = None
    user_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RecordingFilter:
    call_id: str | None = None
    user_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    id: str
    call_id: str
    started_at: datetime
    ended_at: datetime
    duration_ms: int
    size_bytes: int
    sample_rate: int
    channels: int
    from_number: str
    to_number: str
    group_id: str | None
    user_ids: tuple[str, ...]
    created_at: datetime

    def audit_view(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "started_at": self.started_at.isoformat(),
            "duration_ms": self.duration_ms,
            "from_number": self.from_number,
            "to_number": self.to_number,
            "user_ids": list(self.user_ids),
        }


@dataclass(frozen=True, slots=True)
class RecordingPage:
    items: tuple[RecordingInfo, ...]
    total: int


def access_recordings(
    actor: Actor, permission: Permission = Permission.RECORDINGS_LISTEN
) -> Select[Recording]:
    """Recordings ``actor`` may reach with ``permission``, by his role's scope."""
    actor.require(permission)
    stmt = select(Recording).where(Recording.tenant_id == actor.tenant_id)
    if actor.scope is Scope.ALL:
        return stmt
    people = select(RecordingParticipant.recording_id)
    if actor.scope is Scope.OWN:
        return stmt.where(
            Recording.id.in_(people.where(RecordingParticipant.user_id == actor.user_id))
        )
    members = select(GroupMember.user_id).where(
        GroupMember.tenant_id == actor.tenant_id, GroupMember.group_id.in_(actor.group_ids)
    )
    reached = people.where(
        or_(
            RecordingParticipant.user_id == actor.user_id, RecordingParticipant.user_id.in_(members)
        )
    )
    return stmt.where(or_(Recording.id.in_(reached), Recording.group_id.in_(actor.group_ids)))


class RecordingCatalog:
    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        directory: Path,
        *,
        retention_days: int,
    ) -> None:
        self._uow = uow
        #: Absolute once, so stored relative paths never depend on the working directory later.
        self.root = directory.absolute()
        self.retention = timedelta(days=retention_days) if retention_days > 0 else None

    # -- the call path -------------------------------------------------------------------

    async def allocate_path(self, tenant_id: str, call_id: str, started_at: datetime) -> Path:
        """Where the recorder should write this call, with its directory created."""
        path = recording_path(self.root, tenant_id, call_id, started_at)
        await make_parent(path)
        return path

    async def add(self, new: NewRecording) -> str:
        """Catalogue a finished recording; returns its id. The file must already be complete:
        from this commit on, listeners are told it can be played."""
        stored = relative_to_root(self.root, new.path)
        if new.ended_at < new.started_at:
            raise ValueError("a recording cannot end before it starts")
        user_ids = tuple(dict.fromkeys(u for u in new.user_ids if u))
        async with self._uow() as uow:
            row = Recording(
                id=new_id(),
                tenant_id=new.tenant_id,
                call_id=new.call_id,
                started_at=new.started_at,
                ended_at=new.ended_at,
                duration_ms=max(0, round(new.duration_s * 1000)),
                size_bytes=new.size_bytes,
                path=stored,
                sample_rate=new.sample_rate,
                channels=new.channels,
                from_number=new.from_number[:64],
                to_number=new.to_number[:64],
                group_id=new.group_id,
                created_at=uow.clock.now(),
            )
            uow.session.add(row)
            await uow.session.flush()
            uow.session.add_all(
                RecordingParticipant(recording_id=row.id, user_id=u) for u in user_ids
            )
            groups = await _groups_of(uow.session, user_ids)
            uow.emit(
                RecordingStored(
                    tenant_id=row.tenant_id,
                    at=uow.clock.now(),
                    audience=_audience(user_ids, row.group_id, groups),
                    recording_id=row.id,
                    call_id=row.call_id,
                    started_at=row.started_at,
                    duration_ms=row.duration_ms,
                    from_number=row.from_number,
                    to_number=row.to_number,
                )
            )
            await uow.commit()
            return row.id

    # -- employees -----------------------------------------------------------------------

    async def list(
        self, actor: Actor, filters: RecordingFilter, *, limit: int, offset: int
    ) -> RecordingPage:
        """Newest first."""
        stmt = access_recordings(actor)
        if filters.call_id is not None:
            stmt = stmt.where(Recording.call_id == filters.call_id)
        if filters.user_id is not None:
            stmt = stmt.where(
                Recording.id.in_(
                    select(RecordingParticipant.recording_id).where(
                        RecordingParticipant.user_id == filters.user_id
                    )
                )
            )
        if filters.since is not None:
            stmt = stmt.where(Recording.started_at >= filters.since)
        if filters.until is not None:
            stmt = stmt.where(Recording.started_at < filters.until)
        async with self._uow() as uow:
            total = await uow.session.scalar(select(func.count()).select_from(stmt.subquery()))
            rows = tuple(
                await uow.session.scalars(
                    stmt.order_by(Recording.started_at.desc(), Recording.id)
                    .limit(limit)
                    .offset(offset)
                )
            )
            people = await _participants(uow.session, [r.id for r in rows])
        return RecordingPage(
            items=tuple(_info(r, people.get(r.id, ())) for r in rows), total=int(total or 0)
        )

    async def get(self, actor: Actor, recording_id: str) -> RecordingInfo:
        async with self._uow() as uow:
            row = await _visible(uow.session, actor, recording_id)
            people = await _participants(uow.session, [row.id])
        return _info(row, people.get(row.id, ()))

    async def open(self, actor: Actor, recording_id: str) -> tuple[Path, int]:
        """The file to play and its current size. A row whose file is gone is a 404 with its
        own error id, so clients can tell "no such recording" from "its audio was lost"."""
        async with self._uow() as uow:
            row = await _visible(uow.session, actor, recording_id)
            stored = row.path
        try:
            path = resolve_stored(self.root, stored)
        except ValueError:
            log.error("recording %s has a path outside the recordings directory", recording_id)
            raise _file_missing(recording_id) from None
        size = await file_size(path)
        if size is None:
            raise _file_missing(recording_id)
        return path, size

    async def delete(self, actor: Actor, recording_id: str) -> None:
        """Remove the row and the file (audited).

        The file goes before the commit: should the file removal fail, the transaction rolls
        back and the recording is still listed, so the deletion can be retried; the reverse
        order could leave audio nobody can find any more, which is worse for a deletion
        someone asked for. If the commit fails after the removal, the row's audio is a 404
        and deleting it again succeeds."""
        async with self._uow() as uow:
            row = await _visible(uow.session, actor, recording_id, Permission.RECORDINGS_DELETE)
            people = await _participants(uow.session, [row.id])
            info = _info(row, people.get(row.id, ()))
            groups = await _groups_of(uow.session, info.user_ids)
            audit.record(
                uow.session,
                actor,
                "recording.delete",
                "recording",
                row.id,
                before=info.audit_view(),
                at=uow.clock.now(),
            )
            uow.emit(_deleted(row, info.user_ids, groups, "deleted", uow.clock.now(), actor))
            await _delete_rows(uow.session, [row.id])
            await remove_files(_files(self.root, [row]))
            await uow.commit()

    # -- retention -----------------------------------------------------------------------

    async def sweep(self, now: datetime) -> int:
        """Delete recordings that started before ``now`` minus the retention; returns how many.
        Each is audited as done by the system's "retention" actor."""
        if self.retention is None:
            return 0
        cutoff = now - self.retention
        removed = 0
        while True:
            count = await self._sweep_batch(cutoff)
            removed += count
            if count < SWEEP_BATCH:
                return removed

    async def _sweep_batch(self, cutoff: datetime) -> int:
        async with self._uow() as uow:
            rows = tuple(
                await uow.session.scalars(
                    select(Recording)
                    .where(Recording.started_at < cutoff)
                    .order_by(Recording.started_at)
                    .limit(SWEEP_BATCH)
                )
            )
            if not rows:
                return 0
            people = await _participants(uow.session, [r.id for r in rows])
            groups = await _groups_of(uow.session, {u for ids in people.values() for u in ids})
            now = uow.clock.now()
            for row in rows:
                info = _info(row, people.get(row.id, ()))
                system = Actor.system(row.tenant_id, "retention")
                audit.record(
                    uow.session,
                    system,
                    "recording.expire",
                    "recording",
                    row.id,
                    before=info.audit_view(),
                    at=now,
                )
                uow.emit(_deleted(row, info.user_ids, groups, "retention", now, None))
            await _delete_rows(uow.session, [r.id for r in rows])
            await remove_files(_files(self.root, rows))
            await uow.commit()
            log.info("retention removed %d recordings started before %s", len(rows), cutoff)
            return len(rows)


def _files(root: Path, rows: Iterable[Recording]) -> list[Path]:
    found = []
    for row in rows:
        try:
            found.append(resolve_stored(root, row.path))
        except ValueError:
            log.error("recording %s has a path outside the recordings directory", row.id)
    return found


async def _visible(
    session: AsyncSession,
    actor: Actor,
    recording_id: str,
    permission: Permission = Permission.RECORDINGS_LISTEN,
) -> Recording:
    return await get_one(
        session, access_recordings(actor, permission), Recording.id, recording_id, "recording"
    )


def _file_missing(recording_id: str) -> NotFound:
    return NotFound(
        f"the audio file of recording {recording_id!r} is missing",
        error_id="recording-file-missing",
    )


async def _participants(session: AsyncSession, ids: Sequence[str]) -> dict[str, tuple[str, ...]]:
    if not ids:
        return {}
    rows = await session.execute(
        select(RecordingParticipant.recording_id, RecordingParticipant.user_id)
        .where(RecordingParticipant.recording_id.in_(ids))
        .order_by(RecordingParticipant.user_id)
    )
    found: dict[str, tuple[str, ...]] = {}
    for recording_id, user_id in rows:
        found[recording_id] = (*found.get(recording_id, ()), user_id)
    return found


async def _groups_of(session: AsyncSession, user_ids: Iterable[str]) -> dict[str, set[str]]:
    """Current groups of the employees (user ids are unique across tenants)."""
    wanted = set(user_ids)
    if not wanted:
        return {}
    rows = await session.execute(
        select(GroupMember.user_id, GroupMember.group_id).where(GroupMember.user_id.in_(wanted))
    )
    found: dict[str, set[str]] = {}
    for user_id, group_id in rows:
        found.setdefault(user_id, set()).add(group_id)
    return found


def _audience(
    user_ids: Iterable[str], group_id: str | None, groups: dict[str, set[str]]
) -> Audience:
    people = frozenset(user_ids)
    touched = {group_id} if group_id else set()
    for user_id in people:
        touched |= groups.get(user_id, set())
    return Audience(user_ids=people, group_ids=frozenset(touched))


def _deleted(
    row: Recording,
    user_ids: tuple[str, ...],
    groups: dict[str, set[str]],
    reason: str,
    at: datetime,
    actor: Actor | None,
) -> RecordingDeleted:
    return RecordingDeleted(
        tenant_id=row.tenant_id,
        at=at,
        actor_id=actor.user_id if actor else None,
        audience=_audience(user_ids, row.group_id, groups),
        recording_id=row.id,
        call_id=row.call_id,
        reason=reason,
    )


async def _delete_rows(session: AsyncSession, ids: Sequence[str]) -> None:
    # Participants explicitly: the cascade is not relied on (SQLite only honours it with
    # foreign keys switched on per connection).
    await session.execute(
        delete(RecordingParticipant).where(RecordingParticipant.recording_id.in_(ids))
    )
    await session.execute(delete(Recording).where(Recording.id.in_(ids)))


def _info(row: Recording, user_ids: tuple[str, ...]) -> RecordingInfo:
    return RecordingInfo(
        id=row.id,
        call_id=row.call_id,
        started_at=row.started_at,
        ended_at=row.ended_at,
        duration_ms=row.duration_ms,
        size_bytes=row.size_bytes,
        sample_rate=row.sample_rate,
        channels=row.channels,
        from_number=row.from_number,
        to_number=row.to_number,
        group_id=row.group_id,
        user_ids=user_ids,
        created_at=row.created_at,
    )
