"""Session timers (RFC 4028): the arithmetic and header handling, free of I/O.

A B2BUA runs one session timer per leg: each dialog negotiates its own interval and its own
refresher. When the PBX is the refresher it sends a refresh at half the interval; when the
phone is, the PBX expects one and ends the call if none arrives before the interval minus
min(32 s, interval/3) (RFC 4028 §10), which is how calls to a phone that lost power or
network stop being billed.
"""

from __future__ import annotations

from dataclasses import dataclass

from pomelo.sip.message import SipMessage, SipRequest
from pomelo.sip.uri import parse_header_params

__all__ = [
    "SessionTimerPolicy",
    "expiry_delay",
    "min_se_of_422",
    "negotiate_uac",
    "negotiate_uas",
    "parse_session_expires",
    "refresh_delay",
    "refresh_header",
    "supports",
    "too_small",
    "uac_headers",
]


@dataclass(frozen=True, slots=True)
class SessionTimerPolicy:
    enabled: bool = True
    interval: int = 1800
    """What we ask for on legs we originate, and the most we grant on legs we answer."""
    min_se: int = 90
    """Below this we answer 422 (RFC 4028 §5: at least 90 s)."""


def parse_session_expires(message: SipMessage) -> tuple[int, str | None] | None:
    """``(seconds, refresher)`` from Session-Expires, or None when absent or malformed."""
    value = message.header("Session-Expires")
    if not value:
        return None
    delta, _, params = value.partition(";")
    delta = delta.strip()
    if not delta.isdigit() or len(delta) > 9:
        return None
    found = parse_header_params(";" + params).get("refresher") if params else None
    refresher = found.lower() if found else None
    return int(delta), refresher if refresher in ("uac", "uas") else None


def _min_se(message: SipMessage) -> int:
    value = (message.header("Min-SE") or "").partition(";")[0].strip()
    return int(value) if value.isdigit() and len(value) <= 9 else 0


def supports(message: SipMessage, option: str = "timer") -> bool:
    """Whether Supported or Require lists the option tag."""
    for name in ("Supported", "Require"):
        for value in message.header_values(name):
            if option in (tag.strip().lower() for tag in value.split(",")):
                return True
    return False


def too_small(request: SipRequest, policy: SessionTimerPolicy) -> bool:
    """RFC 4028 §8.1: an interval below our Min-SE is refused with 422."""
    parsed = parse_session_expires(request)
    return policy.enabled and parsed is not None and parsed[0] < policy.min_se


def negotiate_uas(
    request: SipRequest, policy: SessionTimerPolicy
) -> tuple[int, bool, list[tuple[str, str]]]:
    """For a leg we answer: ``(interval, we_refresh, headers for our 2xx)``.

    Interval 0 means no timer. We grant what the caller asked, capped at our own interval
    but never below its Min-SE. If it does not support timers we refresh it ourselves
    (a plain re-INVITE/UPDATE it does not need to understand), so a dead caller is noticed.
    """
    if not policy.enabled:
        return 0, False, []
    parsed = parse_session_expires(request)
    peer_supports = supports(request)
    if parsed is None:
        interval, refresher = policy.interval, "uac" if peer_supports else "uas"
    else:
        floor = max(_min_se(request), policy.min_se)
        interval = max(min(parsed[0], policy.interval), floor)
        refresher = parsed[1] or ("uac" if peer_supports else "uas")
    if not peer_supports:
        refresher = "uas"
    headers = [("Session-Expires", f"{interval};refresher={refresher}")]
    if peer_supports:
        headers.append(("Require", "timer"))
    return interval, refresher == "uas", headers


def uac_headers(policy: SessionTimerPolicy, interval: int | None = None) -> list[tuple[str, str]]:
    """What we put in an INVITE we send (the callee picks the refresher)."""
    if not policy.enabled:
        return []
    return [
        ("Session-Expires", str(interval or policy.interval)),
        ("Min-SE", str(policy.min_se)),
    ]


def negotiate_uac(response: SipMessage, policy: SessionTimerPolicy) -> tuple[int, bool]:
    """For a leg we placed, from its 2xx: ``(interval, we_refresh)``.

    A 2xx without Session-Expires means the callee does not do timers; we keep one anyway,
    refreshing it ourselves, since that is the only way to notice a callee that vanished.
    """
    if not policy.enabled:
        return 0, False
    parsed = parse_session_expires(response)
    if parsed is None:
        return policy.interval, True
    interval, refresher = parsed
    return max(interval, policy.min_se), refresher != "uas"


def min_se_of_422(response: SipMessage) -> int:
    return _min_se(response)


def refresh_delay(interval: int) -> float:
    """RFC 4028 §10: the refresher refreshes at half the interval."""
    return interval / 2


def expiry_delay(interval: int) -> float:
    """RFC 4028 §10: the other side gives up at interval - min(32, interval/3)."""
    return interval - min(32.0, interval / 3)


def refresh_header(interval: int, we_are_uac: bool, we_refresh: bool) -> str:
    """Session-Expires for a refresh we send: the refresher named from the dialog's roles."""
    refresher = ("uac" if we_are_uac else "uas") if we_refresh else ("uas" if we_are_uac else "uac")
    return f"{interval};refresher={refresher}"
