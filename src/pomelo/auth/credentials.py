"""Logins, browser sessions and API keys: turning a credential into an `Actor`.

Session tokens and API key secrets are random 256-bit values; only their SHA-256 is stored, which
is enough for high-entropy secrets and keeps per-request checks cheap (argon2 is for passwords).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update

from pomelo.audit import service as audit
from pomelo.auth.access import Actor, access_api_keys, get_one
from pomelo.auth.models import ApiKey, AuthSession, GroupMember, Role, Tenant, User
from pomelo.auth.passwords import PasswordHasher
from pomelo.auth.permissions import Permission
from pomelo.auth.service import role_rights
from pomelo.core.errors import Unauthenticated
from pomelo.core.ids import new_token
from pomelo.storage.uow import UnitOfWork

API_KEY_PREFIX = "pk_"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class CredentialService:
    def __init__(
        self, uow: Callable[[], UnitOfWork], hasher: PasswordHasher, session_ttl: timedelta
    ) -> None:
        self._uow = uow
        self._hasher = hasher
        self._ttl = session_ttl

    async def login(self, tenant_slug: str, username: str, password: str) -> tuple[str, Actor]:
        """Same answer, and the same work, for an unknown tenant, user or wrong password."""
        async with self._uow() as uow:
            row = await uow.session.execute(
                select(User)
                .join(Tenant, Tenant.id == User.tenant_id)
                .where(Tenant.slug == tenant_slug, Tenant.is_active.is_(True))
                .where(User.username == username, User.is_active.is_(True))
            )
            user = row.scalar_one_or_none()
        ok = await self._hasher.verify(user.password_hash if user else None, password)
        if user is None or not ok:
            raise Unauthenticated("wrong tenant, username or password", error_id="bad-credentials")
        token = new_token()
        async with self._uow() as uow:
            now = uow.clock.now()
            uow.session.add(
                AuthSession(
                    token_hash=token_hash(token),
                    tenant_id=user.tenant_id,
                    user_id=user.id,
                    created_at=now,
                    expires_at=now + self._ttl,
                )
            )
            await uow.session.execute(
                delete(AuthSession).where(
                    AuthSession.user_id == user.id, AuthSession.expires_at < now
                )
            )
            actor = await _actor_for(uow, user, via="session")
            await uow.commit()
        return token, actor

    async def logout(self, token: str) -> None:
        async with self._uow() as uow:
            await uow.session.execute(
                delete(AuthSession).where(AuthSession.token_hash == token_hash(token))
            )
            await uow.commit()

    async def actor_from_session(self, token: str) -> Actor:
        async with self._uow() as uow:
            session = await uow.session.get(AuthSession, token_hash(token))
            if session is None or session.expires_at <= uow.clock.now():
                raise Unauthenticated("session expired; log in again", error_id="session-expired")
            user = await uow.session.get(User, session.user_id)
            return await _active_actor(uow, user, via="session")

    async def actor_from_api_key(self, key: str) -> Actor:
        key_id, _, secret = key.removeprefix(API_KEY_PREFIX).partition("_")
        async with self._uow() as uow:
            api_key = await uow.session.get(ApiKey, key_id) if len(key_id) == 32 else None
            valid = (
                api_key is not None
                and api_key.revoked_at is None
                and hmac.compare_digest(api_key.secret_hash, token_hash(secret))
            )
            if not valid or api_key is None:
                raise Unauthenticated("invalid or revoked API key", error_id="bad-api-key")
            user = await uow.session.get(User, api_key.user_id)
            actor = await _active_actor(uow, user, via="api_key")
            await uow.session.execute(
                update(ApiKey).where(ApiKey.id == api_key.id).values(last_used_at=uow.clock.now())
            )
            await uow.commit()
            return actor

    async def actor_for_user(self, user_id: str) -> Actor:
        """A fresh actor (rights and groups re-read), e.g. after the stream saw them change."""
        async with self._uow() as uow:
            return await _active_actor(uow, await uow.session.get(User, user_id), via="session")

    async def create_api_key(self, actor: Actor, name: str) -> dict[str, Any]:
        actor.require(Permission.API_KEYS_MANAGE)
        if actor.user_id is None:
            raise Unauthenticated("API keys belong to an employee", error_id="no-user")
        secret = new_token()
        async with self._uow() as uow:
            key = ApiKey(
                tenant_id=actor.tenant_id,
                user_id=actor.user_id,
                name=name,
                secret_hash=token_hash(secret),
            )
            uow.session.add(key)
            await uow.session.flush()
            audit.record(
                uow.session,
                actor,
                "api_key.create",
                "api_key",
                key.id,
                after={"name": name},
                at=uow.clock.now(),
            )
            await uow.commit()
            return {**api_key_public(key), "secret": f"{API_KEY_PREFIX}{key.id}_{secret}"}

    async def list_api_keys(self, actor: Actor) -> list[dict[str, Any]]:
        actor.require(Permission.API_KEYS_MANAGE)
        async with self._uow() as uow:
            keys = await uow.session.scalars(access_api_keys(actor).order_by(ApiKey.created_at))
            return [api_key_public(k) for k in keys]

    async def revoke_api_key(self, actor: Actor, key_id: str) -> dict[str, Any]:
        actor.require(Permission.API_KEYS_MANAGE)
        async with self._uow() as uow:
            key = await get_one(uow.session, access_api_keys(actor), ApiKey.id, key_id, "api-key")
            if key.revoked_at is None:
                key.revoked_at = uow.clock.now()
                audit.record(
                    uow.session,
                    actor,
                    "api_key.revoke",
                    "api_key",
                    key.id,
                    before={"name": key.name},
                    at=uow.clock.now(),
                )
            await uow.commit()
            return api_key_public(key)


def api_key_public(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "user_id": key.user_id,
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "revoked_at": key.revoked_at,
    }


async def _active_actor(uow: UnitOfWork, user: User | None, *, via: str) -> Actor:
    if user is None or not user.is_active:
        raise Unauthenticated("the account is disabled", error_id="account-disabled")
    tenant = await uow.session.get(Tenant, user.tenant_id)
    if tenant is None or not tenant.is_active:
        raise Unauthenticated("the account is disabled", error_id="account-disabled")
    return await _actor_for(uow, user, via=via)


async def _actor_for(uow: UnitOfWork, user: User, *, via: str) -> Actor:
    role = await uow.session.get(Role, user.role_id)
    assert role is not None
    scope, perms = role_rights(role)
    group_ids = await uow.session.scalars(
        select(GroupMember.group_id).where(GroupMember.user_id == user.id)
    )
    return Actor(
        tenant_id=user.tenant_id,
        user_id=user.id,
        name=user.username,
        role_key=role.key,
        scope=scope,
        permissions=perms,
        group_ids=frozenset(group_ids),
        via=via,
    )
