"""Recording and reading the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from pomelo.audit.models import AuditEntry
from pomelo.auth.access import Actor
from pomelo.auth.permissions import Permission

#: Never copied into the audit log (secrets must not be logged anywhere).
SECRET_FIELDS = frozenset({"password", "password_hash", "secret", "secret_hash", "token"})


def scrub(data: dict[str, Any] | None) -> dict[str, Any] | None:
    if data is None:
        return None
    return {k: v for k, v in data.items() if k not in SECRET_FIELDS}


def record(
    session: AsyncSession,
    actor: Actor,
    action: str,
    object_type: str,
    object_id: str,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    at: datetime,
) -> None:
    session.add(
        AuditEntry(
            tenant_id=actor.tenant_id,
            at=at,
            actor_id=actor.user_id,
            actor_name=actor.name,
            action=action,
            object_type=object_type,
            object_id=object_id,
            before=scrub(before),
            after=scrub(after),
        )
    )


def access_audit(actor: Actor) -> Select[AuditEntry]:
    actor.require(Permission.AUDIT_VIEW)
    return select(AuditEntry).where(AuditEntry.tenant_id == actor.tenant_id)


async def list_entries(
    session: AsyncSession,
    actor: Actor,
    *,
    object_type: str | None,
    object_id: str | None,
    limit: int,
    offset: int,
) -> tuple[list[AuditEntry], int]:
    stmt = access_audit(actor)
    if object_type:
        stmt = stmt.where(AuditEntry.object_type == object_type)
    if object_id:
        stmt = stmt.where(AuditEntry.object_id == object_id)
    total = await session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = await session.scalars(
        stmt.order_by(AuditEntry.at.desc(), AuditEntry.id).limit(limit).offset(offset)
    )
    return list(rows), int(total or 0)
