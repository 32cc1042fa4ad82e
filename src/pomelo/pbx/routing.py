"""Who is calling, and where the call goes.

Two questions, answered in order for every new INVITE:

1. :meth:`Router.identify` — *who*: a trusted trunk delivering a call to one of the tenant
   DIDs it serves, or an extension that proves its identity with digest (RFC 3261 §22.3,
   407 challenge). The challenge depends only on the tenant's realm, so an unknown
   extension and a known one get byte-for-byte the same kind of answer.
2. :meth:`Router.route` — *where*: an extension's phones, an employee's or a group's
   extensions (the only step that may read the database, from the call's own task), or an
   outside number through the tenant's trunk.

Lookups go through the in-memory :class:`~pomelo.pbx.sipcache.SipConfigCache` (typed here as
the :class:`ConfigView` protocol, so tests can hand in a small fake).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import unquote

import phonenumbers
from sqlalchemy import select

from pomelo.auth.models import GroupMember
from pomelo.pbx.ivr import ScenarioError, parse_menu
from pomelo.pbx.models import Scenario, SipAccount
from pomelo.pbx.sipcache import AccountInfo, NumberInfo, TenantInfo, TrunkInfo
from pomelo.sip.digest import (
    DigestAlgorithm,
    DigestChallenger,
    DigestCredentials,
    DigestError,
    DigestOutcome,
    NonceTracker,
)
from pomelo.sip.message import SipRequest
from pomelo.sip.uri import SipUri, TelUri, Uri
from pomelo.storage.db import Database

__all__ = [
    "CallDirectory",
    "ConfigView",
    "DbCallDirectory",
    "ExtensionOrigin",
    "Origin",
    "OutboundTarget",
    "Refusal",
    "Route",
    "Router",
    "TrunkOrigin",
    "dial_string",
    "normalize_dialled",
    "provisional_route",
]

log = logging.getLogger(__name__)

_VISUAL = re.compile(r"[\s\-.()]")
_OUTSIDE = re.compile(r"\+[0-9]{3,20}|[0-9]{9,20}")
"""What an extension may dial out: ``+`` and digits, or more digits than an extension has
(extensions are 2–8 digits), so a mistyped extension is a 404, not a call to the provider."""


class ConfigView(Protocol):
    """The part of :class:`~pomelo.pbx.sipcache.SipConfigCache` routing reads."""

    def tenant_for_domain(self, domain: str) -> TenantInfo | None: ...

    def tenant(self, tenant_id: str) -> TenantInfo | None: ...

    def account(self, tenant_id: str, extension: str) -> AccountInfo | None: ...

    def account_by_id(self, account_id: str) -> AccountInfo | None: ...

    def number(self, e164: str) -> NumberInfo | None: ...

    def trunks_of(self, tenant_id: str) -> list[TrunkInfo]: ...

    def numbers_of(self, tenant_id: str) -> list[NumberInfo]: ...

    def trunk(self, trunk_id: str) -> TrunkInfo | None: ...

    def trunks_for_source(self, ip: str) -> list[TrunkInfo]: ...


class CallDirectory(Protocol):
    """Employee and group facts routing and event audiences need (from the database)."""

    async def accounts_of_user(self, tenant_id: str, user_id: str) -> list[str]: ...

    async def accounts_of_group(self, tenant_id: str, group_id: str) -> list[str]: ...

    async def groups_of_users(
        self, tenant_id: str, user_ids: Iterable[str]
    ) -> dict[str, frozenset[str]]: ...

    async def scenario(self, tenant_id: str, scenario_id: str) -> dict[str, Any] | None: ...


class DbCallDirectory:
    """:class:`CallDirectory` over the tables (one short read each, off the hot path)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def accounts_of_user(self, tenant_id: str, user_id: str) -> list[str]:
        async with self._db.session() as session:
            rows = await session.scalars(
                select(SipAccount.id)
                .where(SipAccount.tenant_id == tenant_id, SipAccount.user_id == user_id)
                .order_by(SipAccount.extension)
            )
            return list(rows)

    async def scenario(self, tenant_id: str, scenario_id: str) -> dict[str, Any] | None:
        async with self._db.session() as session:
            row = await session.scalar(
                select(Scenario.definition).where(
                    Scenario.tenant_id == tenant_id, Scenario.id == scenario_id
                )
            )
            return dict(row) if row is not None else None

    async def accounts_of_group(self, tenant_id: str, group_id: str) -> list[str]:
        async with self._db.session() as session:
            rows = await session.scalars(
                select(SipAccount.id)
                .join(GroupMember, GroupMember.user_id == SipAccount.user_id)
                .where(
                    GroupMember.tenant_id == tenant_id,
                    GroupMember.group_id == group_id,
                    SipAccount.tenant_id == tenant_id,
                )
                .order_by(SipAccount.extension)
            )
            return list(rows)

    async def groups_of_users(
        self, tenant_id: str, user_ids: Iterable[str]
    ) -> dict[str, frozenset[str]]:
        wanted = sorted(set(user_ids))
        found: dict[str, set[str]] = {user_id: set() for user_id in wanted}
        if not wanted:
            return {}
        async with self._db.session() as session:
            rows = await session.execute(
                select(GroupMember.user_id, GroupMember.group_id).where(
                    GroupMember.tenant_id == tenant_id, GroupMember.user_id.in_(wanted)
                )
            )
            for user_id, group_id in rows:
                found[user_id].add(group_id)
        return {user_id: frozenset(groups) for user_id, groups in found.items()}


