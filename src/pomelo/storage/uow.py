"""Unit of work: one transaction, its domain events, and their dispatch after commit.

Service functions take a UnitOfWork, change rows through `uow.session` and call `uow.emit(...)`.
On `commit()` the events are appended to the event log inside the same transaction (so the log is
exactly the committed history) and handed to the dispatcher only after the commit succeeded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from pomelo.core.bus import EventBus
from pomelo.core.clock import Clock
from pomelo.core.errors import Conflict
from pomelo.core.events import (
    DomainEvent,
    PublishedEvent,
    audience_to_dict,
    event_from_log,
)
from pomelo.storage.db import Database
from pomelo.storage.eventlog import EventLogEntry


class EventDispatcher:
    """Publishes committed events on the bus strictly in sequence order.

    Sequence numbers are allocated under a lock in commit order, so when seq N is committed every
    seq below N is committed too. A transaction may still finish its commit after a later one
    dispatched; and other processes (the CLI, other nodes) write to the same log. So on a gap the
    dispatcher reads the missing events back from the log rather than waiting for them.
    """

    def __init__(self, db: Database, bus: EventBus) -> None:
        self._db = db
        self._bus = bus
        self._lock = asyncio.Lock()
        self.next_seq: int | None = None

    async def start(self) -> None:
        self.next_seq = await self.last_committed_seq() + 1

    async def last_committed_seq(self) -> int:
        async with self._db.session() as session:
            value = await session.scalar(select(func.max(EventLogEntry.seq)))
        return int(value or 0)

    async def dispatch(self, events: Sequence[PublishedEvent]) -> None:
        if not events:
            return
        async with self._lock:
            if self.next_seq is None:
                self.next_seq = events[0].seq
            await self._publish_through(events[-1].seq, events)

    async def catch_up(self) -> None:
        """Publish events other processes committed (polled; cheap when nothing is new)."""
        last = await self.last_committed_seq()
        async with self._lock:
            if self.next_seq is not None and last >= self.next_seq:
                await self._publish_through(last, ())

    async def _publish_through(self, last: int, known: Sequence[PublishedEvent]) -> None:
        assert self.next_seq is not None
        if last < self.next_seq:
            return
        by_seq = {e.seq: e for e in known if e.seq >= self.next_seq}
        missing = [s for s in range(self.next_seq, last + 1) if s not in by_seq]
        if missing:
            for loaded in await self._load(missing[0], missing[-1]):
                by_seq.setdefault(loaded.seq, loaded)
        ordered = [by_seq[s] for s in sorted(by_seq)]
        self.next_seq = last + 1
        await self._bus.publish(ordered)

    async def _load(self, first: int, last: int) -> list[PublishedEvent]:
        async with self._db.session() as session:
            rows = await session.scalars(
                select(EventLogEntry)
                .where(EventLogEntry.seq >= first, EventLogEntry.seq <= last)
                .order_by(EventLogEntry.seq)
            )
            return [
                PublishedEvent(r.seq, event_from_log(r.kind, r.tenant_id, r.payload, r.audience))
                for r in rows
            ]


class UnitOfWork:
    def __init__(self, db: Database, dispatcher: EventDispatcher, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self._dispatcher = dispatcher
        self._events: list[DomainEvent] = []
        self._session: AsyncSession | None = None

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("unit of work used outside `async with`")
        return self._session

    async def __aenter__(self) -> UnitOfWork:
        self._session = self.db.sessions()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session = self.session
        try:
            if exc_type is not None:
                await session.rollback()
        finally:
            # close() ends any open transaction but, unlike rollback(), keeps loaded attributes,
            # so read-only units of work can return the objects they read.
            self._events.clear()
            await session.close()
            self._session = None

    def emit(self, event: DomainEvent) -> None:
        self._events.append(event)

    async def flush_unique(self, message: str, error_id: str) -> None:
        """Flush, turning a unique-constraint violation into a 409 the caller can name,
        without losing the rest of the transaction (the flush runs in a savepoint)."""
        try:
            async with self.session.begin_nested():
                await self.session.flush()
        except IntegrityError as exc:
            raise Conflict(message, error_id=error_id) from exc

    async def commit(self) -> list[PublishedEvent]:
        published = await self._append_events()
        await self.session.commit()
        self._events.clear()
        await self._dispatcher.dispatch(published)
        return published

    async def _append_events(self) -> list[PublishedEvent]:
        if not self._events:
            return []
        session = self.session
        await self.db.lock_event_log(session)
        last = await session.scalar(select(func.max(EventLogEntry.seq)))
        seq = int(last or 0)
        published: list[PublishedEvent] = []
        rows = []
        for event in self._events:
            seq += 1
            rows.append(
                {
                    "seq": seq,
                    "tenant_id": event.tenant_id,
                    "kind": event.kind,
                    "at": event.at,
                    "actor_id": event.actor_id,
                    "payload": event.payload(),
                    "audience": audience_to_dict(event.audience),
                }
            )
            published.append(PublishedEvent(seq, event))
        # One bulk INSERT of plain rows: ORM objects per event cost more than the events' work.
        await session.execute(insert(EventLogEntry), rows)
        return published
