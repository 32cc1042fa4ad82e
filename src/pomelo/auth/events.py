"""Events of the employee directory: employees, presence, groups and memberships, roles."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pomelo.core.events import DomainEvent, event


@event
@dataclass(frozen=True, kw_only=True)
class EmployeeCreated(DomainEvent):
    user_id: str
    employee: dict[str, Any] = field(default_factory=dict)


@event
@dataclass(frozen=True, kw_only=True)
class EmployeeUpdated(DomainEvent):
    user_id: str
    employee: dict[str, Any] = field(default_factory=dict)


@event
@dataclass(frozen=True, kw_only=True)
class EmployeeDeactivated(DomainEvent):
    user_id: str


@event
@dataclass(frozen=True, kw_only=True)
class PresenceChanged(DomainEvent):
    user_id: str
    presence: str
    reason: str | None = None
    accepts_calls: bool = True


@event
@dataclass(frozen=True, kw_only=True)
class GroupCreated(DomainEvent):
    group_id: str
    name: str
    description: str = ""


@event
@dataclass(frozen=True, kw_only=True)
class GroupUpdated(DomainEvent):
    group_id: str
    name: str
    description: str = ""


@event
@dataclass(frozen=True, kw_only=True)
class GroupDeleted(DomainEvent):
    group_id: str


@event
@dataclass(frozen=True, kw_only=True)
class GroupMemberAdded(DomainEvent):
    group_id: str
    user_id: str
    #: The member's directory record, so a viewer who could not see him before can add him.
    employee: dict[str, Any] = field(default_factory=dict)


@event
@dataclass(frozen=True, kw_only=True)
class GroupMemberRemoved(DomainEvent):
    group_id: str
    user_id: str
    employee: dict[str, Any] = field(default_factory=dict)


@event
@dataclass(frozen=True, kw_only=True)
class RoleChanged(DomainEvent):
    """A custom role was created, edited or deleted (`deleted` tells which)."""

    role_id: str
    key: str
    deleted: bool = False


@event
@dataclass(frozen=True, kw_only=True)
class TenantUpdated(DomainEvent):
    name: str
    timezone: str