# -- decisions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refusal:
    """Answer the INVITE with this final response instead of placing a call."""

    status: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    cause: str = "no-route"


@dataclass(frozen=True, slots=True)
class ExtensionOrigin:
    tenant: TenantInfo
    account: AccountInfo


@dataclass(frozen=True, slots=True)
class TrunkOrigin:
    tenant: TenantInfo
    trunk: TrunkInfo
    number: NumberInfo


Origin = ExtensionOrigin | TrunkOrigin


@dataclass(frozen=True, slots=True)
class OutboundTarget:
    trunk: TrunkInfo
    dial: str
    """The number as the provider wants it (digits stripped, prefix added)."""
    caller_id: str
    caller_name: str | None


@dataclass(frozen=True, slots=True)
class Route:
    """Where a call goes and what its record says about both ends."""

    tenant_id: str
    domain: str
    direction: str  # internal | inbound | outbound
    from_number: str
    to_number: str
    from_name: str | None = None
    did: str | None = None
    caller: AccountInfo | None = None
    callee: AccountInfo | None = None
    callee_user_id: str | None = None
    group_id: str | None = None
    trunk: TrunkInfo | None = None
    accounts: tuple[AccountInfo, ...] = ()
    """Ring every contact of each of these (parallel forking)."""
    outbound: OutboundTarget | None = None
    menu: Any = None
    conference: str | None = None
    """A conference room the PBX joins the caller to."""
    """A :class:`~pomelo.pbx.ivr.MenuPlan` the PBX runs before anyone rings."""


# -- numbers --------------------------------------------------------------------------------


