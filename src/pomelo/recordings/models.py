"""Tables of the recordings catalogue.

Call, employee and group ids are plain indexed columns rather than foreign keys, as in the CDR:
a recording is history. Deleting an employee or a group must neither delete the recordings of
his calls nor fail the insert of a recording that finished while the deletion ran.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from pomelo.storage.base import Base, IdMixin, TenantMixin, utcnow


class Recording(IdMixin, TenantMixin, Base):
    __tablename__ = "recordings"
    __table_args__ = (Index("ix_recordings_tenant_started", "tenant_id", "started_at"),)

    #: Pomelo's id of the call (the CDR's id, the ``call_id`` of call events).
    call_id: Mapped[str] = mapped_column(String(64), index=True)
    #: Indexed on its own for the retention sweep, which crosses tenants.
    started_at: Mapped[datetime] = mapped_column(index=True)
    ended_at: Mapped[datetime] = mapped_column()
    duration_ms: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    #: Relative to the recordings directory, so the directory can move without a data migration.
    path: Mapped[str] = mapped_column(String(1024))
    sample_rate: Mapped[int] = mapped_column(Integer)
    channels: Mapped[int] = mapped_column(Integer)
    from_number: Mapped[str] = mapped_column(String(64))
    to_number: Mapped[str] = mapped_column(String(64))
    #: The group whose number was called, if any: its head may listen even when no member
    #: of his group answered.
    group_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RecordingParticipant(Base):
    """An employee who took part in a recorded call (an operator hears only these)."""

    __tablename__ = "recording_participants"

    recording_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("recordings.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)
