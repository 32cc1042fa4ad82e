"""Engine and session management for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

log = logging.getLogger(__name__)

#: Lock id for serialising event-log appends on PostgreSQL (see UnitOfWork).
EVENT_APPEND_LOCK = 0x706F6D656C6F  # "pomelo"


class Database:
    """Owns the engine; hands out sessions.

    SQLite runs in WAL mode with `BEGIN IMMEDIATE` transactions: a transaction that reads and then
    writes can otherwise fail with SQLITE_BUSY when another writer committed in between, and the
    event log's sequence numbers are read-then-written.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = make_url(url).get_backend_name() == "sqlite"
        self.engine: AsyncEngine = self._create_engine(url, echo)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    def _create_engine(self, url: str, echo: bool) -> AsyncEngine:
        if not self.is_sqlite:
            return create_async_engine(url, echo=echo, pool_pre_ping=True)
        _ensure_sqlite_dir(url)
        engine = create_async_engine(
            url, echo=echo, connect_args={"timeout": 30}, pool_size=8, max_overflow=8
        )
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
        return engine

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    @asynccontextmanager
    async def snapshot_session(self) -> AsyncIterator[AsyncSession]:
        """A session whose reads all see one consistent point in time (stream snapshots)."""
        async with self.sessions() as session:
            if not self.is_sqlite:
                await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def lock_event_log(self, session: AsyncSession) -> None:
        """Serialise event appends so sequence numbers commit in order (no gaps, no reordering)."""
        if not self.is_sqlite:
            await session.execute(
                text("SELECT pg_advisory_xact_lock(:k)"), {"k": EVENT_APPEND_LOCK}
            )

    async def migrate(self) -> None:
        from pomelo.storage.migrate import upgrade_to_head

        async with self.engine.begin() as conn:
            await conn.run_sync(upgrade_to_head)

    async def current_revision(self) -> str | None:
        from pomelo.storage.migrate import current_revision

        async with self.engine.connect() as conn:
            return await conn.run_sync(current_revision)

    async def run_sync(self, fn: Any) -> Any:
        conn: AsyncConnection
        async with self.engine.begin() as conn:
            return await conn.run_sync(fn)

    async def dispose(self) -> None:
        await self.engine.dispose()


def _ensure_sqlite_dir(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE instead of the driver's deferred BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")
