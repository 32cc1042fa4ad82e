"""The only code that writes SIP accounts, trunks and numbers (tenant-scoped, audited)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import phonenumbers
from sqlalchemy import Select, func, select

from pomelo.audit import service as audit
from pomelo.auth.access import Actor, access_users, get_one
from pomelo.auth.models import Group, Tenant, User
from pomelo.auth.permissions import Permission
from pomelo.core.errors import InvalidInput
from pomelo.core.secrets import SecretBox, strong_password
from pomelo.pbx.events import PbxConfigChanged
from pomelo.pbx.models import PhoneNumber, Registration, Scenario, SipAccount, Trunk
from pomelo.pbx.schemas import (
    NumberCreate,
    NumberUpdate,
    SipAccountCreate,
    SipAccountUpdate,
    TrunkCreate,
    TrunkUpdate,
)
from pomelo.sip.digest import DigestAlgorithm, ha1
from pomelo.storage.uow import UnitOfWork


def access_sip_accounts(actor: Actor) -> Select[SipAccount]:
    actor.require(Permission.PBX_MANAGE)
    return select(SipAccount).where(SipAccount.tenant_id == actor.tenant_id)


def access_trunks(actor: Actor) -> Select[Trunk]:
    actor.require(Permission.PBX_MANAGE)
    return select(Trunk).where(Trunk.tenant_id == actor.tenant_id)


def access_numbers(actor: Actor) -> Select[PhoneNumber]:
    actor.require(Permission.PBX_MANAGE)
    return select(PhoneNumber).where(PhoneNumber.tenant_id == actor.tenant_id)


class PbxConfigService:
    def __init__(self, uow: Callable[[], UnitOfWork], box: SecretBox, *, demo_mode: bool) -> None:
        self._uow = uow
        self._box = box
        self._demo_mode = demo_mode

    # -- SIP accounts ----------------------------------------------------------------------

    async def create_account(self, actor: Actor, data: SipAccountCreate) -> dict[str, Any]:
        created = await self._create_accounts(actor, [data])
        return created[0]

    async def bulk_create_accounts(
        self, actor: Actor, first_extension: str, count: int
    ) -> list[dict[str, Any]]:
        start = int(first_extension)
        width = len(first_extension)
        extensions = [str(start + i).zfill(width) for i in range(count)]
        if len(extensions[-1]) > 8:
            raise InvalidInput("extensions would exceed 8 digits", error_id="extension-overflow")
        return await self._create_accounts(
            actor, [SipAccountCreate(extension=e) for e in extensions]
        )

    async def _create_accounts(
        self, actor: Actor, items: list[SipAccountCreate]
    ) -> list[dict[str, Any]]:
        actor.require(Permission.PBX_MANAGE)
        for item in items:
            _check_cidrs(item.allowed_cidrs)
        async with self._uow() as uow:
            realm = await _realm(uow, actor.tenant_id)
            created = []
            for item in items:
                if item.user_id is not None:
                    await get_one(uow.session, access_users(actor), User.id, item.user_id, "user")
                password = item.password or strong_password()
                self._check_sip_password(password, item.password is not None)
                account = SipAccount(
                    tenant_id=actor.tenant_id,
                    extension=item.extension,
                    user_id=item.user_id,
                    realm=realm,
                    caller_id_name=item.caller_id_name,
                    allowed_cidrs=item.allowed_cidrs,
                    allowed_countries=[c.upper() for c in item.allowed_countries],
                    max_contacts=item.max_contacts,
                    **_ha1s(item.extension, realm, password),
                )
                uow.session.add(account)
                created.append((account, password))
            await uow.flush_unique("an extension in this range already exists", "extension-taken")
            for account, _ in created:
                _audit_and_emit(
                    uow,
                    actor,
                    "sip_account",
                    account.id,
                    "create",
                    after=account_public(account, realm, 0),
                )
            await uow.commit()
            return [{**account_public(a, realm, 0), "password": p} for a, p in created]

    def _check_sip_password(self, password: str, chosen: bool) -> None:
        if chosen and not self._demo_mode and len(password) < 12:
            raise InvalidInput(
                "SIP passwords need at least 12 characters (or leave it out to "
                "get a generated one)",
                error_id="weak-password",
            )

    async def list_accounts(
        self, actor: Actor, *, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        async with self._uow() as uow:
            stmt = access_sip_accounts(actor)
            total = await uow.session.scalar(select(func.count()).select_from(stmt.subquery()))
            rows = list(
                await uow.session.scalars(
                    stmt.order_by(SipAccount.extension).limit(limit).offset(offset)
                )
            )
            realm = await _realm(uow, actor.tenant_id)
            counts = await _contact_counts(uow, [a.id for a in rows])
            items = [account_public(a, realm, counts.get(a.id, 0)) for a in rows]
            return items, int(total or 0)

    async def my_accounts(self, actor: Actor) -> list[dict[str, Any]]:
        """An employee's own extensions (no right needed: they are his phones' settings)."""
        async with self._uow() as uow:
            rows = list(
                await uow.session.scalars(
                    select(SipAccount)
                    .where(
                        SipAccount.tenant_id == actor.tenant_id, SipAccount.user_id == actor.user_id
                    )
                    .order_by(SipAccount.extension)
                )
            )
            realm = await _realm(uow, actor.tenant_id)
            counts = await _contact_counts(uow, [a.id for a in rows])
            return [account_public(a, realm, counts.get(a.id, 0)) for a in rows]

    async def get_account(self, actor: Actor, account_id: str) -> dict[str, Any]:
        async with self._uow() as uow:
            account = await get_one(
                uow.session, access_sip_accounts(actor), SipAccount.id, account_id, "sip-account"
            )
            counts = await _contact_counts(uow, [account.id])
            return account_public(
                account, await _realm(uow, actor.tenant_id), counts.get(account.id, 0)
            )

    async def update_account(
        self, actor: Actor, account_id: str, data: SipAccountUpdate
    ) -> dict[str, Any]:
        async with self._uow() as uow:
            account = await get_one(
                uow.session, access_sip_accounts(actor), SipAccount.id, account_id, "sip-account"
            )
            realm = await _realm(uow, actor.tenant_id)
            before = account_public(account, realm, 0)
            changes = data.model_dump(exclude_unset=True)
            if changes.get("user_id") is not None:
                await get_one(uow.session, access_users(actor), User.id, changes["user_id"], "user")
            if "allowed_cidrs" in changes:
                _check_cidrs(changes["allowed_cidrs"] or [])
            if changes.get("allowed_countries") is not None:
                changes["allowed_countries"] = [c.upper() for c in changes["allowed_countries"]]
            for key, value in changes.items():
                if value is not None or key in ("user_id", "caller_id_name"):
                    setattr(account, key, value if value is not None else _empty(key))
            _audit_and_emit(
                uow,
                actor,
                "sip_account",
                account.id,
                "update",
                before=before,
                after=account_public(account, realm, 0),
            )
            await uow.commit()
            return account_public(account, realm, 0)

    async def reset_password(
        self, actor: Actor, account_id: str, password: str | None = None
    ) -> dict[str, Any]:
        """A new generated password (or the given one: demo seeding, imports)."""
        if password is not None:
            self._check_sip_password(password, chosen=True)
        async with self._uow() as uow:
            account = await get_one(
                uow.session, access_sip_accounts(actor), SipAccount.id, account_id, "sip-account"
            )
            realm = await _realm(uow, actor.tenant_id)
            password = password or strong_password()
            for key, value in _ha1s(account.extension, realm, password).items():
                setattr(account, key, value)
            account.realm = realm
            _audit_and_emit(
                uow,
                actor,
                "sip_account",
                account.id,
                "password_reset",
                after={"extension": account.extension},
            )
            await uow.commit()
            return {**account_public(account, realm, 0), "password": password}

    async def delete_account(self, actor: Actor, account_id: str) -> None:
        async with self._uow() as uow:
            account = await get_one(
                uow.session, access_sip_accounts(actor), SipAccount.id, account_id, "sip-account"
            )
            before = account_public(account, account.realm, 0)
            await uow.session.delete(account)
            _audit_and_emit(uow, actor, "sip_account", account.id, "delete", before=before)
            await uow.commit()

    # -- trunks ----------------------------------------------------------------------------

    async def create_trunk(self, actor: Actor, data: TrunkCreate) -> dict[str, Any]:
        actor.require(Permission.PBX_MANAGE)
        _check_cidrs(data.inbound_cidrs)
        if data.kind == "register" and not (data.username and data.password):
            raise InvalidInput(
                "a registering trunk needs username and password",
                error_id="trunk-credentials-missing",
            )
        async with self._uow() as uow:
            values = data.model_dump(exclude={"password"})
            trunk = Trunk(
                tenant_id=actor.tenant_id,
                **values,
                password_sealed=self._box.seal(data.password) if data.password else None,
            )
            uow.session.add(trunk)
            await uow.flush_unique(f"trunk {data.name!r} exists", "trunk-name-taken")
            _audit_and_emit(uow, actor, "trunk", trunk.id, "create", after=trunk_public(trunk))
            await uow.commit()
            return trunk_public(trunk)

    async def list_trunks(self, actor: Actor) -> list[dict[str, Any]]:
        async with self._uow() as uow:
            rows = await uow.session.scalars(access_trunks(actor).order_by(Trunk.name))
            return [trunk_public(t) for t in rows]

    async def get_trunk(self, actor: Actor, trunk_id: str) -> dict[str, Any]:
        async with self._uow() as uow:
            return trunk_public(
                await get_one(uow.session, access_trunks(actor), Trunk.id, trunk_id, "trunk")
            )

    async def update_trunk(self, actor: Actor, trunk_id: str, data: TrunkUpdate) -> dict[str, Any]:
        async with self._uow() as uow:
            trunk = await get_one(uow.session, access_trunks(actor), Trunk.id, trunk_id, "trunk")
            before = trunk_public(trunk)
            changes = data.model_dump(exclude_unset=True, exclude={"password"})
            if changes.get("inbound_cidrs") is not None:
                _check_cidrs(changes["inbound_cidrs"])
            for key, value in changes.items():
                if value is not None or key in ("username", "caller_id"):
                    setattr(trunk, key, value)
            if data.password is not None:
                trunk.password_sealed = self._box.seal(data.password)
            if trunk.kind == "register" and not (trunk.username and trunk.password_sealed):
                raise InvalidInput(
                    "a registering trunk needs username and password",
                    error_id="trunk-credentials-missing",
                )
            _audit_and_emit(
                uow, actor, "trunk", trunk.id, "update", before=before, after=trunk_public(trunk)
            )
            await uow.commit()
            return trunk_public(trunk)

    async def delete_trunk(self, actor: Actor, trunk_id: str) -> None:
        async with self._uow() as uow:
            trunk = await get_one(uow.session, access_trunks(actor), Trunk.id, trunk_id, "trunk")
            before = trunk_public(trunk)
            await uow.session.delete(trunk)
            _audit_and_emit(uow, actor, "trunk", trunk.id, "delete", before=before)
            await uow.commit()

    def trunk_password(self, trunk: Trunk) -> str | None:
        """For the registration client only; never exposed through the API."""
        return self._box.open(trunk.password_sealed) if trunk.password_sealed else None

    # -- numbers ---------------------------------------------------------------------------

    async def create_number(self, actor: Actor, data: NumberCreate) -> dict[str, Any]:
        actor.require(Permission.PBX_MANAGE)
        number = normalize_number(data.number)
        async with self._uow() as uow:
            await self._check_number_refs(
                uow, actor, data.trunk_id, data.route_kind, data.route_target
            )
            row = PhoneNumber(
                tenant_id=actor.tenant_id,
                number=number,
                trunk_id=data.trunk_id,
                route_kind=data.route_kind,
                route_target=data.route_target,
                description=data.description,
            )
            uow.session.add(row)
            await uow.flush_unique(f"{number} is already in use", "number-taken")
            _audit_and_emit(uow, actor, "number", row.id, "create", after=number_public(row))
            await uow.commit()
            return number_public(row)

    async def list_numbers(
        self, actor: Actor, *, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        async with self._uow() as uow:
            stmt = access_numbers(actor)
            total = await uow.session.scalar(select(func.count()).select_from(stmt.subquery()))
            rows = await uow.session.scalars(
                stmt.order_by(PhoneNumber.number).limit(limit).offset(offset)
            )
            return [number_public(n) for n in rows], int(total or 0)

    async def get_number(self, actor: Actor, number_id: str) -> dict[str, Any]:
        async with self._uow() as uow:
            return number_public(
                await get_one(
                    uow.session, access_numbers(actor), PhoneNumber.id, number_id, "number"
                )
            )

    async def update_number(
        self, actor: Actor, number_id: str, data: NumberUpdate
    ) -> dict[str, Any]:
        async with self._uow() as uow:
            row = await get_one(
                uow.session, access_numbers(actor), PhoneNumber.id, number_id, "number"
            )
            before = number_public(row)
            changes = data.model_dump(exclude_unset=True)
            for key, value in changes.items():
                if value is not None or key in ("trunk_id", "route_target"):
                    setattr(row, key, value)
            await self._check_number_refs(
                uow, actor, row.trunk_id, row.route_kind, row.route_target
            )
            _audit_and_emit(
                uow, actor, "number", row.id, "update", before=before, after=number_public(row)
            )
            await uow.commit()
            return number_public(row)

    async def delete_number(self, actor: Actor, number_id: str) -> None:
        async with self._uow() as uow:
            row = await get_one(
                uow.session, access_numbers(actor), PhoneNumber.id, number_id, "number"
            )
            before = number_public(row)
            await uow.session.delete(row)
            _audit_and_emit(uow, actor, "number", row.id, "delete", before=before)
            await uow.commit()

    async def _check_number_refs(
        self, uow: UnitOfWork, actor: Actor, trunk_id: str | None, kind: str, target: str | None
    ) -> None:
        if trunk_id is not None:
            await get_one(uow.session, access_trunks(actor), Trunk.id, trunk_id, "trunk")
        if kind == "hangup":
            return
        if not target:
            raise InvalidInput(f"route {kind!r} needs a route_target", error_id="route-target")
        lookups: dict[str, tuple[Select[Any], Any, str]] = {
            "employee": (access_users(actor), User.id, "user"),
            "group": (select(Group).where(Group.tenant_id == actor.tenant_id), Group.id, "group"),
            "extension": (access_sip_accounts(actor), SipAccount.extension, "sip-account"),
            "scenario": (
                select(Scenario).where(Scenario.tenant_id == actor.tenant_id),
                Scenario.id,
                "scenario",
            ),
        }
        if kind in lookups:
            stmt, column, what = lookups[kind]
            await get_one(uow.session, stmt, column, target, what)


def normalize_number(text: str) -> str:
    """E.164, so the same DID written two ways is one number."""
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidInput(
            f"{text!r} is not a phone number in international format (+…)",
            error_id="invalid-number",
        ) from exc
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidInput(f"{text!r} is not a possible phone number", error_id="invalid-number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def account_public(account: SipAccount, domain: str, contacts: int) -> dict[str, Any]:
    return {
        "id": account.id,
        "extension": account.extension,
        "user_id": account.user_id,
        "domain": domain,
        "enabled": account.enabled,
        "caller_id_name": account.caller_id_name,
        "allowed_cidrs": list(account.allowed_cidrs),
        "allowed_countries": list(account.allowed_countries),
        "max_contacts": account.max_contacts,
        "registered_contacts": contacts,
        "created_at": account.created_at,
    }


def trunk_public(trunk: Trunk) -> dict[str, Any]:
    return {
        "id": trunk.id,
        "name": trunk.name,
        "kind": trunk.kind,
        "host": trunk.host,
        "port": trunk.port,
        "transport": trunk.transport,
        "inbound_cidrs": list(trunk.inbound_cidrs),
        "username": trunk.username,
        "has_password": trunk.password_sealed is not None,
        "register_expires": trunk.register_expires,
        "caller_id": trunk.caller_id,
        "strip_digits": trunk.strip_digits,
        "prefix": trunk.prefix,
        "enabled": trunk.enabled,
        "created_at": trunk.created_at,
    }


def number_public(row: PhoneNumber) -> dict[str, Any]:
    return {
        "id": row.id,
        "number": row.number,
        "trunk_id": row.trunk_id,
        "route_kind": row.route_kind,
        "route_target": row.route_target,
        "description": row.description,
        "created_at": row.created_at,
    }


def _ha1s(extension: str, realm: str, password: str) -> dict[str, str]:
    return {
        "ha1_md5": ha1(extension, realm, password, DigestAlgorithm.MD5),
        "ha1_sha256": ha1(extension, realm, password, DigestAlgorithm.SHA256),
    }


def _check_cidrs(values: list[str]) -> None:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise InvalidInput(
                f"{value!r} is not an IP address or network", error_id="invalid-cidr"
            ) from exc


def _empty(key: str) -> Any:
    return [] if key in ("allowed_cidrs", "allowed_countries") else None


async def _realm(uow: UnitOfWork, tenant_id: str) -> str:
    tenant = await uow.session.get(Tenant, tenant_id)
    assert tenant is not None
    return tenant.sip_domain or f"{tenant.slug}.sip"


async def _contact_counts(uow: UnitOfWork, account_ids: list[str]) -> dict[str, int]:
    if not account_ids:
        return {}
    rows = await uow.session.execute(
        select(Registration.account_id, func.count())
        .where(Registration.account_id.in_(account_ids), Registration.expires_at > uow.clock.now())
        .group_by(Registration.account_id)
    )
    return {account_id: int(n) for account_id, n in rows}


def _audit_and_emit(
    uow: UnitOfWork,
    actor: Actor,
    object_type: str,
    object_id: str,
    action: str,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    audit.record(
        uow.session,
        actor,
        f"{object_type}.{action}",
        object_type,
        object_id,
        before=_jsonable(before),
        after=_jsonable(after),
        at=uow.clock.now(),
    )
    uow.emit(
        PbxConfigChanged(
            tenant_id=actor.tenant_id,
            at=uow.clock.now(),
            actor_id=actor.user_id,
            object_type=object_type,
            object_id=object_id,
            action=action,
        )
    )


def _jsonable(data: dict[str, Any] | None) -> dict[str, Any] | None:
    if data is None:
        return None
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in data.items()}
