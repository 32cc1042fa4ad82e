"""Request dependencies: the platform, the acting user, and the access guard of each route.

Every route under /api/v1 declares its access with `guarded(...)` or `public()`; the isolation
test enumerates the routes and fails on any that declares neither, so a new route cannot ship
unprotected by accident.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Query, Request
from starlette.requests import HTTPConnection

from pomelo.auth.access import Actor
from pomelo.auth.credentials import API_KEY_PREFIX
from pomelo.auth.permissions import Permission
from pomelo.core.errors import Unauthenticated

if TYPE_CHECKING:
    from pomelo.app import Platform

SESSION_COOKIE = "pomelo_session"


def get_platform(conn: HTTPConnection) -> Platform:
    platform: Platform = conn.app.state.platform
    return platform


async def resolve_actor(conn: HTTPConnection, platform: Platform) -> Actor:
    """From `Authorization: Bearer pk_…` (integrations) or the session cookie (browsers)."""
    cached: Actor | None = getattr(conn.state, "actor", None)
    if cached is not None:
        return cached
    auth = conn.headers.get("authorization", "")
    scheme, _, credential = auth.partition(" ")
    if scheme.lower() == "bearer" and credential.startswith(API_KEY_PREFIX):
        actor = await platform.credentials.actor_from_api_key(credential.strip())
    elif token := conn.cookies.get(SESSION_COOKIE):
        actor = await platform.credentials.actor_from_session(token)
    else:
        raise Unauthenticated("log in or send an API key", error_id="not-authenticated")
    conn.state.actor = actor
    return actor


async def current_actor(request: Request) -> Actor:
    return await resolve_actor(request, get_platform(request))


PlatformDep = Annotated["Platform", Depends(get_platform)]
ActorDep = Annotated[Actor, Depends(current_actor)]


class Guard:
    """A route's access rule: a permission, or None for 'any logged-in employee'."""

    def __init__(self, permission: Permission | None) -> None:
        self.permission = permission

    async def __call__(self, request: Request) -> None:
        actor = await current_actor(request)
        if self.permission is not None:
            actor.require(self.permission)


def guarded(permission: Permission | None = None) -> dict[str, Any]:
    """Route keyword arguments declaring the access rule (see module docstring).

    The rule is also published in the OpenAPI document as `x-pomelo-access`, which is what the
    isolation test walks.
    """
    access = permission.value if permission is not None else "authenticated"
    return {
        "dependencies": [Depends(Guard(permission))],
        "openapi_extra": {"x-pomelo-access": access},
    }


def public() -> dict[str, Any]:
    return {"openapi_extra": {"x-pomelo-access": "public"}}


class Paging:
    def __init__(
        self,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> None:
        self.limit = limit
        self.offset = offset


PagingDep = Annotated[Paging, Depends()]
