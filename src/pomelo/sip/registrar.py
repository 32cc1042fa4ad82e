"""Registrar logic (RFC 3261 §10.3), free of storage and transport.

`process_register` takes the request and the bindings currently held for its address-of-record
and returns the new set and the answer to send. Authentication, the store and the sending are the
caller's: this keeps the rules (expiry, ordering, wildcard, limits) testable on their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pomelo.sip.errors import SipParseError
from pomelo.sip.message import SipRequest
from pomelo.sip.uri import NameAddr, Uri, parse_uri


@dataclass(frozen=True, slots=True)
class RegistrarPolicy:
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_contacts: int = 5


@dataclass(frozen=True, slots=True)
class Binding:
    """One contact of an address-of-record. `expires_at` is wall-clock (it is persisted)."""

    contact: str
    expires_at: float
    call_id: str
    cseq: int
    transport: str = "UDP"
    source_host: str = ""
    source_port: int = 0
    user_agent: str = ""
    q: str | None = None
    #: Extra header parameters of the Contact (e.g. +sip.instance), echoed in the 200.
    params: dict[str, str | None] = field(default_factory=dict)

    def remaining(self, now: float) -> int:
        return max(0, int(self.expires_at - now + 0.5))


@dataclass(frozen=True, slots=True)
class RegisterOutcome:
    status: int
    reason: str
    bindings: list[Binding]
    #: Headers to add to the response: Contact per binding with its expiry, or Min-Expires.
    headers: list[tuple[str, str]]
    changed: bool


@dataclass(frozen=True, slots=True)
class Source:
    transport: str
    host: str
    port: int


def process_register(
    request: SipRequest,
    current: list[Binding],
    *,
    now: float,
    policy: RegistrarPolicy,
    source: Source,
) -> RegisterOutcome:
    live = [b for b in current if b.expires_at > now]
    try:
        header_expires = _header_expires(request)
        if request.contact_wildcard:
            return _wildcard(request, live, header_expires)
        updates = [_requested(c, header_expires, policy) for c in request.contacts]
    except _Refusal as refusal:
        return _refuse(live, now, refusal)
    too_brief = [e for _, _, e in updates if 0 < e < policy.min_expires]
    if too_brief:
        return RegisterOutcome(
            423, "Interval Too Brief", live, [("Min-Expires", str(policy.min_expires))], False
        )
    bindings = list(live)
    for contact, uri, expires in updates:
        existing = _find(bindings, uri)
        if existing is not None:
            if existing.call_id == request.call_id and request.cseq <= existing.cseq:
                return _refuse(live, now, _Refusal(500, "Out Of Order Request"))
            bindings.remove(existing)
        if expires > 0:
            bindings.append(_binding(request, contact, uri, expires, now, source))
    bindings = _limit(bindings, policy.max_contacts)
    return RegisterOutcome(
        200, "OK", bindings, _contact_headers(bindings, now), changed=bool(updates)
    )


class _Refusal(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _refuse(live: list[Binding], now: float, refusal: _Refusal) -> RegisterOutcome:
    return RegisterOutcome(refusal.status, refusal.reason, live, [], False)


def _header_expires(request: SipRequest) -> int | None:
    value = request.header("Expires")
    if value is None:
        return None
    try:
        return min(int(value.strip()), 2**31 - 1)
    except ValueError:
        raise _Refusal(400, "Bad Expires Header") from None


def _wildcard(
    request: SipRequest, live: list[Binding], header_expires: int | None
) -> RegisterOutcome:
    if request.contacts or header_expires != 0:
        return RegisterOutcome(400, "Wildcard Contact Needs Expires 0 Alone", live, [], False)
    for binding in live:
        if binding.call_id == request.call_id and request.cseq <= binding.cseq:
            return RegisterOutcome(500, "Out Of Order Request", live, [], False)
    return RegisterOutcome(200, "OK", [], [], changed=bool(live))


def _requested(
    contact: NameAddr, header_expires: int | None, policy: RegistrarPolicy
) -> tuple[NameAddr, Uri, int]:
    try:
        uri = contact.uri
    except SipParseError:
        raise _Refusal(400, "Bad Contact") from None
    raw = contact.params.get("expires")
    if raw is not None:
        try:
            expires = int(raw)
        except ValueError:
            raise _Refusal(400, "Bad Contact Expires") from None
    elif header_expires is not None:
        expires = header_expires
    else:
        expires = policy.default_expires
    if expires < 0:
        raise _Refusal(400, "Bad Contact Expires")
    return contact, uri, min(expires, policy.max_expires)


def _find(bindings: list[Binding], uri: Uri) -> Binding | None:
    for binding in bindings:
        try:
            if parse_uri(binding.contact) == uri:
                return binding
        except SipParseError:
            continue
    return None


def _binding(
    request: SipRequest, contact: NameAddr, uri: Uri, expires: int, now: float, source: Source
) -> Binding:
    params = {k: v for k, v in contact.params.items() if k not in ("expires", "q")}
    return Binding(
        contact=str(uri),
        expires_at=now + expires,
        call_id=request.call_id,
        cseq=request.cseq,
        transport=source.transport,
        source_host=source.host,
        source_port=source.port,
        user_agent=(request.header("User-Agent") or "")[:255],
        q=contact.params.get("q"),
        params=params,
    )


def _limit(bindings: list[Binding], max_contacts: int) -> list[Binding]:
    """Over the limit, the bindings closest to expiry go: a phone that re-registers from a new
    address must not lock its owner out, and a flood cannot grow the table."""
    if len(bindings) <= max_contacts:
        return bindings
    return sorted(bindings, key=lambda b: b.expires_at, reverse=True)[:max_contacts]


def _contact_headers(bindings: list[Binding], now: float) -> list[tuple[str, str]]:
    headers = []
    for binding in bindings:
        params = "".join(
            f";{k}={v}" if v is not None else f";{k}" for k, v in binding.params.items()
        )
        headers.append(("Contact", f"<{binding.contact}>{params};expires={binding.remaining(now)}"))
    return headers
