"""Routes of the SIP security layer: active bans (platform-wide) and recent failed logins.

Bans are source addresses dropped for every tenant, so every tenant's PBX administrators may
list and lift them (a banned office NAT silences everybody behind it). Failed attempts name a
tenant's extensions, so each tenant sees only those against its own accounts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from pomelo.api.deps import ActorDep, PagingDep, PlatformDep, guarded
from pomelo.api.problems import problem_responses
from pomelo.api.schemas import Page
from pomelo.auth.permissions import Permission
from pomelo.pbx.security import SipSecurity

P = Permission.PBX_MANAGE
router = APIRouter(
    prefix="/api/v1", tags=["sip-security"], responses=problem_responses(400, 401, 403, 404, 422)
)


class SipBanPublic(BaseModel):
    ip: str = Field(description="Banned source: an IPv4 address or an IPv6 /64.")
    until: datetime
    count: int = Field(description="How many times this source was banned (each ban is longer).")


class SipAuthAttemptPublic(BaseModel):
    at: datetime
    ip: str
    username: str
    tenant_id: str


def get_sip_security(platform: PlatformDep) -> SipSecurity:
    security = getattr(platform, "sip_security", None)
    if not isinstance(security, SipSecurity):
        raise RuntimeError("Platform.sip_security is not wired")
    return security


SecurityDep = Annotated[SipSecurity, Depends(get_sip_security)]
SourceParam = Annotated[
    str, Path(max_length=64, description="An address, or a banned source as listed.")
]


@router.get("/sip/bans", **guarded(P))
async def list_bans(
    actor: ActorDep, security: SecurityDep, paging: PagingDep
) -> Page[SipBanPublic]:
    """Active bans of all sources, soonest to expire first."""
    bans = security.bans(actor)
    window = bans[paging.offset : paging.offset + paging.limit]
    return Page(
        items=[
            SipBanPublic(ip=b.ip, until=datetime.fromtimestamp(b.until, UTC), count=b.count)
            for b in window
        ],
        total=len(bans),
        limit=paging.limit,
        offset=paging.offset,
    )


@router.delete("/sip/bans/{ip:path}", status_code=204, **guarded(P))
async def unban(ip: SourceParam, actor: ActorDep, security: SecurityDep) -> None:
    """Lift a ban early (audited). Repeat offences still escalate."""
    await security.unban(actor, ip)


@router.get("/sip/attempts", **guarded(P))
async def list_attempts(
    actor: ActorDep, security: SecurityDep, paging: PagingDep
) -> Page[SipAuthAttemptPublic]:
    """Recent failed SIP authentications against this tenant's accounts, newest first."""
    attempts = security.attempts(actor)
    window = attempts[paging.offset : paging.offset + paging.limit]
    return Page(
        items=[
            SipAuthAttemptPublic(at=a.at, ip=a.ip, username=a.username, tenant_id=a.tenant_id)
            for a in window
        ],
        total=len(attempts),
        limit=paging.limit,
        offset=paging.offset,
    )
