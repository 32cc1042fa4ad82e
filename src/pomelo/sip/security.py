"""Abuse controls for the SIP edge: rate limiting, fail2ban-style bans, IP and country policy.

A public SIP port is scanned and brute-forced within minutes of going online, usually from
many addresses at once. Every structure here therefore has a hard memory bound and O(1) work
per packet, so that a flood of distinct (possibly spoofed) sources degrades accuracy at worst,
never memory or latency. Clocks are injectable so that tests do not sleep.

Objects here are not thread-safe; they are meant for one asyncio event loop.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

__all__ = [
    "Ban",
    "BanList",
    "CountryLookup",
    "CountryPolicy",
    "IpAllowList",
    "TokenBucket",
]

K = TypeVar("K", bound=Hashable)
IpLike = str | ipaddress.IPv4Address | ipaddress.IPv6Address
Clock = Callable[[], float]


# --------------------------------------------------------------------------------------------
# Rate limiting.
# --------------------------------------------------------------------------------------------


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class TokenBucket(Generic[K]):
    """Per-key token buckets: ``rate`` tokens per second, at most ``burst`` saved up.

    Keys live in an LRU ordered by last use. A key idle long enough to have refilled is
    indistinguishable from a new key, so dropping it loses nothing; those are dropped first.
    Past ``max_keys`` the least recently used key is dropped even if it was still draining:
    under a flood of distinct keys, that key gets a full bucket again, which is the price of
    bounded memory (the flooding keys themselves are recent and stay limited).
    """

    __slots__ = ("_buckets", "_burst", "_clock", "_max_keys", "_rate", "_refill_time")

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_keys: int = 100_000,
        clock: Clock = time.monotonic,
    ) -> None:
        if rate <= 0 or burst <= 0 or max_keys < 1:
            raise ValueError("rate, burst and max_keys must be positive")
        self._rate = rate
        self._burst = burst
        self._max_keys = max_keys
        self._clock = clock
        self._refill_time = burst / rate
        self._buckets: OrderedDict[K, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: K, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens from ``key``'s bucket if it has them."""
        bucket = self._refilled(key, self._clock())
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return True
        return False

    def retry_after(self, key: K, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are available (for a ``Retry-After`` header)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0 if cost <= self._burst else math.inf
        if cost > self._burst:
            return math.inf
        elapsed = max(0.0, self._clock() - bucket.stamp)
        tokens = min(self._burst, bucket.tokens + elapsed * self._rate)
        return max(0.0, (cost - tokens) / self._rate)

    def reset(self, key: K) -> None:
        self._buckets.pop(key, None)

    def _refilled(self, key: K, now: float) -> _Bucket:
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            self._make_room(now)
            bucket = buckets[key] = _Bucket(self._burst, now)
            return bucket
        buckets.move_to_end(key)
        elapsed = now - bucket.stamp
        if elapsed > 0:  # a clock stepping backwards refills nothing
            bucket.tokens = min(self._burst, bucket.tokens + elapsed * self._rate)
            bucket.stamp = now
        return bucket

    def _make_room(self, now: float) -> None:
        buckets = self._buckets
        # Order of use is order of stamps, so once the oldest key is not refilled none is.
        while buckets:
            oldest = next(iter(buckets.values()))
            if now - oldest.stamp < self._refill_time:
                break
            buckets.popitem(last=False)
        while len(buckets) >= self._max_keys:
            buckets.popitem(last=False)


# --------------------------------------------------------------------------------------------
# Bans.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ban:
    """An active ban, as listed for the management API. ``until`` is on the list's clock."""

    ip: str
    until: float
    count: int


class _Offences:
    __slots__ = ("count", "until")

    def __init__(self, count: int, until: float) -> None:
        self.count = count
        self.until = until


_V6_MARK = 1 << 128  # keeps IPv6 keys apart from IPv4 ones; the prefix length sits above it


def _describe_source(key: int) -> str:
    if key < _V6_MARK:
        return str(ipaddress.IPv4Address(key))
    prefix = key >> 129
    network = ipaddress.IPv6Network((key & (_V6_MARK - 1), prefix))
    return str(network.network_address) if prefix == 128 else str(network)


class BanList:
    """Bans sources after repeated authentication failures, escalating for repeat offenders.

    ``max_failures`` failures within ``window`` seconds ban for ``ban_time`` seconds; every
    further ban of the same source multiplies the duration by ``escalation``, up to
    ``max_ban_time``. The offence count is forgotten once a source has stayed clean for
    ``history_ttl`` after its last ban ended.

    IPv6 sources are aggregated to ``ipv6_prefix`` (a /64 by default): a single host owns a
    whole /64, and banning addresses one by one would be pointless. IPv4-mapped IPv6
    addresses count as their IPv4 address.

    Memory is bounded twice: failure windows (``max_tracked``) and ban records
    (``max_bans``), each evicting its least recently touched entry. Evicting an active ban
    lifts it early; that only happens once ``max_bans`` sources are banned at the same time.

    The default clock is wall-clock time so ``until`` can be shown to operators as-is.
    """

    __slots__ = (
        "_ban_time",
        "_bans",
        "_clock",
        "_escalation",
        "_failures",
        "_history_ttl",
        "_max_ban_time",
        "_max_bans",
        "_max_failures",
        "_max_tracked",
        "_v6_prefix",
        "_window",
    )

    def __init__(
        self,
        *,
        max_failures: int = 5,
        window: float = 300.0,
        ban_time: float = 3600.0,
        escalation: float = 2.0,
        max_ban_time: float = 7 * 86400.0,
        history_ttl: float = 86400.0,
        max_tracked: int = 100_000,
        max_bans: int = 100_000,
        ipv6_prefix: int = 64,
        clock: Clock = time.time,
    ) -> None:
        if max_failures < 1 or max_tracked < 1 or max_bans < 1:
            raise ValueError("max_failures, max_tracked and max_bans must be positive")
        if window <= 0 or ban_time <= 0 or max_ban_time < ban_time or history_ttl < 0:
            raise ValueError("need window > 0, ban_time > 0, max_ban_time >= ban_time")
        if escalation < 1 or not 0 <= ipv6_prefix <= 128:
            raise ValueError("escalation must be >= 1 and ipv6_prefix within 0..128")
        self._max_failures = max_failures
        self._window = window
        self._ban_time = ban_time
        self._escalation = escalation
        self._max_ban_time = max_ban_time
        self._history_ttl = history_ttl
        self._max_tracked = max_tracked
        self._max_bans = max_bans
        self._v6_prefix = ipv6_prefix
        self._clock = clock
        self._failures: OrderedDict[int, deque[float]] = OrderedDict()
        self._bans: OrderedDict[int, _Offences] = OrderedDict()

    def source(self, ip: IpLike) -> str:
        """The source a ban on ``ip`` applies to, as listed by :meth:`active_bans`."""
        return _describe_source(self._key(ip))

    def _key(self, ip: IpLike) -> int:
        """An integer identity: cheaper to hash and build than strings or network objects.

        Raises ``ValueError`` for anything but an address.
        """
        address = ipaddress.ip_address(ip)
        if isinstance(address, ipaddress.IPv4Address):
            return int(address)
        mapped = address.ipv4_mapped
        if mapped is not None:
            return int(mapped)
        host_bits = 128 - self._v6_prefix
        return _V6_MARK | (int(address) >> host_bits << host_bits) | self._v6_prefix << 129

    def record_failure(self, ip: IpLike) -> bool:
        """Count an authentication failure; return whether the source is now banned."""
        key, now = self._key(ip), self._clock()
        if self._banned(key, now):
            return True
        failures = self._failure_window(key, now)
        failures.append(now)
        if len(failures) < self._max_failures:
            return False
        del self._failures[key]
        self._ban(key, now)
        return True

    def record_success(self, ip: IpLike) -> None:
        """Forget recent failures. An active ban stays: a ban is not negotiable by guessing."""
        self._failures.pop(self._key(ip), None)

    def is_banned(self, ip: IpLike) -> bool:
        return self._banned(self._key(ip), self._clock())

    def unban(self, ip: IpLike) -> bool:
        """Lift an active ban; return whether there was one.

        The offence count is kept so that a source that resumes still escalates.
        """
        key, now = self._key(ip), self._clock()
        self._failures.pop(key, None)
        offences = self._bans.get(key)
        if offences is None or offences.until <= now:
            return False
        offences.until = now
        return True

    def forget(self, ip: IpLike) -> None:
        """Drop everything known about a source, including its offence count."""
        key = self._key(ip)
        self._failures.pop(key, None)
        self._bans.pop(key, None)

    def active_bans(self) -> list[Ban]:
        """Active bans, soonest to expire first. O(number of ban records)."""
        now = self._clock()
        bans = [
            Ban(_describe_source(key), offences.until, offences.count)
            for key, offences in self._bans.items()
            if offences.until > now
        ]
        bans.sort(key=lambda ban: (ban.until, ban.ip))
        return bans

    def __len__(self) -> int:
        """Records held (failure windows plus ban records), for memory monitoring."""
        return len(self._failures) + len(self._bans)

    def _banned(self, key: int, now: float) -> bool:
        offences = self._bans.get(key)
        return offences is not None and offences.until > now

    def _failure_window(self, key: int, now: float) -> deque[float]:
        tracked = self._failures
        horizon = now - self._window
        failures = tracked.get(key)
        if failures is None:
            self._trim_failures(horizon)
            failures = tracked[key] = deque(maxlen=self._max_failures)
        else:
            tracked.move_to_end(key)
        while failures and failures[0] <= horizon:
            failures.popleft()
        return failures

    def _trim_failures(self, horizon: float) -> None:
        tracked = self._failures
        # Least recently failed first: once its last failure is in the window, all are.
        while tracked:
            oldest = next(iter(tracked.values()))
            if oldest and oldest[-1] > horizon:
                break
            tracked.popitem(last=False)
        while len(tracked) >= self._max_tracked:
            tracked.popitem(last=False)

    def _ban(self, key: int, now: float) -> None:
        bans = self._bans
        offences = bans.pop(key, None)
        if offences is not None and offences.until + self._history_ttl < now:
            offences = None
        count = 1 if offences is None else offences.count + 1
        duration = min(self._ban_time * self._escalation ** (count - 1), self._max_ban_time)
        self._trim_bans(now)
        bans[key] = _Offences(count, now + duration)

    def _trim_bans(self, now: float) -> None:
        bans = self._bans
        while bans:
            oldest = next(iter(bans.values()))
            if oldest.until + self._history_ttl >= now:
                break
            bans.popitem(last=False)
        while len(bans) >= self._max_bans:
            bans.popitem(last=False)


# --------------------------------------------------------------------------------------------
# Address and country policy.
# --------------------------------------------------------------------------------------------

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class _PrefixTable:
    """Networks of one address family, as sets of prefixes keyed by prefix length.

    A lookup costs one shift and one set probe per distinct prefix length in the list (a
    handful in practice), whatever the number of networks.
    """

    __slots__ = ("_bits", "_by_length")

    def __init__(self, bits: int, networks: Iterable[_Network]) -> None:
        self._bits = bits
        by_length: dict[int, set[int]] = {}
        for network in networks:
            shift = bits - network.prefixlen
            by_length.setdefault(shift, set()).add(int(network.network_address) >> shift)
        self._by_length = tuple(sorted(by_length.items()))

    def __contains__(self, address: int) -> bool:
        return any(address >> shift in prefixes for shift, prefixes in self._by_length)


class IpAllowList:
    """CIDR allow-list for IPv4 and IPv6. An empty list allows nothing.

    Lookups of unparsable input return ``False`` rather than raising: the input typically
    comes from the network, and the safe answer for garbage is "not allowed". CIDRs with host
    bits set are rejected at construction, since they are usually typos.
    """

    __slots__ = ("_networks", "_v4", "_v6")

    def __init__(self, cidrs: Iterable[str | _Network]) -> None:
        networks = [ipaddress.ip_network(cidr) for cidr in cidrs]
        self._networks = tuple(networks)
        self._v4 = _PrefixTable(32, (n for n in networks if n.version == 4))
        self._v6 = _PrefixTable(128, (n for n in networks if n.version == 6))

    @property
    def networks(self) -> tuple[_Network, ...]:
        return self._networks

    def __len__(self) -> int:
        return len(self._networks)

    def __contains__(self, ip: object) -> bool:
        if not isinstance(ip, str | ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        return self.allows(ip)

    def allows(self, ip: IpLike) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv4Address):
            return int(address) in self._v4
        # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; IPv4 rules apply to them.
        mapped = address.ipv4_mapped
        return int(address) in self._v6 or (mapped is not None and int(mapped) in self._v4)


class CountryLookup(Protocol):
    """Maps an IP address to an ISO 3166-1 alpha-2 code, or ``None`` when unknown.

    An offline GeoIP database adapter will implement this; tests use plain functions.
    """

    def __call__(self, ip: str, /) -> str | None: ...


class CountryPolicy:
    """Allows sources from the listed countries only.

    Private, loopback and unlisted addresses have no country; ``allow_unknown`` decides for
    them, and ``exempt`` (e.g. the office or the carrier's signalling ranges) bypasses the
    country check entirely, so a geolocation mistake cannot lock out a trunk.
    """

    __slots__ = ("_allow_unknown", "_allowed", "_exempt", "_lookup")

    def __init__(
        self,
        lookup: CountryLookup,
        allowed: Iterable[str],
        *,
        allow_unknown: bool = False,
        exempt: IpAllowList | None = None,
    ) -> None:
        codes = frozenset(code.upper() for code in allowed)
        invalid = sorted(c for c in codes if len(c) != 2 or not (c.isascii() and c.isalpha()))
        if invalid:
            raise ValueError(f"not ISO 3166-1 alpha-2 codes: {', '.join(invalid)}")
        self._lookup = lookup
        self._allowed = codes
        self._allow_unknown = allow_unknown
        self._exempt = exempt

    @property
    def allowed(self) -> frozenset[str]:
        return self._allowed

    def country(self, ip: str) -> str | None:
        code = self._lookup(ip)
        return None if code is None else code.upper()

    def allows(self, ip: str) -> bool:
        if self._exempt is not None and self._exempt.allows(ip):
            return True
        code = self.country(ip)
        if code is None:
            return self._allow_unknown
        return code in self._allowed
