"""The PBX's SIP gate: rate limits, bans, scanner detection, per-account policy, bounded memory.

Pure tests: fake clocks, no sockets; ban events go to a fake unit of work.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from pomelo.auth.access import Actor
from pomelo.auth.permissions import Scope
from pomelo.core.errors import Forbidden
from pomelo.core.events import DomainEvent
from pomelo.pbx.security import IptoccLookup, SipSecurity, SipSecurityConfig
from pomelo.pbx.security_events import SipSourceBanned
from pomelo.pbx.server import SipServer
from pomelo.pbx.sipcache import AccountInfo
from pomelo.sip.message import SipRequest
from pomelo.sip.transaction import new_tag
from pomelo.sip.uri import NameAddr

T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeUow:
    """Records what a unit of work would commit."""

    committed: list[DomainEvent]

    def __init__(self, committed: list[DomainEvent]) -> None:
        self.committed = committed
        self._events: list[DomainEvent] = []

    async def __aenter__(self) -> FakeUow:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._events.clear()

    def emit(self, event: DomainEvent) -> None:
        self._events.append(event)

    async def commit(self) -> None:
        self.committed.extend(self._events)
        self._events.clear()


def make(
    clock: FakeClock | None = None,
    committed: list[DomainEvent] | None = None,
    countries: Any = None,
    **config: Any,
) -> tuple[SipSecurity, CollectorRegistry, FakeClock]:
    clock = clock or FakeClock()
    registry = CollectorRegistry()
    uow = None if committed is None else (lambda: FakeUow(committed))
    security = SipSecurity(
        registry,
        uow,  # type: ignore[arg-type]
        config=SipSecurityConfig(**config),
        countries=countries,
        tenant_of_domain={"acme.example": "tenant-acme"}.get,
        clock=clock,
        monotonic=clock,
    )
    return security, registry, clock


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def request(user_agent: str | None, domain: str = "203.0.113.1") -> SipRequest:
    headers = [] if user_agent is None else [("User-Agent", user_agent)]
    return SipRequest(
        "OPTIONS",
        f"sip:100@{domain}",
        from_=NameAddr(f"sip:100@{domain}", params={"tag": new_tag()}),
        to=NameAddr(f"sip:100@{domain}"),
        call_id=new_tag(),
        headers=headers,
    )


def account(networks: tuple[str, ...] = (), countries: tuple[str, ...] = ()) -> AccountInfo:
    return AccountInfo(
        id="a1",
        tenant_id="t1",
        extension="101",
        user_id=None,
        realm="t1.sip",
        ha1_md5="",
        ha1_sha256="",
        enabled=True,
        allowed_networks=tuple(ipaddress.ip_network(n) for n in networks),
        allowed_countries=frozenset(countries),
        max_contacts=5,
        caller_id_name=None,
    )


def admin(tenant_id: str) -> Actor:
    return Actor.system(tenant_id)


# -- rate limit ---------------------------------------------------------------------------------


def test_a_flood_is_cut_to_the_burst_then_the_rate() -> None:
    security, registry, clock = make(rate=10, burst=20)
    admitted = [security.admit("198.51.100.7", "OPTIONS") for _ in range(1000)]
    assert sum(admitted) == 20
    assert admitted[:20] == [True] * 20
    assert metric(registry, "pomelo_sip_requests_dropped_total", reason="rate") == 980
    assert security.admit("198.51.100.8", "REGISTER")  # other sources are unaffected
    clock.now += 1.0
    assert sum(security.admit("198.51.100.7", "OPTIONS") for _ in range(100)) == 10


def test_an_ipv6_host_cannot_escape_the_limit_by_changing_address() -> None:
    security, _, _ = make(rate=1, burst=10)
    admitted = [security.admit(f"2001:db8:1:2::{i:x}", "OPTIONS") for i in range(1, 50)]
    assert sum(admitted) == 10
    assert security.admit("2001:db8:1:3::1", "OPTIONS")  # the next /64 is somebody else
    # An IPv4 peer seen through a dual-stack socket shares the IPv4 address's bucket.
    for _ in range(10):
        security.admit("192.0.2.1", "OPTIONS")
    assert not security.admit("::ffff:192.0.2.1", "OPTIONS")


def test_exempt_networks_are_never_limited_nor_banned() -> None:
    security, _, _ = make(rate=1, burst=1, exempt=("192.0.2.0/24",))
    assert all(security.admit("192.0.2.10", "INVITE") for _ in range(100))
    for _ in range(10):
        security.auth_failed("192.0.2.10", "t1", "101")
    assert not security.is_banned("192.0.2.10")
    assert security.inspect(request("friendly-scanner"), "192.0.2.10")
    assert security.admit("192.0.2.10", "INVITE")
    security.set_exempt([])
    assert security.admit("192.0.2.10", "INVITE")
    assert not security.admit("192.0.2.10", "INVITE")


async def test_an_empty_gate_is_still_the_servers_gate() -> None:
    security, _, _ = make()
    assert SipServer("127.0.0.1", 0, gate=security).gate is security  # `gate or OpenGate()`


def test_garbage_sources_are_dropped() -> None:
    security, registry, _ = make()
    assert not security.admit("not-an-ip", "OPTIONS")
    assert metric(registry, "pomelo_sip_requests_dropped_total", reason="invalid") == 1
    security.auth_failed("not-an-ip", None, "x")
    assert not security.is_banned("not-an-ip")


# -- bans ---------------------------------------------------------------------------------------


def test_five_failures_within_the_window_ban_the_source() -> None:
    security, registry, clock = make()
    ip = "198.51.100.20"
    for _ in range(4):
        security.auth_failed(ip, "t1", "101")
    assert not security.is_banned(ip)
    clock.now += 299.0  # the fifth failure, one second before the window closes
    assert security.admit(ip, "REGISTER")
    security.auth_failed(ip, "t1", "101")
    assert security.is_banned(ip)
    assert not security.admit(ip, "REGISTER")
    assert metric(registry, "pomelo_sip_requests_dropped_total", reason="ban") == 1
    assert metric(registry, "pomelo_sip_bans_total", reason="auth-failures") == 1
    assert metric(registry, "pomelo_sip_bans_active") == 1
    assert metric(registry, "pomelo_sip_auth_failures_total", target="tenant") == 5
    [ban] = security.bans(admin("t1"))
    assert (ban.ip, ban.until, ban.count) == (ip, clock.now + 3600, 1)


def test_failures_spread_beyond_the_window_do_not_ban() -> None:
    security, _, clock = make()
    ip = "198.51.100.21"
    for _ in range(4):
        security.auth_failed(ip, "t1", "101")
    clock.now += 301.0  # one second too late: the first four have aged out
    security.auth_failed(ip, "t1", "101")
    assert not security.is_banned(ip)
    assert security.admit(ip, "REGISTER")


def test_repeat_offenders_are_banned_longer() -> None:
    security, _, clock = make()
    ip = "198.51.100.22"
    durations = []
    for _ in range(3):
        for _ in range(5):
            security.auth_failed(ip, None, "admin")
        [ban] = security.bans(admin("t1"))
        durations.append(ban.until - clock.now)
        clock.now = ban.until + 1  # served its time
        assert not security.is_banned(ip)
    assert durations == [3600, 7200, 14400]


def test_a_correct_password_does_not_lift_a_ban() -> None:
    security, _, _ = make()
    ip = "198.51.100.23"
    for _ in range(5):
        security.auth_failed(ip, "t1", "101")
    security.auth_succeeded(ip)
    assert security.is_banned(ip)
    assert not security.admit(ip, "REGISTER")


def test_a_success_before_the_threshold_forgives_earlier_typos() -> None:
    security, _, _ = make()
    ip = "198.51.100.24"
    for _ in range(4):
        security.auth_failed(ip, "t1", "101")
    security.auth_succeeded(ip)
    for _ in range(4):
        security.auth_failed(ip, "t1", "101")
    assert not security.is_banned(ip)


def test_an_ipv6_attacker_is_banned_for_its_whole_slash_64() -> None:
    security, _, _ = make()
    for i in range(1, 6):
        security.auth_failed(f"2001:db8:5:6::{i}", None, "101")
    assert not security.admit("2001:db8:5:6::ffff", "REGISTER")
    assert security.admit("2001:db8:5:7::1", "REGISTER")
    assert [b.ip for b in security.bans(admin("t1"))] == ["2001:db8:5:6::/64"]


# -- scanners ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "agent",
    ["friendly-scanner", "sipvicious 0.3.4", "sipcli/v1.8", "VaxSIPUserAgent/3.1", "SIVuS", "iWar"],
)
def test_a_scanners_user_agent_bans_at_once(agent: str) -> None:
    security, registry, _ = make()
    ip = "203.0.113.66"
    assert security.suspicious(request(agent)) is not None
    assert not security.inspect(request(agent), ip)
    assert security.is_banned(ip)
    assert not security.admit(ip, "OPTIONS")
    assert metric(registry, "pomelo_sip_requests_dropped_total", reason="scanner") == 1
    assert metric(registry, "pomelo_sip_bans_total", reason="scanner") == 1


@pytest.mark.parametrize(
    "agent", [None, "Linphone/5.2", "Zoiper rv2.10", "sipsak 0.9.8", "SIPp", "Yealink SIP-T46U"]
)
def test_ordinary_user_agents_pass(agent: str | None) -> None:
    security, _, _ = make()
    assert security.suspicious(request(agent)) is None
    assert security.inspect(request(agent), "203.0.113.67")
    assert not security.is_banned("203.0.113.67")


# -- events and the attempts ring -------------------------------------------------------------


async def test_a_ban_is_announced_to_each_attacked_tenant_only() -> None:
    committed: list[DomainEvent] = []
    security, _, clock = make(committed=committed)
    ip = "198.51.100.30"
    security.auth_failed(ip, "t1", "101")
    security.auth_failed(ip, "t2", "admin")
    security.auth_failed(ip, None, "100")
    security.auth_failed(ip, "t1", "102")
    security.auth_failed(ip, "t2", "admin")
    assert security.is_banned(ip)
    await security.flush()
    assert sorted(e.tenant_id for e in committed) == ["t1", "t2"]
    event = committed[0]
    assert isinstance(event, SipSourceBanned)
    assert (event.ip, event.offence, event.reason) == (ip, 1, "auth-failures")
    assert event.until == datetime.fromtimestamp(clock.now + 3600, UTC)
    assert event.audience.user_ids == frozenset()  # company-wide


async def test_bans_of_nobodys_attackers_are_only_counted() -> None:
    committed: list[DomainEvent] = []
    security, registry, _ = make(committed=committed)
    for _ in range(5):
        security.auth_failed("198.51.100.31", None, "100")
    assert not security.inspect(request("friendly-scanner"), "198.51.100.32")
    await security.flush()
    assert committed == []
    assert metric(registry, "pomelo_sip_bans_total", reason="auth-failures") == 1
    assert metric(registry, "pomelo_sip_auth_failures_total", target="unknown") == 5
    # A scanner aiming at a tenant's SIP domain is that tenant's business.
    assert not security.inspect(request("sipvicious", "acme.example"), "198.51.100.33")
    await security.flush()
    assert [(e.tenant_id, getattr(e, "reason", None)) for e in committed] == [
        ("tenant-acme", "scanner")
    ]


def test_attempts_are_kept_per_tenant_newest_first_and_bounded() -> None:
    security, _, clock = make(attempts_per_tenant=3)
    for i in range(5):
        clock.now += 1
        security.auth_failed(f"198.51.100.{40 + i}", "t1", f"10{i}\x00\x1b[31m" + "x" * 100)
    security.auth_failed("198.51.100.50", "t2", "secret-ext")
    security.auth_failed("198.51.100.51", None, "nobody")
    mine = security.attempts(admin("t1"))
    assert [a.ip for a in mine] == ["198.51.100.44", "198.51.100.43", "198.51.100.42"]
    assert all(a.tenant_id == "t1" for a in mine)
    assert mine[0].username.startswith("104??[31m") and len(mine[0].username) == 64
    assert [a.username for a in security.attempts(admin("t2"))] == ["secret-ext"]
    assert security.attempts(admin("t3")) == []
    operator = Actor("t1", "u1", "op", "operator", Scope.OWN, frozenset(), frozenset())
    with pytest.raises(Forbidden):
        security.attempts(operator)
    with pytest.raises(Forbidden):
        security.bans(operator)


# -- per-account policy -----------------------------------------------------------------------


COUNTRIES = {"77.88.8.8": "RU", "8.8.8.8": "US", "2a02:6b8::1": "RU"}


def test_an_empty_policy_allows_everybody() -> None:
    security, _, _ = make(countries=COUNTRIES.get)
    assert security.account_allows(account(), "8.8.8.8")
    assert security.account_allows(account(), "203.0.113.5")


def test_the_account_ip_allow_list() -> None:
    security, _, _ = make(countries=COUNTRIES.get)
    office = account(networks=("192.0.2.0/24", "2001:db8:aa::/48"))
    assert security.account_allows(office, "192.0.2.77")
    assert security.account_allows(office, "::ffff:192.0.2.77")
    assert security.account_allows(office, "2001:db8:aa:1::5")
    assert not security.account_allows(office, "192.0.3.1")
    assert not security.account_allows(office, "2001:db8:ab::1")
    assert not security.account_allows(office, "garbage")


def test_the_account_country_allow_list() -> None:
    security, _, _ = make(countries=COUNTRIES.get)
    russia = account(countries=("RU",))
    assert security.account_allows(russia, "77.88.8.8")
    assert security.account_allows(russia, "2a02:6b8::1")
    assert not security.account_allows(russia, "8.8.8.8")
    assert not security.account_allows(russia, "203.0.113.5")  # public, no country: refused
    for local in ("10.1.2.3", "192.168.0.9", "172.20.0.1", "127.0.0.1", "::1", "fe80::1"):
        assert security.account_allows(russia, local), local  # no country, but local
    assert not security.account_allows(russia, "garbage")


def test_both_lists_must_pass() -> None:
    security, _, _ = make(countries=COUNTRIES.get)
    both = account(networks=("77.88.8.0/24", "8.8.8.0/24"), countries=("RU",))
    assert security.account_allows(both, "77.88.8.8")
    assert not security.account_allows(both, "8.8.8.8")  # listed network, wrong country
    assert not security.account_allows(both, "10.0.0.1")  # local, but not a listed network


def test_a_broken_country_list_fails_closed() -> None:
    security, _, _ = make(countries=COUNTRIES.get)
    assert not security.account_allows(account(countries=("Russia",)), "77.88.8.8")


def test_the_offline_country_database() -> None:
    lookup = IptoccLookup()
    assert lookup("8.8.8.8") == "US"
    assert lookup("77.88.8.8") == "RU"
    assert lookup("::ffff:77.88.8.8") == "RU"
    assert lookup("2a02:6b8::feed:ff") == "RU"
    for nowhere in ("127.0.0.1", "10.1.2.3", "192.168.1.1", "::1", "fe80::1", "garbage"):
        assert lookup(nowhere) is None, nowhere
    security = SipSecurity(CollectorRegistry())  # the real database is the default
    assert security.account_allows(account(countries=("RU",)), "77.88.8.8")
    assert not security.account_allows(account(countries=("RU",)), "8.8.8.8")
    assert security.account_allows(account(countries=("RU",)), "192.168.1.10")


# -- bounded memory ---------------------------------------------------------------------------


def _hammer(security: SipSecurity, first: int, count: int) -> None:
    for n in range(first, first + count):
        ip = str(ipaddress.IPv4Address(0x0B000000 + n))  # 11.0.0.0/8, one address each
        security.admit(ip, "REGISTER")
        security.auth_failed(ip, f"t{n % 50}", f"{n}")
        if n % 7 == 0:
            security.inspect(request("friendly-scanner"), ip)


def test_memory_stays_bounded_under_100k_distinct_sources() -> None:
    security, registry, _ = make(max_sources=10_000, attempts_per_tenant=100, max_tenants=20)
    bound = 4 * 10_000 + 20 * 100  # four per-source tables, 100 attempts for each of 20 tenants
    _hammer(security, 0, 20_000)
    assert security.records() <= bound
    _hammer(security, 20_000, 80_000)
    assert security.records() <= bound
    assert metric(registry, "pomelo_sip_security_records") == security.records()
    assert metric(registry, "pomelo_sip_auth_failures_total", target="tenant") == 100_000
    assert metric(registry, "pomelo_sip_bans_active") <= 10_000
    assert sum(len(security.attempts(admin(f"t{i}"))) for i in range(50)) <= 20 * 100
