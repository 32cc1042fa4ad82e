"""Behaviour of the SIP edge abuse controls."""

from __future__ import annotations

import ipaddress
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pomelo.sip.security import Ban, BanList, CountryPolicy, IpAllowList, TokenBucket


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- TokenBucket ------------------------------------------------------------------------------


def test_bucket_allows_a_burst_then_limits() -> None:
    bucket: TokenBucket[str] = TokenBucket(rate=2, burst=5, clock=FakeClock())
    assert [bucket.allow("a") for _ in range(6)] == [True] * 5 + [False]
    assert bucket.allow("b")  # keys are independent


def test_bucket_refills_at_rate_and_caps_at_burst() -> None:
    clock = FakeClock()
    bucket: TokenBucket[str] = TokenBucket(rate=2, burst=5, clock=clock)
    for _ in range(5):
        bucket.allow("a")
    clock.now += 1.0  # two tokens
    assert [bucket.allow("a") for _ in range(3)] == [True, True, False]
    clock.now += 0.25  # half a token
    assert not bucket.allow("a")
    clock.now += 0.25
    assert bucket.allow("a")
    clock.now += 3600
    assert [bucket.allow("a") for _ in range(6)] == [True] * 5 + [False]


def test_bucket_costs_and_retry_after() -> None:
    clock = FakeClock()
    bucket: TokenBucket[str] = TokenBucket(rate=10, burst=10, clock=clock)
    assert bucket.retry_after("a") == 0.0
    assert bucket.allow("a", cost=8)
    assert not bucket.allow("a", cost=3)
    assert bucket.retry_after("a", cost=3) == pytest.approx(0.1)
    clock.now += 0.11
    assert bucket.allow("a", cost=3)
    assert bucket.retry_after("a", cost=11) == math.inf


def test_bucket_ignores_a_clock_stepping_back() -> None:
    clock = FakeClock()
    bucket: TokenBucket[str] = TokenBucket(rate=1, burst=1, clock=clock)
    assert bucket.allow("a")
    clock.now -= 100
    assert not bucket.allow("a")
    clock.now += 101
    assert bucket.allow("a")


def test_bucket_memory_is_bounded_under_100k_distinct_keys() -> None:
    clock = FakeClock()
    bucket: TokenBucket[int] = TokenBucket(rate=1, burst=3, max_keys=1000, clock=clock)
    for key in range(100_000):
        bucket.allow(key)
    assert len(bucket) == 1000


def test_bucket_keeps_limiting_an_active_key_during_a_flood() -> None:
    clock = FakeClock()
    bucket: TokenBucket[str] = TokenBucket(rate=0.001, burst=2, max_keys=100, clock=clock)
    assert bucket.allow("attacker")
    assert bucket.allow("attacker")
    for key in range(10_000):
        bucket.allow(f"spoofed-{key}")
        if key % 50 == 0:
            assert not bucket.allow("attacker")  # recent use keeps it in the LRU


def test_bucket_drops_keys_that_refilled() -> None:
    clock = FakeClock()
    bucket: TokenBucket[str] = TokenBucket(rate=1, burst=2, clock=clock)
    for key in ("a", "b", "c"):
        bucket.allow(key)
    clock.now += 2
    bucket.allow("d")
    assert len(bucket) == 1


def test_bucket_reset_and_validation() -> None:
    bucket: TokenBucket[str] = TokenBucket(rate=1, burst=1, clock=FakeClock())
    assert bucket.allow("a")
    bucket.reset("a")
    assert bucket.allow("a")
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(rate=0, burst=1)


# -- BanList ----------------------------------------------------------------------------------


def test_ban_after_five_failures_then_expiry() -> None:
    clock = FakeClock()
    bans = BanList(clock=clock)
    assert [bans.record_failure("203.0.113.7") for _ in range(5)] == [False] * 4 + [True]
    assert bans.is_banned("203.0.113.7")
    assert not bans.is_banned("203.0.113.8")
    clock.now += 3599
    assert bans.is_banned("203.0.113.7")
    clock.now += 1
    assert not bans.is_banned("203.0.113.7")
    assert not bans.record_failure("203.0.113.7")  # a fresh window after the ban


def test_failures_outside_the_window_do_not_add_up() -> None:
    clock = FakeClock()
    bans = BanList(clock=clock)
    for _ in range(4):
        bans.record_failure("198.51.100.1")
    clock.now += 301
    assert [bans.record_failure("198.51.100.1") for _ in range(5)] == [False] * 4 + [True]


def test_failures_slower_than_the_window_never_ban() -> None:
    clock = FakeClock()
    bans = BanList(clock=clock)
    for _ in range(50):
        assert not bans.record_failure("198.51.100.1")
        clock.now += 75  # five failures need 300 s; the window is 300 s, exclusive
    assert not bans.is_banned("198.51.100.1")


