"""Routes of the audit log and the event log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from pomelo.api.deps import ActorDep, PagingDep, PlatformDep, guarded
from pomelo.api.problems import problem_responses
from pomelo.api.schemas import Page
from pomelo.audit import service as audit
from pomelo.audit.schemas import AuditEntryPublic
from pomelo.auth.permissions import Permission

router = APIRouter(prefix="/api/v1", responses=problem_responses(400, 401, 403, 404, 422))


@router.get("/audit", tags=["audit"], **guarded(Permission.AUDIT_VIEW))
async def list_audit(
    actor: ActorDep,
    platform: PlatformDep,
    paging: PagingDep,
    object_type: Annotated[str | None, Query(max_length=64)] = None,
    object_id: Annotated[str | None, Query(max_length=64)] = None,
) -> Page[AuditEntryPublic]:
    async with platform.db.session() as session:
        rows, total = await audit.list_entries(
            session,
            actor,
            object_type=object_type,
            object_id=object_id,
            limit=paging.limit,
            offset=paging.offset,
        )
    return Page(
        items=[AuditEntryPublic.model_validate(r) for r in rows],
        total=total,
        limit=paging.limit,
        offset=paging.offset,
    )


class EventPublic(BaseModel):
    seq: int
    kind: str
    data: dict[str, Any]


@router.get("/events", tags=["events"], **guarded(Permission.EVENTS_VIEW))
async def list_events(
    actor: ActorDep,
    platform: PlatformDep,
    after_seq: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[EventPublic]:
    """The committed event log after a sequence number, filtered like the live stream."""
    events = await platform.event_log.read_after(actor, after_seq, limit)
    return [EventPublic(seq=e.seq, kind=e.event.kind, data=e.event.payload()) for e in events]
