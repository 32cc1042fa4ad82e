"""The PBX's SIP security layer: the gate in front of the SIP server, and what feeds it.

A public SIP port is scanned within minutes and brute-forced for hours, usually from many
addresses. So the gate does O(1) work per packet with bounded memory (the primitives of
`pomelo.sip.security`), and every request it refuses is dropped *unanswered*: answering a flood
(even with a 403) would turn the PBX into a reflector towards spoofed sources, and tells a
scanner that somebody is listening.

What it decides, in order:

1. `admit(ip, method)` before any parsing work or transaction exists: trusted (exempt)
   networks pass; banned sources are dropped; each source has a token bucket (IPv6 sources
   share one per /64, since one host owns a whole /64).
2. `inspect(request, ip)` after parsing: a known scanner's User-Agent bans the source at once.
3. The registrar and call code report digest outcomes with `auth_failed` / `auth_succeeded`;
   repeated failures ban the source (fail2ban style, escalating for repeat offenders), and a
   new ban becomes a `SipSourceBanned` event for every tenant the source attacked.
4. `account_allows(account, ip)` applies an account's own IP and country allow-lists.

Bans are platform-wide (a source attacking one tenant is dropped for all of them), which is
why every tenant's administrators can list them; recent failed attempts, on the other hand,
name a tenant's accounts and are only shown to that tenant.

Domain events need a database transaction, which must never delay a packet: new bans are
queued (bounded) and committed by one background task in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge

from pomelo.audit import service as audit
from pomelo.auth.access import Actor
from pomelo.auth.permissions import Permission
from pomelo.core.errors import InvalidInput, NotFound
from pomelo.core.events import DomainEvent
from pomelo.pbx.security_events import SipSourceBanned, SipSourceUnbanned
from pomelo.pbx.sipcache import AccountInfo, IpNetwork
from pomelo.sip.errors import SipParseError
from pomelo.sip.message import SipRequest
from pomelo.sip.security import (
    Ban,
    BanList,
    CountryLookup,
    CountryPolicy,
    IpAllowList,
    TokenBucket,
)
from pomelo.sip.uri import SipUri
from pomelo.storage.uow import UnitOfWork

__all__ = [
    "LOCAL_NETWORKS",
    "SCANNER_AGENTS",
    "AuthAttempt",
    "IptoccLookup",
    "SipSecurity",
    "SipSecurityConfig",
]

log = logging.getLogger(__name__)

#: User-Agent fragments of SIP scanners and brute-forcers (matched case-insensitively at the
#: start of a word). Legitimate diagnostics tools (sipsak, SIPp) are deliberately absent.
SCANNER_AGENTS: tuple[str, ...] = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "vaxsipuseragent",
    "sundayddr",
    "pplsip",
    "iwar",
    "sip-scan",
    "sipscan",
    "smap",
    "sivus",
)

#: Addresses that have no country (RFC 1918, CGNAT, loopback, link-local, ULA). A country
#: allow-list never blocks them: they are the office LAN or the host itself, not the Internet.
LOCAL_NETWORKS: tuple[str, ...] = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
)

_USERNAME_LIMIT = 64
_TARGETS_PER_SOURCE = 8
_EVENT_BATCH = 100
_POLICY_CACHE = 4096


@dataclass(frozen=True, slots=True)
class SipSecurityConfig:
    """Limits of the gate; the defaults suit one PBX node facing the Internet.

    `rate`/`burst` are requests per second per source; an office behind one NAT with a
    hundred phones stays far below 50/s (registrations and keep-alives), a scanner does not.
    `max_sources` bounds every per-source table (rate buckets, failure windows, ban records,
    attack targets), so a flood of distinct or spoofed sources costs accuracy, never memory.
    `exempt` networks (carrier trunks, the office) are never limited or banned.
    """

    rate: float = 50.0
    burst: float = 200.0
    max_failures: int = 5
    window: float = 300.0
    ban_time: float = 3600.0
    escalation: float = 2.0
    max_ban_time: float = 7 * 86400.0
    max_sources: int = 100_000
    attempts_per_tenant: int = 200
    max_tenants: int = 10_000
    max_pending_events: int = 10_000
    scanner_agents: tuple[str, ...] = SCANNER_AGENTS
    exempt: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthAttempt:
    """A failed authentication, as the attempts API shows it to the attacked tenant."""

    at: datetime
    ip: str
    username: str
    tenant_id: str


class IptoccLookup:
    """Offline IP → country (`iptocc`: RIR delegation data compiled into the wheel).

    No network access and no data file to keep up to date by hand: the data is refreshed by
    upgrading the package. Private, reserved and unparsable addresses give None.
    """

    def __init__(self) -> None:
        import iptocc  # imported here so that tests injecting a fake lookup do not need it

        self._country_code = iptocc.country_code

    def __call__(self, ip: str, /) -> str | None:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return None
        # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d, which iptocc does not map.
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return self._country_code(str(address))


class _BanList(BanList):
    """`BanList` plus an O(1) read of one source's ban (the base class only lists them all,
    which is O(n log n) and too slow to run once per new ban during a distributed attack)."""

    __slots__ = ()

    def ban_of(self, ip: str) -> Ban | None:
        offences = self._bans.get(self._key(ip))
        if offences is None or offences.until <= self._clock():
            return None
        return Ban(self.source(ip), offences.until, offences.count)


class SipSecurity:
    """The SIP gate of one PBX node (implements `pomelo.pbx.server.SipGate`).

    Not thread-safe: one instance per event loop. `uow` is needed for ban events and for the
    audited unban; without it (pure tests) events are not emitted.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        uow: Callable[[], UnitOfWork] | None = None,
        *,
        config: SipSecurityConfig | None = None,
        countries: CountryLookup | None = None,
        tenant_of_domain: Callable[[str], str | None] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config = config or SipSecurityConfig()
        self._uow = uow
        self._clock = clock
        self._tenant_of_domain = tenant_of_domain
        self._countries: CountryLookup | None = countries
        self._bans = _BanList(
            max_failures=config.max_failures,
            window=config.window,
            ban_time=config.ban_time,
            escalation=config.escalation,
            max_ban_time=config.max_ban_time,
            max_tracked=config.max_sources,
            max_bans=config.max_sources,
            clock=clock,
        )
        self._rate: TokenBucket[str | int] = TokenBucket(
            config.rate, config.burst, max_keys=config.max_sources, clock=monotonic
        )
        self._exempt: IpAllowList | None = None
        self.set_exempt(config.exempt)
        self._scanner = _scanner_pattern(config.scanner_agents)
        self._local = IpAllowList(LOCAL_NETWORKS)
        self._network_policies: dict[tuple[IpNetwork, ...], IpAllowList] = {}
        self._country_policies: dict[frozenset[str], CountryPolicy | None] = {}
        #: Tenants each source attacked recently (tenant id → last attempt), for ban events.
        self._targets: OrderedDict[str, dict[str, float]] = OrderedDict()
        self._attempts: OrderedDict[str, deque[AuthAttempt]] = OrderedDict()
        self._outbox: deque[DomainEvent] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._log_budget: TokenBucket[str] = TokenBucket(1.0, 20.0, clock=monotonic)
        self._unlogged_bans = 0
        self._init_metrics(registry)

    def _init_metrics(self, registry: CollectorRegistry) -> None:
        dropped = Counter(
            "pomelo_sip_requests_dropped_total",
            "SIP requests dropped unanswered by the security gate",
            ["reason"],
            registry=registry,
        )
        self._dropped_rate = dropped.labels("rate")
        self._dropped_ban = dropped.labels("ban")
        self._dropped_scanner = dropped.labels("scanner")
        self._dropped_invalid = dropped.labels("invalid")
        failures = Counter(
            "pomelo_sip_auth_failures_total",
            "SIP authentication failures (target: a known tenant, or unknown)",
            ["target"],
            registry=registry,
        )
        self._failures_tenant = failures.labels("tenant")
        self._failures_unknown = failures.labels("unknown")
        self._bans_total = Counter(
            "pomelo_sip_bans_total", "SIP sources banned", ["reason"], registry=registry
        )
        active = Gauge("pomelo_sip_bans_active", "SIP sources banned now", registry=registry)
        active.set_function(lambda: len(self._bans.active_bans()))
        records = Gauge(
            "pomelo_sip_security_records",
            "Records the SIP gate holds (rate buckets, failures, bans, attempts)",
            registry=registry,
        )
        records.set_function(self.records)
        self._events_lost = Counter(
            "pomelo_sip_security_events_lost_total",
            "Ban events not recorded (queue full or commit failed)",
            registry=registry,
        )

    # -- the gate (hot path) --------------------------------------------------------------

    def admit(self, ip: str, method: str) -> bool:
        """Whether to handle a request at all; False means drop it without an answer."""
        if self._exempt is not None and self._exempt.allows(ip):
            return True
        try:
            banned = self._bans.is_banned(ip)
        except ValueError:
            self._dropped_invalid.inc()
            return False
        if banned:
            self._dropped_ban.inc()
            return False
        if not self._rate.allow(_rate_key(ip)):
            self._dropped_rate.inc()
            return False
        return True

    def suspicious(self, request: SipRequest) -> str | None:
        """The scanner signature a request carries (its User-Agent), or None. No side effect."""
        if self._scanner is None:
            return None
        agent = request.header("user-agent")
        if agent is None:
            return None
        found = self._scanner.search(agent)
        return None if found is None else found.group(0).lower()

    def inspect(self, request: SipRequest, ip: str) -> bool:
        """Whether a parsed request may proceed; a scanner's request bans its source at once.

        Called by the server after `admit` and before a transaction exists, so the scanner's
        first request is already left unanswered.
        """
        if self.suspicious(request) is None:
            return True
        if self._exempt is not None and self._exempt.allows(ip):
            return True
        self._dropped_scanner.inc()
        try:
            already = self._bans.is_banned(ip)
        except ValueError:
            return False
        if not already:
            for _ in range(self.config.max_failures):
                if self._bans.record_failure(ip):
                    break
            tenant = self._tenant_of_request(request)
            self._banned(ip, "scanner", () if tenant is None else (tenant,))
        return False

    def records(self) -> int:
        """Records held in every table (memory monitoring: bounded whatever the traffic).

        Deliberately not `__len__`: an empty gate must not be falsy (`gate or OpenGate()`).
        """
        attempts = sum(len(ring) for ring in self._attempts.values())
        return len(self._rate) + len(self._bans) + len(self._targets) + attempts

    def is_banned(self, ip: str) -> bool:
        try:
            return self._bans.is_banned(ip)
        except ValueError:
            return False

    def set_exempt(self, cidrs: Iterable[str | IpNetwork]) -> None:
        """Networks never limited or banned (carriers' signalling ranges, the office).

        Call again whenever trunks change; an empty list exempts nothing.
        """
        allow = IpAllowList(cidrs)
        self._exempt = allow if len(allow) else None

    # -- authentication outcomes ------------------------------------------------------------

    def auth_failed(self, ip: str, tenant_id: str | None, username: str) -> None:
        """Count a failed digest authentication; enough of them ban the source.

        Call it for a wrong response to a challenge, or credentials for an unknown or disabled
        account: not for the first, unauthenticated request that merely gets the challenge,
        nor for a stale nonce. `tenant_id` is the attacked tenant (from the account or the
        domain), None when the domain is nobody's. `is_banned(ip)` tells the outcome.
        """
        now = self._clock()
        if tenant_id is None:
            self._failures_unknown.inc()
        else:
            self._failures_tenant.inc()
            self._remember(AuthAttempt(_at(now), ip, _clip(username), tenant_id))
        if self._exempt is not None and self._exempt.allows(ip):
            return
        try:
            source = self._bans.source(ip)
            if self._bans.is_banned(ip):
                return
        except ValueError:
            return
        if tenant_id is not None:
            self._note_target(source, tenant_id, now)
        if not self._bans.record_failure(ip):
            return
        targets = self._targets.pop(source, {})
        horizon = now - self.config.window
        self._banned(ip, "auth-failures", [t for t, at in targets.items() if at > horizon])

    def auth_succeeded(self, ip: str) -> None:
        """Forget the source's recent failures; an active ban stays (it is not negotiable)."""
        with contextlib.suppress(ValueError):
            self._bans.record_success(ip)
            self._targets.pop(self._bans.source(ip), None)

    # -- per-account policy -----------------------------------------------------------------

    def account_allows(self, account: AccountInfo, ip: str) -> bool:
        """Whether `ip` may use `account`: it must pass every non-empty allow-list.

        Check it before verifying the password (a disallowed source must not get to guess).
        A source without a country passes a country list only if it is local (LAN, loopback).
        """
        networks = account.allowed_networks
        if networks and not self._network_policy(networks).allows(ip):
            return False
        countries = account.allowed_countries
        if countries:
            policy = self._country_policy(countries)
            return policy is not None and policy.allows(ip)
        return True

    def _network_policy(self, networks: tuple[IpNetwork, ...]) -> IpAllowList:
        policy = self._network_policies.get(networks)
        if policy is None:
            if len(self._network_policies) >= _POLICY_CACHE:
                self._network_policies.clear()
            policy = self._network_policies[networks] = IpAllowList(networks)
        return policy

    def _country_policy(self, countries: frozenset[str]) -> CountryPolicy | None:
        """The policy for a set of countries; None (deny all) when it cannot be applied."""
        if countries in self._country_policies:
            return self._country_policies[countries]
        if len(self._country_policies) >= _POLICY_CACHE:
            self._country_policies.clear()
        policy: CountryPolicy | None = None
        try:
            policy = CountryPolicy(self._lookup(), countries, exempt=self._local)
        except (ValueError, ImportError):
            # Fail closed: an account restricted to some countries must not become open
            # because its list is corrupt or the country database is missing.
            log.exception("cannot apply the country allow-list %s", sorted(countries))
        self._country_policies[countries] = policy
        return policy

    def _lookup(self) -> CountryLookup:
        if self._countries is None:
            self._countries = IptoccLookup()
        return self._countries

    # -- management (the API) ---------------------------------------------------------------

    def bans(self, actor: Actor) -> list[Ban]:
        """Active bans, soonest to expire first (platform-wide: they drop everyone's traffic)."""
        actor.require(Permission.PBX_MANAGE)
        return self._bans.active_bans()

    def attempts(self, actor: Actor) -> list[AuthAttempt]:
        """Recent failed authentications against the actor's tenant only, newest first."""
        actor.require(Permission.PBX_MANAGE)
        ring = self._attempts.get(actor.tenant_id)
        return [] if ring is None else list(reversed(ring))

    async def unban(self, actor: Actor, ip: str) -> Ban:
        """Lift a ban early, audited in the actor's tenant. `ip`: an address or a listed source.

        The offence count is kept, so a source that resumes its attack is banned for longer.
        """
        actor.require(Permission.PBX_MANAGE)
        address = self._parse_source(ip)
        ban = self._bans.ban_of(address)
        if ban is None:
            raise NotFound(f"{ip[:60]!r} is not banned", error_id="no-such-ban")
        if self._uow is None:
            raise RuntimeError("SipSecurity needs a unit of work to unban")
        async with self._uow() as uow:
            now = uow.clock.now()
            audit.record(
                uow.session,
                actor,
                "sip_ban.delete",
                "sip_ban",
                ban.ip,
                before={"ip": ban.ip, "until": _at(ban.until).isoformat(), "count": ban.count},
                at=now,
            )
            uow.emit(
                SipSourceUnbanned(
                    tenant_id=actor.tenant_id, at=now, actor_id=actor.user_id, ip=ban.ip
                )
            )
            await uow.commit()
        self._bans.unban(address)
        self._rate.reset(_rate_key(address))
        log.info("SIP source %s unbanned by %s (tenant %s)", ban.ip, actor.name, actor.tenant_id)
        return ban

    def _parse_source(self, text: str) -> str:
        """An address from an address or a source as listed (`2001:db8::/64`)."""
        invalid = InvalidInput(
            f"not an IP address or a listed source: {text[:60]!r}", error_id="invalid-ip"
        )
        try:
            if "/" not in text:
                return str(ipaddress.ip_address(text))
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise invalid from None
        address = str(network.network_address)
        if self._bans.source(address) != str(network):
            raise invalid  # a /24 would only unban its first address: refuse to mislead
        return address

    # -- events -----------------------------------------------------------------------------

    async def flush(self) -> None:
        """Wait until queued ban events are committed (shutdown, tests)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), 5.0)

    def _banned(self, ip: str, reason: str, tenants: Iterable[str]) -> None:
        ban = self._bans.ban_of(ip)
        if ban is None:  # only if the ban table is smaller than one burst of new bans
            return
        self._bans_total.labels(reason).inc()
        self._log_ban(ban, reason)
        at, until = _at(self._clock()), _at(ban.until)
        for tenant_id in tenants:
            self._queue(
                SipSourceBanned(
                    tenant_id=tenant_id,
                    at=at,
                    ip=ban.ip,
                    until=until,
                    offence=ban.count,
                    reason=reason,
                )
            )

    def _log_ban(self, ban: Ban, reason: str) -> None:
        """Log a ban, but a few per second at most: spoofed sources must not fill the disk."""
        if not self._log_budget.allow("ban"):
            self._unlogged_bans += 1
            return
        more, self._unlogged_bans = self._unlogged_bans, 0
        log.warning(
            "SIP source %s banned until %s (%s, offence %d)%s",
            ban.ip,
            _at(ban.until).isoformat(timespec="seconds"),
            reason,
            ban.count,
            f"; {more} more bans not logged" if more else "",
        )

    def _queue(self, event: DomainEvent) -> None:
        if self._uow is None:
            return
        if len(self._outbox) >= self.config.max_pending_events:
            self._outbox.popleft()
            self._events_lost.inc()
        self._outbox.append(event)
        if self._flusher is None or self._flusher.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (synchronous tests): stays queued for the next one
                return
            self._flusher = loop.create_task(self._flush_outbox())

    async def _flush_outbox(self) -> None:
        assert self._uow is not None
        while self._outbox:
            batch = [self._outbox.popleft() for _ in range(min(_EVENT_BATCH, len(self._outbox)))]
            try:
                async with self._uow() as uow:
                    for event in batch:
                        uow.emit(event)
                    await uow.commit()
            except Exception:
                self._events_lost.inc(len(batch))
                log.exception("could not record %d SIP ban events", len(batch))

    # -- bookkeeping ------------------------------------------------------------------------

    def _remember(self, attempt: AuthAttempt) -> None:
        rings = self._attempts
        ring = rings.get(attempt.tenant_id)
        if ring is None:
            while len(rings) >= self.config.max_tenants:
                rings.popitem(last=False)
            ring = rings[attempt.tenant_id] = deque(maxlen=self.config.attempts_per_tenant)
        else:
            rings.move_to_end(attempt.tenant_id)
        ring.append(attempt)

    def _note_target(self, source: str, tenant_id: str, now: float) -> None:
        targets = self._targets
        tenants = targets.get(source)
        if tenants is None:
            while len(targets) >= self.config.max_sources:
                targets.popitem(last=False)
            tenants = targets[source] = {}
        else:
            targets.move_to_end(source)
        tenants.pop(tenant_id, None)
        tenants[tenant_id] = now
        if len(tenants) > _TARGETS_PER_SOURCE:
            del tenants[next(iter(tenants))]

    def _tenant_of_request(self, request: SipRequest) -> str | None:
        if self._tenant_of_domain is None:
            return None
        try:
            uri = request.uri
        except SipParseError:
            return None
        return self._tenant_of_domain(uri.host) if isinstance(uri, SipUri) else None


def _scanner_pattern(agents: Iterable[str]) -> re.Pattern[str] | None:
    fragments = [re.escape(a.strip()) for a in agents if a.strip()]
    if not fragments:
        return None
    return re.compile(r"(?<![a-z0-9])(?:" + "|".join(fragments) + ")", re.IGNORECASE)


def _rate_key(ip: str) -> str | int:
    """The rate-limit identity of a source: the IPv4 address, or the IPv6 /64 as an integer."""
    if ":" not in ip:
        return ip
    try:
        address = ipaddress.IPv6Address(ip)
    except ValueError:
        return ip
    mapped = address.ipv4_mapped
    return str(mapped) if mapped is not None else int(address) >> 64


def _at(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _clip(username: str) -> str:
    """Usernames come from attackers: keep them short and printable."""
    return "".join(c if c.isprintable() else "?" for c in username[:_USERNAME_LIMIT])
