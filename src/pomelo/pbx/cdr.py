"""Call events and CDRs, written off the signalling path.

A call's task must never wait for the database: a slow commit would delay the ACK or BYE of
that call, and SIP retransmissions would pile up. So calls hand their events (and, at the
end, their CDR row) to the :class:`CallRecorder`, which writes them from its own task.

It writes in batches: whatever accumulated while the previous commit ran goes into the next
unit of work. Under load that turns thousands of tiny transactions into a few large ones
(SQLite has one writer), while a lone call's events still leave within one commit's time.
Order is kept (one FIFO), so a call's events commit in the order they happened, and a CDR
is always in the same transaction as its ``CallEnded``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert
from sqlalchemy import inspect as sa_inspect

from pomelo.core.events import Audience, DomainEvent
from pomelo.pbx.cdr_models import CallRecord
from pomelo.pbx.routing import CallDirectory
from pomelo.pbx.sipcache import AccountInfo
from pomelo.storage.uow import UnitOfWork

if TYPE_CHECKING:
    from pomelo.pbx.calls import Call

__all__ = ["CallAudience", "CallRecorder", "EventFactory", "call_record"]

log = logging.getLogger(__name__)

EventFactory = Callable[[Audience], DomainEvent]
"""Builds an event once its audience is known (resolving groups needs the database)."""


@dataclass(slots=True)
class CallAudience:
    """The employees a call involves so far, and their groups once looked up (cached for
    the life of the call: one query per call, not per event)."""

    tenant_id: str
    user_ids: set[str] = field(default_factory=set)
    groups: dict[str, frozenset[str]] = field(default_factory=dict)
    group_ids: set[str] = field(default_factory=set)
    """Groups the call concerns directly (a call to a group's number)."""

    def add(self, *user_ids: str | None) -> None:
        self.user_ids.update(u for u in user_ids if u)

    @property
    def unresolved(self) -> set[str]:
        return self.user_ids - self.groups.keys()

    def freeze(self) -> Audience:
        group_ids = set(self.group_ids)
        for user_id in self.user_ids:
            group_ids |= self.groups.get(user_id, frozenset())
        return Audience(user_ids=frozenset(self.user_ids), group_ids=frozenset(group_ids))


@dataclass(slots=True)
class _Item:
    audience: CallAudience
    make: EventFactory
    record: CallRecord | None


class CallRecorder:
    """One writer task per platform draining a FIFO of call events and CDRs."""

    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        directory: CallDirectory,
        *,
        max_batch: int = 500,
    ) -> None:
        self._uow = uow
        self._directory = directory
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.failed = 0

    def emit(
        self, audience: CallAudience, make: EventFactory, record: CallRecord | None = None
    ) -> None:
        """Queue an event (and a CDR to insert with it); returns at once."""
        self._queue.put_nowait(_Item(audience, make, record))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    async def drain(self) -> None:
        """Wait until everything queued so far is written (tests, shutdown)."""
        await self._queue.join()

    async def stop(self) -> None:
        await self.drain()
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write_batch(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write_batch(self, batch: list[_Item]) -> None:
        try:
            await self._resolve_groups(batch)
            await self._write(batch)
        except Exception:
            if len(batch) == 1:
                self.failed += 1
                log.exception("could not write a call event; it is lost")
                return
            log.exception("call event batch failed; writing its %d items one by one", len(batch))
            for item in batch:
                await self._write_batch([item])
            return
        self.written += len(batch)

    async def _resolve_groups(self, batch: list[_Item]) -> None:
        seen: set[int] = set()
        for item in batch:
            audience = item.audience
            if id(audience) in seen or not audience.unresolved:
                continue
            seen.add(id(audience))
            found = await self._directory.groups_of_users(audience.tenant_id, audience.unresolved)
            for user_id in audience.unresolved:
                audience.groups[user_id] = found.get(user_id, frozenset())

    async def _write(self, batch: list[_Item]) -> None:
        async with self._uow() as uow:
            rows: list[dict[str, Any]] = []
            for item in batch:
                uow.emit(item.make(item.audience.freeze()))
                if item.record is not None:
                    rows.append(_record_row(item.record))
            if rows:
                # One executemany for the batch's CDRs instead of a unit-of-work flush per
                # object; same transaction as the events, so a CDR still commits with its
                # CallEnded.
                await uow.session.execute(insert(CallRecord), rows)
            await uow.commit()


_RECORD_COLUMNS = tuple(attr.key for attr in sa_inspect(CallRecord).column_attrs)


def _record_row(record: CallRecord) -> dict[str, Any]:
    """The column values set on a (transient) ``CallRecord``; unset ones keep their defaults."""
    values = record.__dict__
    return {key: values[key] for key in _RECORD_COLUMNS if key in values}


def call_record(call: Call) -> CallRecord:
    """The CDR row of ``call`` as of now: who called whom, when it was answered and ended,
    how it ended and who ended it."""
    route = call.route
    ended = call.ended_at or call.service.clock.now()
    answered = call.answered_at
    winner_account: AccountInfo | None = call.winner.account if call.winner else None
    callee = winner_account or route.callee
    side, code, reason = call.hangup
    return CallRecord(
        id=call.id,
        tenant_id=route.tenant_id,
        call_id=call.a.key[0][:255],
        direction=route.direction,
        from_number=route.from_number[:64],
        from_name=route.from_name[:100] if route.from_name else None,
        to_number=route.to_number[:64],
        did=route.did,
        started_at=call.started_at,
        answered_at=answered,
        ended_at=ended,
        duration=round((ended - call.started_at).total_seconds()),
        talk_time=round((ended - answered).total_seconds()) if answered else 0,
        disposition=call.disposition,
        hangup_side=side,
        hangup_code=code,
        hangup_reason=reason,
        caller_account_id=route.caller.id if route.caller else None,
        caller_user_id=route.caller.user_id if route.caller else None,
        callee_account_id=callee.id if callee else None,
        callee_user_id=(callee.user_id if callee else None) or route.callee_user_id,
        trunk_id=route.trunk.id if route.trunk else None,
        group_id=route.group_id,
    )
