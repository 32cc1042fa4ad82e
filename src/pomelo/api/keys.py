"""Routes of API keys (integrations' credentials)."""

from __future__ import annotations

from fastapi import APIRouter

from pomelo.api.deps import ActorDep, PlatformDep, guarded
from pomelo.api.problems import problem_responses
from pomelo.auth.permissions import Permission
from pomelo.auth.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic

router = APIRouter(
    prefix="/api/v1", tags=["api-keys"], responses=problem_responses(400, 401, 403, 404, 413, 422)
)


@router.get("/api-keys", **guarded(Permission.API_KEYS_MANAGE))
async def list_keys(actor: ActorDep, platform: PlatformDep) -> list[ApiKeyPublic]:
    return [ApiKeyPublic(**k) for k in await platform.credentials.list_api_keys(actor)]


@router.post("/api-keys", status_code=201, **guarded(Permission.API_KEYS_MANAGE))
async def create_key(body: ApiKeyCreate, actor: ActorDep, platform: PlatformDep) -> ApiKeyCreated:
    """The secret is in this response only; store it now."""
    return ApiKeyCreated(**await platform.credentials.create_api_key(actor, body.name))


@router.delete("/api-keys/{key_id}", **guarded(Permission.API_KEYS_MANAGE))
async def revoke_key(key_id: str, actor: ActorDep, platform: PlatformDep) -> ApiKeyPublic:
    return ApiKeyPublic(**await platform.credentials.revoke_api_key(actor, key_id))
