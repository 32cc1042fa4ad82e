"""The only code that writes tenants, employees, groups and roles.

Each public method is one unit of work: it checks the actor's right, changes rows, records the
audit entry and emits the domain events, all committed together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import delete, func, select

from pomelo.audit import service as audit
from pomelo.auth import events as ev
from pomelo.auth.access import (
    Actor,
    access_groups,
    access_roles,
    access_users,
    get_one,
)
from pomelo.auth.directory import employee_record, memberships, role_keys
from pomelo.auth.models import Group, GroupMember, Role, Tenant, User
from pomelo.auth.passwords import PasswordHasher
from pomelo.auth.permissions import (
    BUILTIN_ROLES,
    BuiltinRole,
    Permission,
    Scope,
    parse_permissions,
)
from pomelo.auth.schemas import (
    GroupCreate,
    GroupUpdate,
    RoleCreate,
    RoleUpdate,
    TenantUpdate,
    UserCreate,
    UserUpdate,
)
from pomelo.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from pomelo.core.events import Audience
from pomelo.storage.uow import UnitOfWork

#: Passwords refused outside demo mode whatever their length.
WEAK_PASSWORDS = frozenset({"demo", "password", "admin", "12345678", "123456789", "qwertyui"})
MIN_PASSWORD_LENGTH = 8


class DirectoryService:
    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        hasher: PasswordHasher,
        *,
        demo_mode: bool,
    ) -> None:
        self._uow = uow
        self._hasher = hasher
        self._demo_mode = demo_mode

    # -- tenants ---------------------------------------------------------------------------

    async def create_tenant(
        self, slug: str, name: str, timezone: str = "UTC", sip_domain: str | None = None
    ) -> Tenant:
        _check_timezone(timezone)
        async with self._uow() as uow:
            tenant = Tenant(
                slug=slug, name=name, timezone=timezone, sip_domain=sip_domain or f"{slug}.sip"
            )
            uow.session.add(tenant)
            await uow.flush_unique(f"tenant {slug!r} already exists", "tenant-exists")
            for role in BuiltinRole:
                label, scope, _perms = BUILTIN_ROLES[role]
                uow.session.add(
                    Role(
                        tenant_id=tenant.id,
                        key=role.value,
                        name=label,
                        builtin=True,
                        scope=scope.value,
                        permissions=[],
                    )
                )
            await uow.commit()
            return tenant

    async def tenant_by_slug(self, slug: str) -> Tenant | None:
        async with self._uow() as uow:
            return await uow.session.scalar(select(Tenant).where(Tenant.slug == slug))

    async def get_tenant(self, actor: Actor) -> Tenant:
        async with self._uow() as uow:
            tenant = await uow.session.get(Tenant, actor.tenant_id)
            if tenant is None:
                raise NotFound("tenant is gone", error_id="no-such-tenant")
            return tenant

    async def update_tenant(self, actor: Actor, data: TenantUpdate) -> Tenant:
        actor.require(Permission.TENANT_MANAGE)
        if data.timezone is not None:
            _check_timezone(data.timezone)
        async with self._uow() as uow:
            tenant = await uow.session.get(Tenant, actor.tenant_id)
            assert tenant is not None
            fields = ("name", "timezone", "sip_domain")
            before = {f: getattr(tenant, f) for f in fields}
            for key, value in data.model_dump(exclude_none=True).items():
                setattr(tenant, key, value)
            await uow.flush_unique("that SIP domain belongs to another tenant", "sip-domain-taken")
            after = {f: getattr(tenant, f) for f in fields}
            audit.record(
                uow.session,
                actor,
                "tenant.update",
                "tenant",
                tenant.id,
                before=before,
                after=after,
                at=uow.clock.now(),
            )
            uow.emit(
                ev.TenantUpdated(
                    tenant_id=tenant.id,
                    at=uow.clock.now(),
                    actor_id=actor.user_id,
                    name=tenant.name,
                    timezone=tenant.timezone,
                )
            )
            await uow.commit()
            return tenant

    # -- employees -------------------------------------------------------------------------

    async def create_user(self, actor: Actor, data: UserCreate) -> dict[str, Any]:
        actor.require(Permission.USERS_MANAGE)
        password_hash = await self._hash_new_password(data.password)
        async with self._uow() as uow:
            role = await self._role_by_key(uow, actor, data.role)
            groups = [
                await get_one(uow.session, access_groups(actor), Group.id, gid, "group")
                for gid in dict.fromkeys(data.group_ids)
            ]
            user = User(
                tenant_id=actor.tenant_id,
                username=data.username,
                display_name=data.display_name,
                email=data.email,
                password_hash=password_hash,
                role_id=role.id,
            )
            uow.session.add(user)
            await uow.flush_unique(f"username {data.username!r} is taken", "username-taken")
            for group in groups:
                uow.session.add(
                    GroupMember(tenant_id=actor.tenant_id, group_id=group.id, user_id=user.id)
                )
            record = employee_record(user, role.key, [g.id for g in groups])
            audit.record(
                uow.session, actor, "user.create", "user", user.id, after=record, at=uow.clock.now()
            )
            uow.emit(
                ev.EmployeeCreated(
                    tenant_id=actor.tenant_id,
                    at=uow.clock.now(),
                    actor_id=actor.user_id,
                    user_id=user.id,
                    employee=record,
                    audience=_user_audience(record),
                )
            )
            await uow.commit()
            return _public(user, record)

    async def list_users(
        self, actor: Actor, *, limit: int, offset: int, query: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        actor.require(Permission.USERS_VIEW)
        async with self._uow() as uow:
            stmt = access_users(actor)
            if query:
                like = f"%{query.lower()}%"
                stmt = stmt.where(
                    func.lower(User.display_name).like(like) | func.lower(User.username).like(like)
                )
            total = await uow.session.scalar(select(func.count()).select_from(stmt.subquery()))
            users = await uow.session.scalars(
                stmt.order_by(User.username).limit(limit).offset(offset)
            )
            groups_of = await memberships(uow.session, actor.tenant_id)
            roles = await role_keys(uow.session, actor.tenant_id)
            items = [
                _public(u, employee_record(u, roles[u.role_id], groups_of.get(u.id, [])))
                for u in users
            ]
            return items, int(total or 0)

    async def get_user(self, actor: Actor, user_id: str) -> dict[str, Any]:
        if user_id != actor.user_id:
            actor.require(Permission.USERS_VIEW)
        async with self._uow() as uow:
            user = await get_one(uow.session, access_users(actor), User.id, user_id, "user")
            return _public(user, await _record(uow, user))

    async def update_user(self, actor: Actor, user_id: str, data: UserUpdate) -> dict[str, Any]:
        actor.require(Permission.USERS_MANAGE)
        new_hash = await self._hash_new_password(data.password) if data.password else None
        async with self._uow() as uow:
            user = await get_one(uow.session, access_users(actor), User.id, user_id, "user")
            before = await _record(uow, user)
            before["is_active"] = user.is_active
            if data.role is not None:
                role = await self._role_by_key(uow, actor, data.role)
                user.role_id = role.id
            for key in ("display_name", "email", "is_active"):
                value = getattr(data, key)
                if value is not None:
                    setattr(user, key, value)
            if new_hash is not None:
                user.password_hash = new_hash
            if user.id == actor.user_id and user.is_active is False:
                raise InvalidInput("you cannot deactivate yourself", error_id="self-deactivation")
            await uow.session.flush()
            record = await _record(uow, user)
            audit.record(
                uow.session,
                actor,
                "user.update",
                "user",
                user.id,
                before=before,
                after={
                    **record,
                    "is_active": user.is_active,
                    "password_changed": new_hash is not None,
                },
                at=uow.clock.now(),
            )
            self._emit_user_change(uow, actor, user, record, was_active=before["is_active"])
            await uow.commit()
            return _public(user, record)

    def _emit_user_change(
        self, uow: UnitOfWork, actor: Actor, user: User, record: dict[str, Any], *, was_active: bool
    ) -> None:
        at, audience = uow.clock.now(), _user_audience(record)
        if not user.is_active:
            if was_active:
                uow.emit(
                    ev.EmployeeDeactivated(
                        tenant_id=actor.tenant_id,
                        at=at,
                        actor_id=actor.user_id,
                        user_id=user.id,
                        audience=audience,
                    )
                )
            return
        uow.emit(
            ev.EmployeeUpdated(
                tenant_id=actor.tenant_id,
                at=at,
                actor_id=actor.user_id,
                user_id=user.id,
                employee=record,
                audience=audience,
            )
        )

    async def set_presence(
        self,
        actor: Actor,
        user_id: str,
        presence: str,
        reason: str | None,
        accepts_calls: bool | None,
    ) -> dict[str, Any]:
        """Employees set their own presence; managers may set anyone's they can manage."""
        if user_id != actor.user_id:
            actor.require(Permission.USERS_MANAGE)
        async with self._uow() as uow:
            user = await get_one(uow.session, access_users(actor), User.id, user_id, "user")
            if not user.is_active:
                raise Conflict("the employee is deactivated", error_id="user-inactive")
            user.presence = presence
            user.presence_reason = reason if presence == "break" else None
            if accepts_calls is not None:
                user.accepts_calls = accepts_calls
            record = await _record(uow, user)
            uow.emit(
                ev.PresenceChanged(
                    tenant_id=actor.tenant_id,
                    at=uow.clock.now(),
                    actor_id=actor.user_id,
                    user_id=user.id,
                    presence=user.presence,
                    reason=user.presence_reason,
                    accepts_calls=user.accepts_calls,
                    audience=_user_audience(record),
                )
            )
            await uow.commit()
            return _public(user, record)

    async def _hash_new_password(self, password: str | None) -> str | None:
        if password is None:
            return None
        if not self._demo_mode and (
            len(password) < MIN_PASSWORD_LENGTH or password.lower() in WEAK_PASSWORDS
        ):
            raise InvalidInput(
                f"password too weak: at least {MIN_PASSWORD_LENGTH} characters, not a common one",
                error_id="weak-password",
            )
        return await self._hasher.hash(password)

    async def _role_by_key(self, uow: UnitOfWork, actor: Actor, key: str) -> Role:
        role = await uow.session.scalar(access_roles(actor).where(Role.key == key))
        if role is None:
            raise InvalidInput(f"no role {key!r}", error_id="no-such-role")
        if role.key == BuiltinRole.ADMINISTRATOR and actor.role_key not in (
            "administrator",
            "system",
        ):
            raise Forbidden("only administrators grant the administrator role")
        return role

    # -- groups ----------------------------------------------------------------------------

    async def create_group(self, actor: Actor, data: GroupCreate) -> dict[str, Any]:
        actor.require(Permission.GROUPS_MANAGE)
        if actor.scope is not Scope.ALL:
            raise Forbidden("creating groups needs company-wide scope")
        async with self._uow() as uow:
            group = Group(tenant_id=actor.tenant_id, name=data.name, description=data.description)
            uow.session.add(group)
            await uow.flush_unique(f"group {data.name!r} exists", "group-name-taken")
            audit.record(
                uow.session,
                actor,
                "group.create",
                "group",
                group.id,
                after=_group_fields(group),
                at=uow.clock.now(),
            )
            uow.emit(
                ev.GroupCreated(
                    tenant_id=actor.tenant_id,
                    at=uow.clock.now(),
                    actor_id=actor.user_id,
                    group_id=group.id,
                    name=group.name,
                    description=group.description,
                    audience=Audience(group_ids=frozenset({group.id})),
                )
            )
            await uow.commit()
            return _group_public(group, [])

    async def list_groups(
        self, actor: Actor, *, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        actor.require(Permission.GROUPS_VIEW)
        async with self._uow() as uow:
            stmt = access_groups(actor)
            total = await uow.session.scalar(select(func.count()).select_from(stmt.subquery()))
            groups = list(
                await uow.session.scalars(stmt.order_by(Group.name).limit(limit).offset(offset))
            )
            members = await _members_of(uow, actor, [g.id for g in groups])
            return [_group_public(g, members.get(g.id, [])) for g in groups], int(total or 0)

    async def get_group(self, actor: Actor, group_id: str) -> dict[str, Any]:
        actor.require(Permission.GROUPS_VIEW)
        async with self._uow() as uow:
            group = await get_one(uow.session, access_groups(actor), Group.id, group_id, "group")
            members = await _members_of(uow, actor, [group.id])
            return _group_public(group, members.get(group.id, []))

    async def update_group(self, actor: Actor, group_id: str, data: GroupUpdate) -> dict[str, Any]:
        actor.require(Permission.GROUPS_MANAGE)
        async with self._uow() as uow:
            group = await get_one(uow.session, access_groups(actor), Group.id, group_id, "group")
            before = _group_fields(group)
            for key, value in data.model_dump(exclude_none=True).items():
                setattr(group, key, value)
            await uow.flush_unique(f"group {group.name!r} exists", "group-name-taken")
            audit.record(
                uow.session,
                actor,
                "group.update",
                "group",
                group.id,
                before=before,
                after=_group_fields(group),
                at=uow.clock.now(),
            )
            uow.emit(
                ev.GroupUpdated(
                    tenant_id=actor.tenant_id,
                    at=uow.clock.now(),
                    actor_id=actor.user_id,
                    group_id=group.id,
                    name=group.name,
                    description=group.description,
                    audience=Audience(group_ids=frozenset({group.id})),
                )
            )
            await uow.commit()
            members = await _members_of(uow, actor, [group.id])
            return _group_public(group, members.get(group.id, []))

    async def delete_group(self, actor: Actor, group_id: str) -> None:
        actor.require(Permission.GROUPS_MANAGE)
        if actor.scope is not Scope.ALL:
            raise Forbidden("deleting groups needs company-wide scope")
        async with self._uow() as uow:
            group = await get_one(uow.session, access_groups(actor), Group.id, group_id, "group")
            # The members' records change too: whoever sees them (through any group) must hear.
            members = select(GroupMember.user_id).where(GroupMember.group_id == group.id)
            rows = (
                await uow.session.execute(
                    select(GroupMember.user_id, GroupMember.group_id).where(
                        GroupMember.user_id.in_(members)
                    )
                )
            ).all()
            audience = Audience(
                user_ids=frozenset(u for u, _ in rows),
                group_ids=frozenset({group.id, *(g for _, g in rows)}),
            )
            audit.record(
                uow.session,
                actor,
                "group.delete",
                "group",
                group.id,
                before=_group_fields(group),
                at=uow.clock.now(),
            )
            await uow.session.execute(delete(GroupMember).where(GroupMember.group_id == group.id))
            await uow.session.delete(group)
            uow.emit(
                ev.GroupDeleted(
                    tenant_id=actor.tenant_id,
                    at=uow.clock.now(),
                    actor_id=actor.user_id,
                    group_id=group.id,
                    audience=audience,
                )
            )
            await uow.commit()

    async def add_member(self, actor: Actor, group_id: str, user_id: str) -> dict[str, Any]:
        return await self._change_membership(actor, group_id, user_id, add=True)

    async def remove_member(self, actor: Actor, group_id: str, user_id: str) -> dict[str, Any]:
        return await self._change_membership(actor, group_id, user_id, add=False)

    async def _change_membership(
        self, actor: Actor, group_id: str, user_id: str, *, add: bool
    ) -> dict[str, Any]:
        actor.require(Permission.GROUPS_MANAGE)
        async with self._uow() as uow:
            group = await get_one(uow.session, access_groups(actor), Group.id, group_id, "group")
            user = await get_one(uow.session, access_users(actor), User.id, user_id, "user")
            existing = await uow.session.get(GroupMember, (group.id, user.id))
            before = await _record(uow, user)
            if add and existing is None:
                uow.session.add(
                    GroupMember(tenant_id=actor.tenant_id, group_id=group.id, user_id=user.id)
                )
            elif not add and existing is not None:
                await uow.session.delete(existing)
            else:
                return _public(user, before)
            await uow.session.flush()
            record = await _record(uow, user)
            audience = _user_audience(before if not add else record)
            action = "group.member_add" if add else "group.member_remove"
            audit.record(
                uow.session,
                actor,
                action,
                "group",
                group.id,
                after={"user_id": user.id},
                at=uow.clock.now(),
            )
            event_cls = ev.GroupMemberAdded if add else ev.GroupMemberRemoved
            if user.is_active:
                uow.emit(
                    event_cls(
                        tenant_id=actor.tenant_id,
                        at=uow.clock.now(),
                        actor_id=actor.user_id,
                        group_id=group.id,
                        user_id=user.id,
                        employee=record,
                        audience=audience,
                    )
                )
            await uow.commit()
            return _public(user, record)

    # -- roles -----------------------------------------------------------------------------

    async def list_roles(self, actor: Actor) -> list[dict[str, Any]]:
        async with self._uow() as uow:
            roles = await uow.session.scalars(access_roles(actor).order_by(Role.key))
            return [role_public(r) for r in roles]

    async def create_role(self, actor: Actor, data: RoleCreate) -> dict[str, Any]:
        actor.require(Permission.ROLES_MANAGE)
        perms = _permissions(data.permissions)
        if data.key in {r.value for r in BuiltinRole}:
            raise Conflict(f"{data.key!r} is a built-in role", error_id="role-key-taken")
        async with self._uow() as uow:
            role = Role(
                tenant_id=actor.tenant_id,
                key=data.key,
                name=data.name,
                builtin=False,
                scope=data.scope,
                permissions=sorted(perms),
            )
            uow.session.add(role)
            await uow.flush_unique(f"role {data.key!r} exists", "role-key-taken")
            audit.record(
                uow.session,
                actor,
                "role.create",
                "role",
                role.id,
                after=role_public(role),
                at=uow.clock.now(),
            )
            uow.emit(
                ev.RoleChanged(
                    tenant_id=actor.tenant_id,
                    at=uow.clock.now(),
                    actor_id=actor.user_id,
                    role_id=role.id,
                    key=role.key,
                )
            )
            await uow.commit()
            return role_public(role)

    async def update_role(self, actor: Actor, role_id: str, data: RoleUpdate) -> dict[str, Any]:
        actor.require(Permission.ROLES_MANAGE)
        async with self._uow() as uow:
            role = await get_one(uow.session, access_roles(actor), Role.id, role_id, "role")
            if role.builtin:
                raise Conflict("built-in roles cannot be changed", error_id="role-builtin")
            before = role_public(role)
            if data.permissions is not None:
                role.permissions = sorted(_permissions(data.permissions))
            if data.name is not None:
                role.name = data.name
            if data.scope is not None:
                role.scope = data.scope
            audit.record(
                uow.session,
                actor,
                "role.update",
                "role",
                role.id,
                before=before,
                after=role_public(role),
                at=uow.clock.now(),
            )
            uow.emit(
                ev.RoleChanged(
                    tenant_id=actor.tenant_id,
                    at=uow.clock.now(),
                    actor_id=actor.user_id,
                    role_id=role.id,
                    key=role.key,
                )
            )
            await uow.commit()
            return role_public(role)

    async def delete_role(self, actor: Actor, role_id: str) -> None:
        actor.require(Permission.ROLES_MANAGE)
        async with self._uow() as uow:
            role = await get_one(uow.session, access_roles(actor), Role.id, role_id, "role")
            if role.builtin:
                raise Conflict("built-in roles cannot be deleted", error_id="role-builtin")
            in_use = await uow.session.scalar(select(func.count()).where(User.role_id == role.id))
            if in_use:
                raise Conflict(f"{in_use} employee(s) still have this role", error_id="role-in-use")
            audit.record(
                uow.session,
                actor,
                "role.delete",
                "role",
                role.id,
                before=role_public(role),
                at=uow.clock.now(),
            )
            await uow.session.delete(role)
            uow.emit(
                ev.RoleChanged(
                    tenant_id=actor.tenant_id,
                    at=uow.clock.now(),
                    actor_id=actor.user_id,
                    role_id=role.id,
                    key=role.key,
                    deleted=True,
                )
            )
            await uow.commit()


def role_rights(role: Role) -> tuple[Scope, frozenset[Permission]]:
    if role.builtin:
        _label, scope, perms = BUILTIN_ROLES[BuiltinRole(role.key)]
        return scope, perms
    return Scope(role.scope), frozenset(Permission(p) for p in role.permissions)


def role_public(role: Role) -> dict[str, Any]:
    scope, perms = role_rights(role)
    return {
        "id": role.id,
        "key": role.key,
        "name": role.name,
        "builtin": role.builtin,
        "scope": scope.value,
        "permissions": sorted(perms),
    }


def _permissions(values: list[str]) -> frozenset[Permission]:
    try:
        return parse_permissions(values)
    except ValueError as exc:
        raise InvalidInput(str(exc), error_id="unknown-permission") from exc


def _check_timezone(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput(f"unknown time zone {name!r}", error_id="unknown-timezone") from exc


async def _record(uow: UnitOfWork, user: User) -> dict[str, Any]:
    group_ids = await uow.session.scalars(
        select(GroupMember.group_id).where(GroupMember.user_id == user.id)
    )
    role_key = await uow.session.scalar(select(Role.key).where(Role.id == user.role_id))
    return employee_record(user, role_key or "?", list(group_ids))


async def _members_of(uow: UnitOfWork, actor: Actor, group_ids: list[str]) -> dict[str, list[str]]:
    """Members of the given groups, limited to the employees the actor may see."""
    visible = access_users(actor).where(User.is_active.is_(True)).with_only_columns(User.id)
    rows = await uow.session.execute(
        select(GroupMember.group_id, GroupMember.user_id).where(
            GroupMember.group_id.in_(group_ids), GroupMember.user_id.in_(visible)
        )
    )
    result: dict[str, list[str]] = {}
    for group_id, user_id in rows:
        result.setdefault(group_id, []).append(user_id)
    return {k: sorted(v) for k, v in result.items()}


def _user_audience(record: dict[str, Any]) -> Audience:
    return Audience(user_ids=frozenset({record["id"]}), group_ids=frozenset(record["group_ids"]))


def _public(user: User, record: dict[str, Any]) -> dict[str, Any]:
    return {
        **record,
        "email": user.email,
        "is_active": user.is_active,
        "created_at": user.created_at,
    }


def _group_fields(group: Group) -> dict[str, Any]:
    return {"name": group.name, "description": group.description}


def _group_public(group: Group, member_ids: list[str]) -> dict[str, Any]:
    return {
        "id": group.id,
        "name": group.name,
        "description": group.description,
        "member_ids": member_ids,
        "created_at": group.created_at,
    }
