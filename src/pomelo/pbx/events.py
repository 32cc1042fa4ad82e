"""Events of the PBX configuration."""

from __future__ import annotations

from dataclasses import dataclass

from pomelo.core.events import DomainEvent, event


@event
@dataclass(frozen=True, kw_only=True)
class PbxConfigChanged(DomainEvent):
    """A SIP account, trunk or number was created, changed or deleted (company-wide audience)."""

    object_type: str
    object_id: str
    action: str
