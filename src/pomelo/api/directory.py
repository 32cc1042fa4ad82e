"""Routes of the employee directory: login, tenant, employees, presence, groups, roles."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from pomelo.api.deps import (
    SESSION_COOKIE,
    ActorDep,
    PagingDep,
    PlatformDep,
    guarded,
    public,
)
from pomelo.api.problems import problem_responses
from pomelo.api.schemas import Page
from pomelo.auth.models import Tenant
from pomelo.auth.permissions import Permission
from pomelo.auth.schemas import (
    GroupCreate,
    GroupPublic,
    GroupUpdate,
    LoginRequest,
    Me,
    MemberAdd,
    PresenceUpdate,
    RoleCreate,
    RolePublic,
    RoleUpdate,
    TenantPublic,
    TenantUpdate,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from pomelo.core.errors import NotFound

P = Permission

router = APIRouter(prefix="/api/v1", responses=problem_responses(400, 401, 403, 404, 409, 413, 422))


def tenant_public(t: Tenant) -> TenantPublic:
    return TenantPublic(
        id=t.id, slug=t.slug, name=t.name, timezone=t.timezone, sip_domain=t.sip_domain
    )


@router.post("/auth/login", tags=["auth"], **public())
async def login(body: LoginRequest, response: Response, platform: PlatformDep) -> Me:
    token, actor = await platform.credentials.login(body.tenant, body.username, body.password)
    ttl = timedelta(hours=platform.settings.session_ttl_hours)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(ttl.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=platform.settings.cookie_secure,
        path="/",
    )
    return await _me(platform, actor)


@router.post("/auth/logout", tags=["auth"], status_code=status.HTTP_204_NO_CONTENT, **public())
async def logout(request: Request, response: Response, platform: PlatformDep) -> None:
    """Ends the browser session server-side too, so a copied cookie stops working."""
    if token := request.cookies.get(SESSION_COOKIE):
        await platform.credentials.logout(token)
    response.delete_cookie(SESSION_COOKIE, path="/")


@router.get("/me", tags=["auth"], **guarded())
async def me(actor: ActorDep, platform: PlatformDep) -> Me:
    return await _me(platform, actor)


async def _me(platform: PlatformDep, actor: ActorDep) -> Me:
    if actor.user_id is None:
        raise NotFound("no employee behind this credential")
    user = await platform.directory.get_user(actor, actor.user_id)
    tenant = await platform.directory.get_tenant(actor)
    return Me(
        user=UserPublic(**user),
        tenant=tenant_public(tenant),
        permissions=sorted(actor.permissions),
        scope=actor.scope.value,
    )


@router.put("/me/presence", tags=["auth"], **guarded())
async def set_my_presence(
    body: PresenceUpdate, actor: ActorDep, platform: PlatformDep
) -> UserPublic:
    if actor.user_id is None:
        raise NotFound("no employee behind this credential")
    user = await platform.directory.set_presence(
        actor, actor.user_id, body.presence, body.reason, body.accepts_calls
    )
    return UserPublic(**user)


@router.get("/tenant", tags=["tenant"], **guarded())
async def get_tenant(actor: ActorDep, platform: PlatformDep) -> TenantPublic:
    t = await platform.directory.get_tenant(actor)
    return tenant_public(t)


@router.patch("/tenant", tags=["tenant"], **guarded(P.TENANT_MANAGE))
async def update_tenant(body: TenantUpdate, actor: ActorDep, platform: PlatformDep) -> TenantPublic:
    t = await platform.directory.update_tenant(actor, body)
    return tenant_public(t)


@router.get("/users", tags=["users"], **guarded(P.USERS_VIEW))
async def list_users(
    actor: ActorDep,
    platform: PlatformDep,
    paging: PagingDep,
    q: Annotated[str | None, Query(max_length=100)] = None,
) -> Page[UserPublic]:
    items, total = await platform.directory.list_users(
        actor, limit=paging.limit, offset=paging.offset, query=q
    )
    return Page(
        items=[UserPublic(**i) for i in items],
        total=total,
        limit=paging.limit,
        offset=paging.offset,
    )


@router.post("/users", tags=["users"], status_code=201, **guarded(P.USERS_MANAGE))
async def create_user(body: UserCreate, actor: ActorDep, platform: PlatformDep) -> UserPublic:
    return UserPublic(**await platform.directory.create_user(actor, body))


@router.get("/users/{user_id}", tags=["users"], **guarded(P.USERS_VIEW))
async def get_user(user_id: str, actor: ActorDep, platform: PlatformDep) -> UserPublic:
    return UserPublic(**await platform.directory.get_user(actor, user_id))


@router.patch("/users/{user_id}", tags=["users"], **guarded(P.USERS_MANAGE))
async def update_user(
    user_id: str, body: UserUpdate, actor: ActorDep, platform: PlatformDep
) -> UserPublic:
    return UserPublic(**await platform.directory.update_user(actor, user_id, body))


@router.put("/users/{user_id}/presence", tags=["users"], **guarded(P.USERS_MANAGE))
async def set_presence(
    user_id: str, body: PresenceUpdate, actor: ActorDep, platform: PlatformDep
) -> UserPublic:
    user = await platform.directory.set_presence(
        actor, user_id, body.presence, body.reason, body.accepts_calls
    )
    return UserPublic(**user)


@router.get("/groups", tags=["groups"], **guarded(P.GROUPS_VIEW))
async def list_groups(
    actor: ActorDep, platform: PlatformDep, paging: PagingDep
) -> Page[GroupPublic]:
    items, total = await platform.directory.list_groups(
        actor, limit=paging.limit, offset=paging.offset
    )
    return Page(
        items=[GroupPublic(**i) for i in items],
        total=total,
        limit=paging.limit,
        offset=paging.offset,
    )


@router.post("/groups", tags=["groups"], status_code=201, **guarded(P.GROUPS_MANAGE))
async def create_group(body: GroupCreate, actor: ActorDep, platform: PlatformDep) -> GroupPublic:
    return GroupPublic(**await platform.directory.create_group(actor, body))


@router.get("/groups/{group_id}", tags=["groups"], **guarded(P.GROUPS_VIEW))
async def get_group(group_id: str, actor: ActorDep, platform: PlatformDep) -> GroupPublic:
    return GroupPublic(**await platform.directory.get_group(actor, group_id))


@router.patch("/groups/{group_id}", tags=["groups"], **guarded(P.GROUPS_MANAGE))
async def update_group(
    group_id: str, body: GroupUpdate, actor: ActorDep, platform: PlatformDep
) -> GroupPublic:
    return GroupPublic(**await platform.directory.update_group(actor, group_id, body))


@router.delete("/groups/{group_id}", tags=["groups"], status_code=204, **guarded(P.GROUPS_MANAGE))
async def delete_group(group_id: str, actor: ActorDep, platform: PlatformDep) -> None:
    await platform.directory.delete_group(actor, group_id)


@router.post("/groups/{group_id}/members", tags=["groups"], **guarded(P.GROUPS_MANAGE))
async def add_member(
    group_id: str, body: MemberAdd, actor: ActorDep, platform: PlatformDep
) -> UserPublic:
    return UserPublic(**await platform.directory.add_member(actor, group_id, body.user_id))


@router.delete("/groups/{group_id}/members/{user_id}", tags=["groups"], **guarded(P.GROUPS_MANAGE))
async def remove_member(
    group_id: str, user_id: str, actor: ActorDep, platform: PlatformDep
) -> UserPublic:
    return UserPublic(**await platform.directory.remove_member(actor, group_id, user_id))


@router.get("/roles", tags=["roles"], **guarded(P.USERS_VIEW))
async def list_roles(actor: ActorDep, platform: PlatformDep) -> list[RolePublic]:
    return [RolePublic(**r) for r in await platform.directory.list_roles(actor)]


@router.post("/roles", tags=["roles"], status_code=201, **guarded(P.ROLES_MANAGE))
async def create_role(body: RoleCreate, actor: ActorDep, platform: PlatformDep) -> RolePublic:
    return RolePublic(**await platform.directory.create_role(actor, body))


@router.patch("/roles/{role_id}", tags=["roles"], **guarded(P.ROLES_MANAGE))
async def update_role(
    role_id: str, body: RoleUpdate, actor: ActorDep, platform: PlatformDep
) -> RolePublic:
    return RolePublic(**await platform.directory.update_role(actor, role_id, body))


@router.delete("/roles/{role_id}", tags=["roles"], status_code=204, **guarded(P.ROLES_MANAGE))
async def delete_role(role_id: str, actor: ActorDep, platform: PlatformDep) -> None:
    await platform.directory.delete_role(actor, role_id)
