"""Routes of live calls: what is going on now, and supervision (listen, whisper, barge)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from pomelo.api.deps import ActorDep, PlatformDep, guarded
from pomelo.api.problems import problem_responses
from pomelo.auth.access import Actor
from pomelo.auth.permissions import Permission, Scope
from pomelo.core.errors import Conflict, InvalidInput, NotFound
from pomelo.media.mixer import SupervisorMode
from pomelo.pbx.calls import Call
from pomelo.pbx.supervision import SupervisionError

router = APIRouter(
    prefix="/api/v1", tags=["calls"], responses=problem_responses(400, 401, 403, 404, 409, 422)
)


class SupervisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"mode": "listen"}]})
    mode: Literal["listen", "whisper", "barge"]


async def _visible(platform: Any, actor: Actor, call: Call) -> bool:
    """Company-wide roles see every call; group heads the calls of their groups (offered to
    the group, or with one of its members on it); everyone else only his own calls."""
    if actor.scope is Scope.ALL:
        return True
    users = set(call.audience.user_ids)
    if actor.user_id is not None and actor.user_id in users:
        return True
    if actor.scope is not Scope.GROUP:
        return False
    groups = set(call.audience.group_ids)
    if call.route.group_id:
        groups.add(call.route.group_id)
    if groups & actor.group_ids:
        return True
    directory = platform.calls.router.directory
    members = await directory.groups_of_users(actor.tenant_id, users)
    return any(g & actor.group_ids for g in members.values())


async def _call_of(platform: Any, actor: Actor, call_id: str) -> Call:
    call: Call | None = platform.calls.live_call(actor.tenant_id, call_id)
    if call is None or not await _visible(platform, actor, call):
        raise NotFound(f"no live call {call_id}", error_id="no-such-call")
    return call


def _public(call: Call) -> dict[str, Any]:
    route = call.route
    winner = call.winner.account if call.winner is not None else None
    supervision = call.supervision
    return {
        "id": call.id,
        "state": call.state.value,
        "direction": route.direction,
        "from_number": route.from_number,
        "to_number": route.to_number,
        "did": route.did,
        "group_id": route.group_id,
        "employee_user_id": winner.user_id if winner is not None else None,
        "started_at": call.started_at,
        "answered_at": call.answered_at,
        "supervision": (
            {
                "user_id": supervision.user_id,
                "mode": supervision.mode.value,
                "state": supervision.phase.value,
            }
            if supervision is not None
            else None
        ),
    }


@router.get("/calls/live", **guarded(Permission.CALLS_VIEW))
async def live_calls(platform: PlatformDep, actor: ActorDep) -> dict[str, Any]:
    calls = [
        c
        for c in list(platform.calls.calls.values())
        if c.route.tenant_id == actor.tenant_id and c.live and await _visible(platform, actor, c)
    ]
    calls.sort(key=lambda c: c.started_at)
    return {"items": [_public(c) for c in calls], "total": len(calls)}


@router.get("/calls/live/{call_id}", **guarded(Permission.CALLS_VIEW))
async def live_call(call_id: str, platform: PlatformDep, actor: ActorDep) -> dict[str, Any]:
    return _public(await _call_of(platform, actor, call_id))


@router.put(
    "/calls/live/{call_id}/supervision", status_code=202, **guarded(Permission.CALLS_SUPERVISE)
)
async def supervise(
    call_id: str, body: SupervisionRequest, platform: PlatformDep, actor: ActorDep
) -> dict[str, Any]:
    """Call the supervisor's phones into the call in ``mode``, or switch the mode of the
    supervisor already there (takes effect on the next 20 ms of audio)."""
    if actor.user_id is None:
        raise InvalidInput("supervision needs an employee (with a phone)", error_id="no-user")
    call = await _call_of(platform, actor, call_id)
    try:
        state = await platform.calls.supervise(call, actor.user_id, SupervisorMode(body.mode))
    except SupervisionError as exc:
        raise Conflict(str(exc), error_id=exc.reason) from None
    return {"call_id": call.id, "mode": body.mode, "state": state}


@router.delete(
    "/calls/live/{call_id}/supervision", status_code=204, **guarded(Permission.CALLS_SUPERVISE)
)
async def stop_supervising(call_id: str, platform: PlatformDep, actor: ActorDep) -> Response:
    call = await _call_of(platform, actor, call_id)
    try:
        await platform.calls.supervise(call, actor.user_id or "", None)
    except SupervisionError as exc:
        raise Conflict(str(exc), error_id=exc.reason) from None
    return Response(status_code=204)
