"""Events of the recordings catalogue.

Addressed like call events: to the employees who took part and their groups, plus the group
whose number was called, so a live client shows a recording exactly to those who may play it.
(``RecordingStored`` rather than "RecordingAvailable": event kinds are past-tense facts, which
the registry's test enforces.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pomelo.core.events import DomainEvent, event


@event
@dataclass(frozen=True, kw_only=True)
class RecordingStored(DomainEvent):
    """A call's recording was written and catalogued; it can be played from now on."""

    recording_id: str
    call_id: str
    started_at: datetime
    duration_ms: int
    from_number: str
    to_number: str


@event
@dataclass(frozen=True, kw_only=True)
class RecordingDeleted(DomainEvent):
    """A recording and its file are gone: ``reason`` is "deleted" (by an employee, audited) or
    "retention" (older than the configured retention)."""

    recording_id: str
    call_id: str
    reason: str
