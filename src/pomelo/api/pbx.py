"""Routes of the PBX configuration: SIP accounts (extensions), trunks, numbers."""

from __future__ import annotations

import time

from fastapi import APIRouter

from pomelo.api.deps import ActorDep, PagingDep, PlatformDep, guarded
from pomelo.api.problems import problem_responses
from pomelo.api.schemas import Page
from pomelo.auth.permissions import Permission
from pomelo.pbx.schemas import (
    NumberCreate,
    NumberPublic,
    NumberUpdate,
    RegistrationPublic,
    SipAccountBulkCreate,
    SipAccountCreate,
    SipAccountPublic,
    SipAccountUpdate,
    SipAccountWithPassword,
    TrunkCreate,
    TrunkPublic,
    TrunkRegistrationPublic,
    TrunkUpdate,
)

P = Permission.PBX_MANAGE
router = APIRouter(
    prefix="/api/v1", tags=["pbx"], responses=problem_responses(400, 401, 403, 404, 409, 413, 422)
)


@router.get("/sip-accounts", **guarded(P))
async def list_accounts(
    actor: ActorDep, platform: PlatformDep, paging: PagingDep
) -> Page[SipAccountPublic]:
    items, total = await platform.pbx.list_accounts(actor, limit=paging.limit, offset=paging.offset)
    return Page(
        items=[SipAccountPublic(**i) for i in items],
        total=total,
        limit=paging.limit,
        offset=paging.offset,
    )


@router.post("/sip-accounts", status_code=201, **guarded(P))
async def create_account(
    body: SipAccountCreate, actor: ActorDep, platform: PlatformDep
) -> SipAccountWithPassword:
    """The password (given or generated) is in this response only."""
    return SipAccountWithPassword(**await platform.pbx.create_account(actor, body))


@router.post("/sip-accounts/bulk", status_code=201, **guarded(P))
async def bulk_create_accounts(
    body: SipAccountBulkCreate, actor: ActorDep, platform: PlatformDep
) -> list[SipAccountWithPassword]:
    """Consecutive extensions with generated passwords, all or none."""
    created = await platform.pbx.bulk_create_accounts(actor, body.first_extension, body.count)
    return [SipAccountWithPassword(**c) for c in created]


@router.get("/me/sip-accounts", **guarded())
async def my_accounts(actor: ActorDep, platform: PlatformDep) -> list[SipAccountPublic]:
    return [SipAccountPublic(**a) for a in await platform.pbx.my_accounts(actor)]


@router.get("/sip-accounts/{account_id}", **guarded(P))
async def get_account(account_id: str, actor: ActorDep, platform: PlatformDep) -> SipAccountPublic:
    return SipAccountPublic(**await platform.pbx.get_account(actor, account_id))


@router.patch("/sip-accounts/{account_id}", **guarded(P))
async def update_account(
    account_id: str, body: SipAccountUpdate, actor: ActorDep, platform: PlatformDep
) -> SipAccountPublic:
    return SipAccountPublic(**await platform.pbx.update_account(actor, account_id, body))


@router.post("/sip-accounts/{account_id}/password", **guarded(P))
async def reset_password(
    account_id: str, actor: ActorDep, platform: PlatformDep
) -> SipAccountWithPassword:
    return SipAccountWithPassword(**await platform.pbx.reset_password(actor, account_id))


@router.delete("/sip-accounts/{account_id}", status_code=204, **guarded(P))
async def delete_account(account_id: str, actor: ActorDep, platform: PlatformDep) -> None:
    await platform.pbx.delete_account(actor, account_id)


@router.get("/trunks", **guarded(P))
async def list_trunks(actor: ActorDep, platform: PlatformDep) -> list[TrunkPublic]:
    return [TrunkPublic(**t) for t in await platform.pbx.list_trunks(actor)]