def test_bans_escalate_and_are_capped() -> None:
    clock = FakeClock()
    bans = BanList(clock=clock, max_ban_time=4 * 3600)
    durations = []
    for _ in range(5):
        for _ in range(5):
            bans.record_failure("192.0.2.1")
        (ban,) = bans.active_bans()
        durations.append((ban.until - clock.now, ban.count))
        clock.now = ban.until
    assert durations == [(3600, 1), (7200, 2), (14400, 3), (14400, 4), (14400, 5)]


def test_escalation_is_configurable() -> None:
    clock = FakeClock()
    bans = BanList(clock=clock, max_failures=2, ban_time=60, escalation=3)
    for expected in (60, 180, 540):
        bans.record_failure("192.0.2.1")
        assert bans.record_failure("192.0.2.1")
        (ban,) = bans.active_bans()
        assert ban.until - clock.now == expected
        clock.now = ban.until


def test_offences_are_forgotten_after_a_clean_period() -> None:
    clock = FakeClock()
    bans = BanList(clock=clock, history_ttl=86400)
    for _ in range(5):
        bans.record_failure("192.0.2.1")
    clock.now += 3600 + 86400 + 1
    for _ in range(5):
        bans.record_failure("192.0.2.1")
    (ban,) = bans.active_bans()
    assert ban.count == 1
    assert ban.until - clock.now == 3600


def test_success_resets_the_window_but_not_a_ban() -> None:
    clock = FakeClock()
    bans = BanList(clock=clock)
    for _ in range(4):
        bans.record_failure("192.0.2.1")
    bans.record_success("192.0.2.1")
    assert not bans.record_failure("192.0.2.1")  # counting starts again
    for _ in range(4):
        bans.record_failure("192.0.2.1")
    assert bans.is_banned("192.0.2.1")
    bans.record_success("192.0.2.1")
    assert bans.is_banned("192.0.2.1")


def test_failures_while_banned_do_not_extend_the_ban() -> None:
    clock = FakeClock()
    bans = BanList(clock=clock)
    for _ in range(5):
        bans.record_failure("192.0.2.1")
    (before,) = bans.active_bans()
    clock.now += 10
    assert bans.record_failure("192.0.2.1")
    assert bans.active_bans() == [before]


def test_active_bans_listing_and_unban() -> None:
    clock = FakeClock()
    bans = BanList(clock=clock)
    for ip in ("192.0.2.2", "192.0.2.1"):
        for _ in range(5):
            bans.record_failure(ip)
        clock.now += 1
    assert bans.active_bans() == [
        Ban("192.0.2.2", 1_700_000_000.0 + 3600, 1),
        Ban("192.0.2.1", 1_700_000_001.0 + 3600, 1),
    ]
    assert bans.unban("192.0.2.2")
    assert not bans.unban("192.0.2.2")
    assert not bans.is_banned("192.0.2.2")
    assert [b.ip for b in bans.active_bans()] == ["192.0.2.1"]
    # The offence is remembered: the next ban escalates.
    for _ in range(5):
        bans.record_failure("192.0.2.2")
    assert {b.ip: b.count for b in bans.active_bans()}["192.0.2.2"] == 2
    bans.forget("192.0.2.2")
    assert not bans.is_banned("192.0.2.2")


def test_ipv6_sources_are_banned_per_64_and_mapped_ipv4_is_ipv4() -> None:
    bans = BanList(clock=FakeClock())
    for host in range(5):
        bans.record_failure(f"2001:db8:1:2::{host + 1:x}")
    assert bans.is_banned("2001:db8:1:2:ffff::1")
    assert not bans.is_banned("2001:db8:1:3::1")
    assert [b.ip for b in bans.active_bans()] == ["2001:db8:1:2::/64"]
    assert bans.source("2001:db8:1:2::99") == "2001:db8:1:2::/64"
    assert bans.source("::1") == "::/64"
    assert bans.source("::ffff:192.0.2.9") == "192.0.2.9"
    for _ in range(5):
        bans.record_failure("::ffff:192.0.2.9")
    assert bans.is_banned("192.0.2.9")
    assert bans.is_banned(ipaddress.ip_address("192.0.2.9"))


def test_ipv6_aggregation_can_be_disabled() -> None:
    bans = BanList(clock=FakeClock(), ipv6_prefix=128)
    for _ in range(5):
        bans.record_failure("2001:db8::1")
    assert bans.is_banned("2001:db8::1")
    assert not bans.is_banned("2001:db8::2")
    assert [b.ip for b in bans.active_bans()] == ["2001:db8::1"]
    for _ in range(5):
        bans.record_failure("::1")
    assert bans.is_banned("::1")
    assert not bans.is_banned("0.0.0.1")  # same integer, other family


