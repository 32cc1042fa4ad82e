"""Fan-out of committed events to WebSocket clients, filtered by what each viewer may see."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from pomelo.auth.access import Actor
from pomelo.auth.permissions import Scope
from pomelo.core.bus import EventBus, Unsubscribe
from pomelo.core.events import DomainEvent, PublishedEvent
from pomelo.storage.db import Database
from pomelo.storage.eventlog import EventLogEntry
from pomelo.stream.sections import Section

#: Changes to the viewer's own memberships or role alter what he may see: send a new snapshot.
_MEMBERSHIP_KINDS = frozenset({"GroupMemberAdded", "GroupMemberRemoved", "EmployeeUpdated"})


def visible_to(actor: Actor, event: DomainEvent) -> bool:
    if event.tenant_id != actor.tenant_id:
        return False
    if actor.scope is Scope.ALL:
        return True
    audience = event.audience
    if actor.user_id is not None and actor.user_id in audience.user_ids:
        return True
    return actor.scope is Scope.GROUP and bool(actor.group_ids & audience.group_ids)


def needs_resync(actor: Actor, event: DomainEvent) -> bool:
    data: Any = event
    if event.kind in _MEMBERSHIP_KINDS:
        return bool(getattr(data, "user_id", None) == actor.user_id)
    if event.kind == "GroupDeleted":
        return bool(getattr(data, "group_id", None) in actor.group_ids)
    if event.kind == "RoleChanged":
        return bool(getattr(data, "key", None) == actor.role_key)
    return False


def ends_session(actor: Actor, event: DomainEvent) -> bool:
    return event.kind == "EmployeeDeactivated" and getattr(event, "user_id", None) == (
        actor.user_id
    )


class Subscription:
    """One client's buffer. Overflow marks it stale: the client then gets a fresh snapshot."""

    def __init__(self, tenant_id: str, size: int, on_close: Callable[[Subscription], None]) -> None:
        self.tenant_id = tenant_id
        self.queue: asyncio.Queue[PublishedEvent] = asyncio.Queue(maxsize=size)
        self.overflowed = False
        self._on_close = on_close

    def offer(self, published: PublishedEvent) -> None:
        try:
            self.queue.put_nowait(published)
        except asyncio.QueueFull:
            self.overflowed = True

    def drain(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.overflowed = False

    def close(self) -> None:
        self._on_close(self)


class StreamHub:
    def __init__(
        self, db: Database, bus: EventBus, sections: list[Section], queue_size: int
    ) -> None:
        self._db = db
        self._bus = bus
        self.sections = sections
        self._queue_size = queue_size
        self._subs: set[Subscription] = set()
        self._unsubscribe: Unsubscribe | None = None

    @property
    def connections(self) -> int:
        return len(self._subs)

    def start(self) -> None:
        self._unsubscribe = self._bus.subscribe(self._on_event)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    async def _on_event(self, published: PublishedEvent) -> None:
        for sub in tuple(self._subs):
            if sub.tenant_id == published.event.tenant_id:
                sub.offer(published)

    def subscribe(self, actor: Actor) -> Subscription:
        """Subscribe *before* taking the snapshot, so no event falls between the two."""
        sub = Subscription(actor.tenant_id, self._queue_size, self._subs.discard)
        self._subs.add(sub)
        return sub

    async def snapshot(self, actor: Actor) -> tuple[int, dict[str, Any]]:
        async with self._db.snapshot_session() as session:
            seq = int(await session.scalar(select(func.max(EventLogEntry.seq))) or 0)
            data = {s.name: await s.build(session, actor) for s in self.sections}
        return seq, data
