"""In-memory view of the SIP configuration, for the signalling hot path.

REGISTER and INVITE handling must not touch the database per request (thousands per second), so
tenants' SIP domains, accounts (with their HA1s), trunks and numbers are held here, loaded at
start and reloaded whenever a configuration event (`PbxConfigChanged`, `TenantUpdated`) commits.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from pomelo.auth.models import Tenant
from pomelo.core.bus import EventBus, Unsubscribe
from pomelo.core.events import PublishedEvent
from pomelo.pbx.models import PhoneNumber, SipAccount, Trunk
from pomelo.storage.db import Database

log = logging.getLogger(__name__)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_RELOAD_KINDS = frozenset({"PbxConfigChanged", "TenantUpdated"})


@dataclass(frozen=True, slots=True)
class TenantInfo:
    id: str
    slug: str
    sip_domain: str


@dataclass(frozen=True, slots=True)
class AccountInfo:
    id: str
    tenant_id: str
    extension: str
    user_id: str | None
    realm: str
    ha1_md5: str
    ha1_sha256: str
    enabled: bool
    allowed_networks: tuple[IpNetwork, ...]
    allowed_countries: frozenset[str]
    max_contacts: int
    caller_id_name: str | None


@dataclass(frozen=True, slots=True)
class TrunkInfo:
    id: str
    tenant_id: str
    name: str
    kind: str
    host: str
    port: int
    transport: str
    inbound_networks: tuple[IpNetwork, ...]
    username: str | None
    password_sealed: str | None
    register_expires: int
    caller_id: str | None
    strip_digits: int
    prefix: str
    enabled: bool


@dataclass(frozen=True, slots=True)
class NumberInfo:
    id: str
    tenant_id: str
    number: str
    trunk_id: str | None
    route_kind: str
    route_target: str | None


@dataclass(slots=True)
class Snapshot:
    tenants_by_domain: dict[str, TenantInfo]
    tenants: dict[str, TenantInfo]
    accounts: dict[tuple[str, str], AccountInfo]
    accounts_by_id: dict[str, AccountInfo]
    trunks: dict[str, TrunkInfo]
    numbers: dict[str, NumberInfo]


class SipConfigCache:
    def __init__(self, db: Database, bus: EventBus) -> None:
        self._db = db
        self._bus = bus
        self._data = Snapshot({}, {}, {}, {}, {}, {})
        self._unsubscribe: Unsubscribe | None = None
        self._reload_task: asyncio.Task[None] | None = None
        self._dirty = False
        self._listeners: list[Callable[[], None]] = []

    async def start(self) -> None:
        await self.reload()
        self._unsubscribe = self._bus.subscribe(self._on_event)

    def on_reload(self, listener: Callable[[], None]) -> None:
        """Called after every (re)load, e.g. to refresh the trunks' exemption from bans."""
        self._listeners.append(listener)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._reload_task is not None:
            self._reload_task.cancel()

    # -- lookups (hot path, synchronous) ----------------------------------------------------

    def tenant_for_domain(self, domain: str) -> TenantInfo | None:
        return self._data.tenants_by_domain.get(domain.lower())

    def tenant(self, tenant_id: str) -> TenantInfo | None:
        return self._data.tenants.get(tenant_id)

    def tenant_ids(self) -> list[str]:
        return list(self._data.tenants)

    def account(self, tenant_id: str, extension: str) -> AccountInfo | None:
        return self._data.accounts.get((tenant_id, extension))

    def account_by_id(self, account_id: str) -> AccountInfo | None:
        return self._data.accounts_by_id.get(account_id)

    def number(self, e164: str) -> NumberInfo | None:
        return self._data.numbers.get(e164)

    def numbers_of(self, tenant_id: str) -> list[NumberInfo]:
        return [n for n in self._data.numbers.values() if n.tenant_id == tenant_id]

    def trunks_of(self, tenant_id: str) -> list[TrunkInfo]:
        return [t for t in self._data.trunks.values() if t.tenant_id == tenant_id and t.enabled]

    def trunk(self, trunk_id: str) -> TrunkInfo | None:
        return self._data.trunks.get(trunk_id)

    def peer_networks(self) -> list[IpNetwork]:
        """Source networks of every enabled peer trunk (carriers: never rate-limited)."""
        return [
            n
            for t in self._data.trunks.values()
            if t.enabled and t.kind == "peer"
            for n in t.inbound_networks
        ]

    def trunks_for_source(self, ip: str) -> list[TrunkInfo]:
        """Enabled peer trunks whose inbound networks contain `ip` (trusted without auth)."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return []
        return [
            t
            for t in self._data.trunks.values()
            if t.enabled and any(address in net for net in t.inbound_networks)
        ]

    # -- loading ----------------------------------------------------------------------------

    async def _on_event(self, published: PublishedEvent) -> None:
        if published.event.kind not in _RELOAD_KINDS:
            return
        self._dirty = True
        if self._reload_task is None or self._reload_task.done():
            self._reload_task = asyncio.create_task(self._reload_while_dirty())

    async def _reload_while_dirty(self) -> None:
        while self._dirty:
            self._dirty = False
            try:
                await self.reload()
            except Exception:
                log.exception("SIP configuration reload failed; keeping the previous one")

    async def reload(self) -> None:
        async with self._db.session() as session:
            tenants = list(await session.scalars(select(Tenant).where(Tenant.is_active.is_(True))))
            accounts = list(await session.scalars(select(SipAccount)))
            trunks = list(await session.scalars(select(Trunk)))
            numbers = list(await session.scalars(select(PhoneNumber)))
        infos = {
            t.id: TenantInfo(t.id, t.slug, (t.sip_domain or f"{t.slug}.sip").lower())
            for t in tenants
        }
        account_infos = [_account(a) for a in accounts if a.tenant_id in infos]
        self._data = Snapshot(
            tenants_by_domain={i.sip_domain: i for i in infos.values()},
            tenants=infos,
            accounts={(a.tenant_id, a.extension): a for a in account_infos},
            accounts_by_id={a.id: a for a in account_infos},
            trunks={t.id: _trunk(t) for t in trunks if t.tenant_id in infos},
            numbers={n.number: _number(n) for n in numbers if n.tenant_id in infos},
        )
        for listener in self._listeners:
            listener()


def _networks(values: list[str]) -> tuple[IpNetwork, ...]:
    nets = []
    for value in values:
        try:
            nets.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            log.warning("ignoring invalid network %r in SIP configuration", value)
    return tuple(nets)


def _account(a: SipAccount) -> AccountInfo:
    return AccountInfo(
        id=a.id,
        tenant_id=a.tenant_id,
        extension=a.extension,
        user_id=a.user_id,
        realm=a.realm,
        ha1_md5=a.ha1_md5,
        ha1_sha256=a.ha1_sha256,
        enabled=a.enabled,
        allowed_networks=_networks(a.allowed_cidrs),
        allowed_countries=frozenset(a.allowed_countries),
        max_contacts=a.max_contacts,
        caller_id_name=a.caller_id_name,
    )


def _trunk(t: Trunk) -> TrunkInfo:
    return TrunkInfo(
        id=t.id,
        tenant_id=t.tenant_id,
        name=t.name,
        kind=t.kind,
        host=t.host,
        port=t.port,
        transport=t.transport,
        inbound_networks=_networks(t.inbound_cidrs),
        username=t.username,
        password_sealed=t.password_sealed,
        register_expires=t.register_expires,
        caller_id=t.caller_id,
        strip_digits=t.strip_digits,
        prefix=t.prefix,
        enabled=t.enabled,
    )


def _number(n: PhoneNumber) -> NumberInfo:
    return NumberInfo(
        id=n.id,
        tenant_id=n.tenant_id,
        number=n.number,
        trunk_id=n.trunk_id,
        route_kind=n.route_kind,
        route_target=n.route_target,
    )