def test_non_addresses_are_refused() -> None:
    bans = BanList()
    with pytest.raises(ValueError, match="does not appear to be"):
        bans.record_failure("not-an-ip")


def test_ban_memory_is_bounded_under_100k_distinct_sources() -> None:
    clock = FakeClock()
    bans = BanList(clock=clock, max_failures=1, max_tracked=500, max_bans=500)
    for n in range(100_000):
        bans.record_failure(str(ipaddress.IPv4Address(0x0A000000 + n)))
    assert len(bans) <= 1000
    assert len(bans.active_bans()) == 500
    assert bans.is_banned("10.1.134.159")  # the most recent one: 10.0.0.0 + 99_999


def test_failure_windows_are_bounded_under_100k_distinct_sources() -> None:
    clock = FakeClock()
    bans = BanList(clock=clock, max_tracked=1000)
    for n in range(100_000):
        bans.record_failure(f"2001:db8:{n >> 16:x}:{n & 0xFFFF:x}::1")
    assert len(bans) == 1000
    assert bans.active_bans() == []


def test_ban_list_configuration_is_validated() -> None:
    with pytest.raises(ValueError, match="positive"):
        BanList(max_failures=0)
    with pytest.raises(ValueError, match="max_ban_time"):
        BanList(ban_time=100, max_ban_time=10)
    with pytest.raises(ValueError, match="escalation"):
        BanList(escalation=0.5)


# -- IpAllowList ------------------------------------------------------------------------------


def test_allow_list_ipv4_and_ipv6() -> None:
    allowed = IpAllowList(["10.0.0.0/8", "192.0.2.17/32", "2001:db8::/32", "::1/128"])
    assert allowed.allows("10.200.3.4")
    assert allowed.allows("192.0.2.17")
    assert not allowed.allows("192.0.2.18")
    assert not allowed.allows("11.0.0.1")
    assert allowed.allows("2001:db8:ffff::1")
    assert not allowed.allows("2001:db9::1")
    assert allowed.allows("::1")
    assert allowed.allows("::ffff:10.1.1.1")
    assert "10.0.0.1" in allowed
    assert ipaddress.ip_address("10.0.0.1") in allowed
    assert 42 not in allowed
    assert len(allowed) == 4


def test_allow_list_rejects_garbage_lookups_and_typo_cidrs() -> None:
    allowed = IpAllowList(["0.0.0.0/0"])
    assert allowed.allows("1.2.3.4")
    assert not allowed.allows("2001:db8::1")
    assert not allowed.allows("not an ip")
    assert not allowed.allows("")
    assert not IpAllowList([]).allows("127.0.0.1")
    with pytest.raises(ValueError, match="host bits"):
        IpAllowList(["192.168.1.10/24"])


_v4_networks = st.builds(
    lambda address, length: ipaddress.IPv4Network((address, length), strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
)
_v6_networks = st.builds(
    lambda address, length: ipaddress.IPv6Network((address, length), strict=False),
    st.integers(0, 2**128 - 1),
    st.integers(0, 128),
)


@given(
    st.lists(_v4_networks | _v6_networks, max_size=10),
    st.lists(st.ip_addresses(), max_size=20),
)
def test_allow_list_agrees_with_ipaddress_membership(
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
) -> None:
    allowed = IpAllowList(networks)
    probes = addresses + [n.network_address for n in networks] + [n[-1] for n in networks]
    for address in probes:
        expected = any(address in network for network in networks)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            expected = expected or any(address.ipv4_mapped in n for n in networks)
        assert allowed.allows(str(address)) == expected


# -- CountryPolicy ----------------------------------------------------------------------------

_GEO = {"192.0.2.1": "FR", "192.0.2.2": "us", "192.0.2.3": "KP"}


def geo(ip: str) -> str | None:
    return _GEO.get(ip)


def test_country_policy_allows_listed_countries_only() -> None:
    policy = CountryPolicy(geo, ["fr", "US"])
    assert policy.allowed == {"FR", "US"}
    assert policy.allows("192.0.2.1")
    assert policy.allows("192.0.2.2")  # lookups may answer in lower case
    assert not policy.allows("192.0.2.3")
    assert not policy.allows("10.0.0.1")  # unknown


def test_country_policy_unknown_and_exempt() -> None:
    exempt = IpAllowList(["192.0.2.3/32"])
    policy = CountryPolicy(geo, ["FR"], allow_unknown=True, exempt=exempt)
    assert policy.allows("10.0.0.1")
    assert policy.allows("192.0.2.3")
    assert not policy.allows("192.0.2.2")
    assert policy.country("192.0.2.2") == "US"


@pytest.mark.parametrize("code", ["FRA", "F", "1A", "É1", ""])
def test_country_codes_are_validated(code: str) -> None:
    with pytest.raises(ValueError, match="ISO 3166"):
        CountryPolicy(geo, [code])
