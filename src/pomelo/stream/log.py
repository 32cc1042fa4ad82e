"""Reading the committed event log back, filtered like the live stream (for integrations)."""

from __future__ import annotations

from sqlalchemy import select

from pomelo.auth.access import Actor
from pomelo.core.events import PublishedEvent, event_from_log
from pomelo.storage.db import Database
from pomelo.storage.eventlog import EventLogEntry
from pomelo.stream.hub import visible_to

_MAX_BATCHES = 20


class EventLogReader:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def read_after(self, actor: Actor, after_seq: int, limit: int) -> list[PublishedEvent]:
        found: list[PublishedEvent] = []
        async with self._db.session() as session:
            for _ in range(_MAX_BATCHES):
                rows = list(
                    await session.scalars(
                        select(EventLogEntry)
                        .where(
                            EventLogEntry.tenant_id == actor.tenant_id,
                            EventLogEntry.seq > after_seq,
                        )
                        .order_by(EventLogEntry.seq)
                        .limit(limit)
                    )
                )
                for row in rows:
                    published = PublishedEvent(
                        row.seq, event_from_log(row.kind, row.tenant_id, row.payload, row.audience)
                    )
                    if visible_to(actor, published.event):
                        found.append(published)
                if len(rows) < limit or len(found) >= limit:
                    break
                after_seq = rows[-1].seq
        return found[:limit]
