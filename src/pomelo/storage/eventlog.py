"""The append-only event log: every committed domain event, in commit order."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from pomelo.storage.base import Base, TenantMixin


class EventLogEntry(TenantMixin, Base):
    """`seq` is assigned by the unit of work under a lock, so committed rows have no gaps."""

    __tablename__ = "event_log"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column()
    actor_id: Mapped[str | None] = mapped_column(String(32), default=None)
    payload: Mapped[dict[str, Any]] = mapped_column()
    audience: Mapped[dict[str, Any]] = mapped_column()
