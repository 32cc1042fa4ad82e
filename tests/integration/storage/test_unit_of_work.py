"""Events leave only after commit, in sequence order, and the log is the committed history."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from pomelo.auth.access import Actor
from pomelo.auth.events import PresenceChanged
from pomelo.auth.schemas import GroupCreate
from pomelo.core.bus import MemoryEventBus
from pomelo.core.clock import FakeClock
from pomelo.core.events import PublishedEvent
from pomelo.storage.db import Database
from pomelo.storage.eventlog import EventLogEntry
from pomelo.storage.migrate import schema_drift
from pomelo.storage.uow import EventDispatcher, UnitOfWork
from tests.conftest import Server, TenantFixture


class Recorder:
    def __init__(self) -> None:
        self.seen: list[PublishedEvent] = []

    async def __call__(self, published: PublishedEvent) -> None:
        self.seen.append(published)


def presence(tenant_id: str, user_id: str, reason: str) -> PresenceChanged:
    return PresenceChanged(
        tenant_id=tenant_id, at=datetime.now(UTC), user_id=user_id, presence="break", reason=reason
    )


async def log_count(db: Database, tenant_id: str) -> int:
    async with db.session() as s:
        return int(
            await s.scalar(
                select(func.count())
                .select_from(EventLogEntry)
                .where(EventLogEntry.tenant_id == tenant_id)
            )
            or 0
        )


async def test_rolled_back_events_never_leave(server: Server, tenant: TenantFixture) -> None:
    platform = server.platform
    recorder = Recorder()
    unsubscribe = platform.bus.subscribe(recorder)
    before = await log_count(platform.db, tenant.id)
    try:
        with pytest.raises(RuntimeError):
            async with platform.uow() as uow:
                uow.emit(presence(tenant.id, tenant["operator"].id, "never"))
                raise RuntimeError("business rule failed")
        async with platform.uow() as uow:  # emitted but not committed: also dropped
            uow.emit(presence(tenant.id, tenant["operator"].id, "forgotten"))
        # A service call that fails after emitting (duplicate name → 409) emits nothing either.
        system = Actor.system(tenant.id)
        with pytest.raises(Exception, match="exists"):
            await platform.directory.create_group(system, GroupCreate(name="Sales"))
    finally:
        unsubscribe()
    assert recorder.seen == []
    assert await log_count(platform.db, tenant.id) == before


async def test_committed_events_are_logged_and_published_in_order(
    server: Server, tenant: TenantFixture
) -> None:
    platform = server.platform
    recorder = Recorder()
    unsubscribe = platform.bus.subscribe(recorder)
    try:
        async with platform.uow() as uow:
            for i in range(3):
                uow.emit(presence(tenant.id, tenant["operator"].id, f"r{i}"))
            published = await uow.commit()
    finally:
        unsubscribe()
    seqs = [p.seq for p in published]
    assert seqs == list(range(seqs[0], seqs[0] + 3))
    assert [p.seq for p in recorder.seen] == seqs
    async with platform.db.session() as s:
        rows = list(
            await s.scalars(
                select(EventLogEntry).where(EventLogEntry.seq.in_(seqs)).order_by(EventLogEntry.seq)
            )
        )
    assert [r.payload["reason"] for r in rows] == ["r0", "r1", "r2"]


async def test_events_written_by_another_process_are_caught_up(
    server: Server, tenant: TenantFixture
) -> None:
    """The CLI or another node writes to the same log: the server publishes those events too,
    in order, without waiting for them in memory."""
    platform = server.platform
    outsider_bus = MemoryEventBus()
    outsider_db = Database(platform.db.url)
    outsider = EventDispatcher(outsider_db, outsider_bus)
    recorder = Recorder()
    unsubscribe = platform.bus.subscribe(recorder)
    try:
        async with UnitOfWork(outsider_db, outsider, FakeClock()) as uow:
            uow.emit(presence(tenant.id, tenant["operator"].id, "from-cli"))
            foreign = await uow.commit()
        async with platform.uow() as uow:  # a later local commit fills the gap from the log
            uow.emit(presence(tenant.id, tenant["operator"].id, "local"))
            local = await uow.commit()
        await platform.dispatcher.catch_up()
    finally:
        unsubscribe()
        await outsider_db.dispose()
    seen = [(p.seq, getattr(p.event, "reason", None)) for p in recorder.seen]
    assert seen == [(foreign[0].seq, "from-cli"), (local[0].seq, "local")]


async def test_models_and_migrations_agree(fresh_database: Any) -> None:
    db = Database(await fresh_database())
    try:
        await db.migrate()
        assert await db.run_sync(schema_drift) == []
    finally:
        await db.dispose()


async def test_concurrent_writers_get_gap_free_ordered_sequences(
    server: Server, tenant: TenantFixture
) -> None:
    platform = server.platform
    recorder = Recorder()
    unsubscribe = platform.bus.subscribe(recorder)
    system = Actor.system(tenant.id)
    try:
        created = await asyncio.gather(
            *(
                platform.directory.create_group(system, GroupCreate(name=f"Parallel {i}"))
                for i in range(25)
            )
        )
    finally:
        unsubscribe()
    assert len({g["id"] for g in created}) == 25
    mine = [p.seq for p in recorder.seen if p.event.tenant_id == tenant.id]
    assert len(mine) == 25
    everything = [p.seq for p in recorder.seen]
    assert everything == sorted(everything)
    assert everything == list(range(everything[0], everything[0] + len(everything)))