@router.post("/trunks", status_code=201, **guarded(P))
async def create_trunk(body: TrunkCreate, actor: ActorDep, platform: PlatformDep) -> TrunkPublic:
    return TrunkPublic(**await platform.pbx.create_trunk(actor, body))


@router.get("/trunks/{trunk_id}", **guarded(P))
async def get_trunk(trunk_id: str, actor: ActorDep, platform: PlatformDep) -> TrunkPublic:
    return TrunkPublic(**await platform.pbx.get_trunk(actor, trunk_id))


@router.patch("/trunks/{trunk_id}", **guarded(P))
async def update_trunk(
    trunk_id: str, body: TrunkUpdate, actor: ActorDep, platform: PlatformDep
) -> TrunkPublic:
    return TrunkPublic(**await platform.pbx.update_trunk(actor, trunk_id, body))


@router.get("/trunks/{trunk_id}/registration", **guarded(P))
async def trunk_registration(
    trunk_id: str, actor: ActorDep, platform: PlatformDep
) -> TrunkRegistrationPublic:
    """Whether Pomelo is registered to the provider of a `register` trunk."""
    trunk = await platform.pbx.get_trunk(actor, trunk_id)
    state = platform.trunk_registrations.states.get(trunk["id"])
    if state is None:
        return TrunkRegistrationPublic(
            status="not-registering", detail="", expires_in=0, attempts=0
        )
    return TrunkRegistrationPublic(
        status=state.status,
        detail=state.detail,
        expires_in=state.expires_in,
        attempts=state.attempts,
    )


@router.delete("/trunks/{trunk_id}", status_code=204, **guarded(P))
async def delete_trunk(trunk_id: str, actor: ActorDep, platform: PlatformDep) -> None:
    await platform.pbx.delete_trunk(actor, trunk_id)


@router.get("/numbers", **guarded(P))
async def list_numbers(
    actor: ActorDep, platform: PlatformDep, paging: PagingDep
) -> Page[NumberPublic]:
    items, total = await platform.pbx.list_numbers(actor, limit=paging.limit, offset=paging.offset)
    return Page(
        items=[NumberPublic(**i) for i in items],
        total=total,
        limit=paging.limit,
        offset=paging.offset,
    )


@router.post("/numbers", status_code=201, **guarded(P))
async def create_number(body: NumberCreate, actor: ActorDep, platform: PlatformDep) -> NumberPublic:
    return NumberPublic(**await platform.pbx.create_number(actor, body))


@router.get("/numbers/{number_id}", **guarded(P))
async def get_number(number_id: str, actor: ActorDep, platform: PlatformDep) -> NumberPublic:
    return NumberPublic(**await platform.pbx.get_number(actor, number_id))


@router.patch("/numbers/{number_id}", **guarded(P))
async def update_number(
    number_id: str, body: NumberUpdate, actor: ActorDep, platform: PlatformDep
) -> NumberPublic:
    return NumberPublic(**await platform.pbx.update_number(actor, number_id, body))


@router.delete("/numbers/{number_id}", status_code=204, **guarded(P))
async def delete_number(number_id: str, actor: ActorDep, platform: PlatformDep) -> None:
    await platform.pbx.delete_number(actor, number_id)


@router.get("/registrations", **guarded(P))
async def list_registrations(actor: ActorDep, platform: PlatformDep) -> list[RegistrationPublic]:
    """Phones registered right now (from the registrar's memory, not the database)."""
    now = time.time()
    found = []
    for account_id, binding, reachable in platform.registrar.bindings():
        account = platform.sip_cache.account_by_id(account_id)
        if account is None or account.tenant_id != actor.tenant_id:
            continue
        found.append(
            RegistrationPublic(
                account_id=account_id,
                extension=account.extension,
                contact=binding.contact,
                transport=binding.transport,
                source=f"{binding.source_host}:{binding.source_port}",
                user_agent=binding.user_agent,
                expires_in=binding.remaining(now),
                reachable=reachable,
            )
        )
    return sorted(found, key=lambda r: (r.extension, r.contact))