def normalize_dialled(text: str | None) -> str | None:
    """E.164 for a dialled or presented number (``+7 495…``, ``7495…``, ``007495…``), or
    ``None`` when it is not a plausible international number. Never raises."""
    if not text:
        return None
    digits = _VISUAL.sub("", unquote(text))
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    elif not digits.startswith("+"):
        digits = "+" + digits
    if not re.fullmatch(r"\+[0-9]{6,16}", digits):
        return None
    try:
        parsed = phonenumbers.parse(digits, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def dial_string(trunk: TrunkInfo, dialled: str) -> str:
    """Apply the trunk's rewriting: drop ``strip_digits`` leading characters, add ``prefix``."""
    return trunk.prefix + dialled[trunk.strip_digits :]


def uri_user(uri: Uri) -> str | None:
    if isinstance(uri, SipUri):
        return unquote(uri.user) if uri.user else None
    if isinstance(uri, TelUri):
        return uri.number
    return None


def uri_host(uri: Uri) -> str | None:
    return uri.host if isinstance(uri, SipUri) else None


# -- the router -----------------------------------------------------------------------------


class Router:
    """Identification and routing of new calls; stateless apart from digest challengers."""

    def __init__(
        self,
        cache: ConfigView,
        directory: CallDirectory,
        *,
        secret: bytes,
        algorithms: Sequence[DigestAlgorithm] = (DigestAlgorithm.SHA256, DigestAlgorithm.MD5),
        nonce_clock: Callable[[], float] = time.time,
    ) -> None:
        self._cache = cache
        self._directory = directory
        self._secret = secret
        self._algorithms = tuple(algorithms)
        self._nonce_clock = nonce_clock
        self._tracker = NonceTracker()
        self._challengers: dict[str, DigestChallenger] = {}

    @property
    def directory(self) -> CallDirectory:
        return self._directory

    @property
    def cache(self) -> ConfigView:
        return self._cache

    def tenant(self, tenant_id: str) -> TenantInfo | None:
        return self._cache.tenant(tenant_id)

    # -- who ----------------------------------------------------------------------------

    def identify(self, request: SipRequest, source_ip: str) -> Origin | Refusal:
        """The origin of a new INVITE, or the answer to send instead (407, 403, 404)."""
        if not request.has_header("Proxy-Authorization"):
            trunk_origin = self._trunk_origin(request, source_ip)
            if trunk_origin is not None:
                return trunk_origin
        tenant = self._tenant_of(request)
        if tenant is None:
            return Refusal(404, cause="unknown-domain")
        return self._authenticate(tenant, request, source_ip)

    def _trunk_origin(self, request: SipRequest, source_ip: str) -> TrunkOrigin | None:
        trunks = self._cache.trunks_for_source(source_ip)
        if not trunks:
            return None
        number = self.did_of(request)
        if number is None:
            return None
        serving = [t for t in trunks if t.tenant_id == number.tenant_id]
        tenant = self._cache.tenant(number.tenant_id)
        if not serving or tenant is None:
            return None
        preferred = [t for t in serving if t.id == number.trunk_id]
        return TrunkOrigin(tenant, (preferred or serving)[0], number)

    def did_of(self, request: SipRequest) -> NumberInfo | None:
        """The DID a trunk call is for: the Request-URI user, else the To user (providers
        differ on where they put it)."""
        for uri in (request.uri, request.to.uri):
            e164 = normalize_dialled(uri_user(uri))
            number = self._cache.number(e164) if e164 else None
            if number is not None:
                return number
        return None

    def is_trusted_source(self, source_ip: str) -> bool:
        return bool(self._cache.trunks_for_source(source_ip))

    def _tenant_of(self, request: SipRequest) -> TenantInfo | None:
        for uri in (request.from_.uri, request.uri, request.to.uri):
            host = uri_host(uri)
            tenant = self._cache.tenant_for_domain(host) if host else None
            if tenant is not None:
                return tenant
        return None

    def challenger(self, realm: str) -> DigestChallenger:
        challenger = self._challengers.get(realm)
        if challenger is None:
            challenger = self._challengers[realm] = DigestChallenger(
                realm,
                self._secret,
                algorithms=self._algorithms,
                clock=self._nonce_clock,
                tracker=self._tracker,
            )
        return challenger

    def _authenticate(
        self, tenant: TenantInfo, request: SipRequest, source_ip: str
    ) -> ExtensionOrigin | Refusal:
        challenger = self.challenger(tenant.sip_domain)
        stale = False
        for value in request.header_values("Proxy-Authorization"):
            try:
                credentials = DigestCredentials.parse(value)
            except DigestError:
                continue
            if credentials.realm != challenger.realm:
                continue
            account = self._cache.account(tenant.id, credentials.username)
            outcome = challenger.verify("INVITE", credentials, _ha1(account, credentials))
            if outcome is DigestOutcome.OK and account is not None:
                return self._admit(tenant, account, source_ip)
            if outcome is DigestOutcome.BAD_RESPONSE:
                return Refusal(403, cause="auth-failed")
            stale = stale or outcome is DigestOutcome.STALE
        headers = tuple(("Proxy-Authenticate", h) for h in challenger.challenge(stale=stale))
        return Refusal(407, headers=headers, cause="challenge")

    @staticmethod
    def _admit(
        tenant: TenantInfo, account: AccountInfo, source_ip: str
    ) -> ExtensionOrigin | Refusal:
        if not account.enabled:
            return Refusal(403, cause="account-disabled")
        if account.allowed_networks and not _in_networks(source_ip, account):
            return Refusal(403, cause="network-not-allowed")
        return ExtensionOrigin(tenant, account)

    # -- where --------------------------------------------------------------------------

    async def route(self, origin: Origin, request: SipRequest) -> Route | Refusal:
        if isinstance(origin, TrunkOrigin):
            return await self._route_inbound(origin, request)
        dialled = uri_user(request.uri)
        return await self.route_dialled(origin.tenant, origin.account, dialled)

    async def _route_inbound(self, origin: TrunkOrigin, request: SipRequest) -> Route | Refusal:
        caller = uri_user(request.from_.uri) or "anonymous"
        base = Route(
            tenant_id=origin.tenant.id,
            domain=origin.tenant.sip_domain,
            direction="inbound",
            from_number=normalize_dialled(caller) or caller,
            from_name=request.from_.display_name,
            to_number=origin.number.number,
            did=origin.number.number,
            trunk=origin.trunk,
        )
        return await self._route_number(base, origin.number)

    async def route_dialled(
        self, tenant: TenantInfo, caller: AccountInfo | None, dialled: str | None
    ) -> Route | Refusal:
        """Route what an extension dialled (also used for the target of a transfer)."""
        if not dialled:
            return Refusal(404, cause="no-such-number")
        base = Route(
            tenant_id=tenant.id,
            domain=tenant.sip_domain,
            direction="internal",
            from_number=caller.extension if caller else "anonymous",
            from_name=caller.caller_id_name if caller else None,
            to_number=dialled,
            caller=caller,
        )
        account = self._cache.account(tenant.id, dialled)
        if account is not None:
            return _to_account(base, account)
        e164 = normalize_dialled(dialled)
        number = self._cache.number(e164) if e164 else None
        if number is not None and number.tenant_id == tenant.id:
            return await self._route_number(replace(base, did=number.number), number)
        if _OUTSIDE.fullmatch(dialled):
            return self._route_outbound(base, caller, dialled)
        return Refusal(404, cause="no-such-extension")

    def _route_outbound(
        self, base: Route, caller: AccountInfo | None, dialled: str
    ) -> Route | Refusal:
        own = self._own_number(base.tenant_id, caller)
        if own is not None:  # the employee's own line: its trunk, its number shown
            trunk, caller_id = own
        else:
            trunks = sorted(self._cache.trunks_of(base.tenant_id), key=lambda t: (t.name, t.id))
            if not trunks:
                return Refusal(503, "No Trunk Available", cause="no-trunk")
            trunk = trunks[0]
            caller_id = trunk.caller_id or (caller.extension if caller else "anonymous")
        target = OutboundTarget(
            trunk=trunk,
            dial=dial_string(trunk, dialled),
            caller_id=caller_id,
            caller_name=caller.caller_id_name if caller else None,
        )
        return replace(base, direction="outbound", to_number=dialled, trunk=trunk, outbound=target)

    def _own_number(
        self, tenant_id: str, caller: AccountInfo | None
    ) -> tuple[TrunkInfo, str] | None:
        """A number routed straight to the caller (his extension, or him as an employee)
        whose trunk is usable: outside calls leave through that trunk showing that number,
        so the person called back reaches the same employee."""
        if caller is None:
            return None
        for number in sorted(self._cache.numbers_of(tenant_id), key=lambda n: n.number):
            mine = (
                number.route_kind == "extension" and number.route_target == caller.extension
            ) or (
                number.route_kind == "employee"
                and caller.user_id is not None
                and number.route_target == caller.user_id
            )
            if not mine or number.trunk_id is None:
                continue
            trunk = self._cache.trunk(number.trunk_id)
            if trunk is not None and trunk.enabled and trunk.tenant_id == tenant_id:
                return trunk, number.number
        return None

    async def _route_number(self, base: Route, number: NumberInfo) -> Route | Refusal:
        kind, target = number.route_kind, number.route_target
        if kind == "extension" and target:
            account = self._cache.account(number.tenant_id, target)
            if account is None:
                return Refusal(404, cause="no-such-extension")
            return _to_account(base, account)
        if kind == "employee" and target:
            ids = await self._directory.accounts_of_user(number.tenant_id, target)
            return self._to_accounts(replace(base, callee_user_id=target), ids)
        if kind == "group" and target:
            ids = await self._directory.accounts_of_group(number.tenant_id, target)
            return self._to_accounts(replace(base, group_id=target), ids)
        if kind == "scenario" and target:
            definition = await self._directory.scenario(number.tenant_id, target)
            if definition is None:
                return Refusal(404, cause="no-such-scenario")
            try:
                plan = parse_menu(definition)
            except ScenarioError as exc:
                log.error("number %s: scenario %s is invalid: %s", number.number, target, exc)
                return Refusal(500, "Scenario Invalid", cause="scenario-invalid")
            return replace(base, menu=plan)
        if kind == "conference" and target:
            return replace(base, conference=target)
        if kind == "hangup":
            return Refusal(480, cause="hangup-route")
        return Refusal(404, cause="no-route")

    async def to_group(self, base: Route, group_id: str) -> Route | Refusal:
        """``base`` sent on to a group's phones (after a menu choice)."""
        ids = await self._directory.accounts_of_group(base.tenant_id, group_id)
        return self._to_accounts(replace(base, group_id=group_id, menu=None), ids)

    def _to_accounts(self, base: Route, account_ids: Iterable[str]) -> Route | Refusal:
        accounts = [self._cache.account_by_id(i) for i in account_ids]
        enabled = tuple(a for a in accounts if a is not None and a.enabled)
        if not enabled:
            return Refusal(480, cause="nobody-to-ring")
        if len(enabled) == 1:
            return _to_account(base, enabled[0])
        return replace(base, accounts=enabled)


def _to_account(base: Route, account: AccountInfo) -> Route | Refusal:
    if not account.enabled:
        return Refusal(480, cause="account-disabled")
    return replace(
        base,
        accounts=(account,),
        callee=account,
        callee_user_id=account.user_id or base.callee_user_id,
    )


def _ha1(account: AccountInfo | None, credentials: DigestCredentials) -> str | None:
    if account is None:
        return None
    if credentials.algorithm.base is DigestAlgorithm.SHA256:
        return account.ha1_sha256
    return account.ha1_md5


def _in_networks(ip: str, account: AccountInfo) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in account.allowed_networks)


def provisional_route(origin: Origin, request: SipRequest) -> Route:
    """What the record says before (or instead of) routing: who called, what was dialled."""
    tenant = origin.tenant
    dialled = uri_user(request.uri) or ""
    if isinstance(origin, TrunkOrigin):
        caller = uri_user(request.from_.uri) or "anonymous"
        return Route(
            tenant_id=tenant.id,
            domain=tenant.sip_domain,
            direction="inbound",
            from_number=caller,
            from_name=request.from_.display_name,
            to_number=origin.number.number,
            did=origin.number.number,
            trunk=origin.trunk,
        )
    return Route(
        tenant_id=tenant.id,
        domain=tenant.sip_domain,
        direction="internal",
        from_number=origin.account.extension,
        from_name=origin.account.caller_id_name,
        to_number=dialled,
        caller=origin.account,
    )
