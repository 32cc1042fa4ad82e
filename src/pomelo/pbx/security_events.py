"""Events of the SIP security layer (bans of attacking sources).

A ban is platform-wide (one source address, dropped for every tenant), but the event is a
tenant's: it is emitted once for each tenant whose accounts or SIP domain the source attacked,
so each company's administrators learn about attacks on *them* and never about other tenants'.
Sources that attacked no known tenant (scanners probing the bare IP) are only counted in the
metrics. The audience is company-wide (the default): administrators and heads, not operators.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pomelo.core.events import DomainEvent, event


@event
@dataclass(frozen=True, kw_only=True)
class SipSourceBanned(DomainEvent):
    """A source was banned after attacking this tenant.

    `ip` is the banned source as the bans API lists it (an IPv4 address, or an IPv6 /64);
    `offence` counts this source's bans (each one lasts longer); `reason` is `auth-failures`
    (repeated wrong credentials) or `scanner` (a known scanner's User-Agent).
    """

    ip: str
    until: datetime
    offence: int
    reason: str


@event
@dataclass(frozen=True, kw_only=True)
class SipSourceUnbanned(DomainEvent):
    """An administrator of this tenant lifted a ban early (also in the audit log)."""

    ip: str
