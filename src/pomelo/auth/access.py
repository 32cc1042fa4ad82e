"""Who is acting, and what they may see: tenant and role scoping by construction.

Every query of tenant data starts from an `access_*` helper, which already carries the tenant
filter and the role's visibility scope; a route cannot forget either because it never builds the
base query itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from pomelo.auth.models import ApiKey, Group, GroupMember, Role, User
from pomelo.auth.permissions import Permission, Scope
from pomelo.core.errors import Forbidden, NotFound

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Actor:
    tenant_id: str
    user_id: str | None
    name: str
    role_key: str
    scope: Scope
    permissions: frozenset[Permission]
    group_ids: frozenset[str]
    via: str = "session"

    @classmethod
    def system(cls, tenant_id: str, name: str = "system") -> Actor:
        """The platform itself (CLI, demo seeding): every right, no user behind it."""
        return cls(
            tenant_id=tenant_id,
            user_id=None,
            name=name,
            role_key="system",
            scope=Scope.ALL,
            permissions=frozenset(Permission),
            group_ids=frozenset(),
            via="system",
        )

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions

    def require(self, permission: Permission) -> None:
        if permission not in self.permissions:
            raise Forbidden(f"this action needs the {permission.value!r} permission")

    def sees_user(self, user_id: str, user_group_ids: frozenset[str]) -> bool:
        if self.scope is Scope.ALL or user_id == self.user_id:
            return True
        return self.scope is Scope.GROUP and bool(self.group_ids & user_group_ids)

    def sees_group(self, group_id: str) -> bool:
        return self.scope is Scope.ALL or group_id in self.group_ids


def access_users(actor: Actor) -> Select[User]:
    stmt = select(User).where(User.tenant_id == actor.tenant_id)
    if actor.scope is Scope.ALL:
        return stmt
    if actor.scope is Scope.GROUP:
        members = select(GroupMember.user_id).where(
            GroupMember.tenant_id == actor.tenant_id,
            GroupMember.group_id.in_(actor.group_ids),
        )
        return stmt.where(or_(User.id == actor.user_id, User.id.in_(members)))
    return stmt.where(User.id == actor.user_id)


def access_groups(actor: Actor) -> Select[Group]:
    stmt = select(Group).where(Group.tenant_id == actor.tenant_id)
    if actor.scope is Scope.ALL:
        return stmt
    return stmt.where(Group.id.in_(actor.group_ids))


def access_roles(actor: Actor) -> Select[Role]:
    return select(Role).where(Role.tenant_id == actor.tenant_id)


def access_api_keys(actor: Actor) -> Select[ApiKey]:
    """Administrators see every key of the tenant; anyone else only his own."""
    stmt = select(ApiKey).where(ApiKey.tenant_id == actor.tenant_id)
    if actor.scope is Scope.ALL and actor.can(Permission.API_KEYS_MANAGE):
        return stmt
    return stmt.where(ApiKey.user_id == actor.user_id)


async def get_one(
    session: AsyncSession, stmt: Select[T], id_column: Any, obj_id: str, what: str
) -> T:
    """Fetch one object through an access query; invisible and missing look the same (404)."""
    found = await session.scalar(stmt.where(id_column == obj_id))
    if found is None:
        raise NotFound(f"no {what} with id {obj_id!r}", error_id=f"no-such-{what}")
    return found
