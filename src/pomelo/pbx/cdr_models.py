"""The call detail record table: one row per call, written when the call ends.

Account, employee and trunk ids are plain indexed columns, not foreign keys: a CDR is history,
and deleting an extension must neither delete its calls nor make the insert of a call that was
in progress at that moment fail (which would also lose the events written with it).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from pomelo.storage.base import Base, IdMixin, TenantMixin


class CallRecord(IdMixin, TenantMixin, Base):
    __tablename__ = "call_records"
    __table_args__ = (Index("ix_call_records_tenant_started", "tenant_id", "started_at"),)

    #: The caller's SIP Call-ID (the id is the Pomelo call id the events carry).
    call_id: Mapped[str] = mapped_column(String(255), index=True)
    direction: Mapped[str] = mapped_column(String(16))  # internal | inbound | outbound
    from_number: Mapped[str] = mapped_column(String(64))
    from_name: Mapped[str | None] = mapped_column(String(100), default=None)
    to_number: Mapped[str] = mapped_column(String(64))
    did: Mapped[str | None] = mapped_column(String(32), default=None)
    started_at: Mapped[datetime] = mapped_column()
    answered_at: Mapped[datetime | None] = mapped_column(default=None)
    ended_at: Mapped[datetime] = mapped_column()
    #: Whole seconds from start to end, and from answer to end (0 when unanswered).
    duration: Mapped[int] = mapped_column(Integer, default=0)
    talk_time: Mapped[int] = mapped_column(Integer, default=0)
    #: answered | busy | no_answer | cancelled | failed | rejected
    disposition: Mapped[str] = mapped_column(String(16))
    #: caller | callee | system
    hangup_side: Mapped[str | None] = mapped_column(String(16), default=None)
    hangup_code: Mapped[int | None] = mapped_column(Integer, default=None)
    #: bye, cancel, busy, no-answer, max-duration, session-timer, ack-timeout, ...
    hangup_reason: Mapped[str | None] = mapped_column(String(64), default=None)
    caller_account_id: Mapped[str | None] = mapped_column(String(32), default=None)
    caller_user_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    callee_account_id: Mapped[str | None] = mapped_column(String(32), default=None)
    callee_user_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    trunk_id: Mapped[str | None] = mapped_column(String(32), default=None)
    group_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    """The group the call was offered to (dialled directly or chosen in a menu)."""
