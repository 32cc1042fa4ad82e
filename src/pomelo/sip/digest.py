"""Digest access authentication for SIP (RFC 2617, RFC 7616, RFC 8760).

Design choices, and the reasons behind them:

* Nonces are stateless: ``base64(timestamp ‖ random ‖ HMAC(secret, timestamp ‖ random ‖ realm))``.
  Any node that holds the secret can verify a nonce minted by another node, so a REGISTER
  can be challenged by one node and answered to another behind a load balancer. The realm is
  bound into the MAC so a nonce for one tenant's realm is worthless for another's.
* Only the replay guard (the highest ``nc`` accepted per nonce) is state, and it lives in a
  bounded LRU that is fed *only after* a response has been proven correct: an attacker without
  the password cannot grow it, nor burn a legitimate client's counters. It is per process, so
  replay protection across nodes relies on the short nonce lifetime.
* The server never needs a password: it works from HA1, stored per hash family (MD5 and
  SHA-256). The ``-sess`` variants derive their key from the same stored HA1.
* Outcomes never distinguish "unknown user" from "wrong password": the caller passes ``None``
  as HA1 for an unknown user, a dummy HA1 is hashed so timing matches, and the outcome is
  ``BAD_RESPONSE`` in both cases. Keep it that way in the SIP response you send.
* Header parsing works on header *values* (strings) and only raises :class:`DigestError`,
  because its input comes straight from the network.

Objects here are not thread-safe; they are meant for one asyncio event loop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from types import MappingProxyType

__all__ = [
    "AuthHeader",
    "DigestAlgorithm",
    "DigestChallenge",
    "DigestChallenger",
    "DigestCredentials",
    "DigestError",
    "DigestOutcome",
    "HA1Lookup",
    "NonceTracker",
    "NonceVerdict",
    "answer_challenge",
    "digest_response",
    "format_auth_header",
    "ha1",
    "parse_auth_header",
    "select_challenge",
]


class DigestError(ValueError):
    """Raised for any header or parameter that cannot be used for digest authentication.

    Messages never echo header content: it may carry credentials and ends up in logs.
    """


# --------------------------------------------------------------------------------------------
# Header grammar (RFC 7235 §2.1, RFC 3261 §25.1): scheme, then a comma list of auth-params.
# --------------------------------------------------------------------------------------------

_MAX_HEADER_LENGTH = 8192
_MAX_PARAMS = 64
_TCHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# qdtext: anything but DQUOTE, backslash, controls (HTAB allowed) and lone surrogates, so every
# parsed value is encodable as UTF-8 and cannot smuggle a line break into a header we build.
_QDTEXT = r'[^"\\\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]'
_QUOTED_PAIR = r"\\[\t\x20-\x7e\x80-\ud7ff\ue000-\U0010ffff]"
_SCHEME_RE = re.compile(rf"[ \t]*({_TCHARS})(?:[ \t]+|\Z)")
# One auth-param and the list separator after it (or the end), so a parameter costs one match.
_PARAM_RE = re.compile(
    rf'({_TCHARS})[ \t]*=[ \t]*(?:"((?:{_QDTEXT}|{_QUOTED_PAIR})*)"|({_TCHARS}))'
    r"[ \t]*(?:,[ \t,]*|\Z)"
)
_SEPARATORS_RE = re.compile(r"[ \t,]*")
_UNESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_FOLD_RE = re.compile(r"\r\n(?=[ \t])")
_TOKEN_RE = re.compile(_TCHARS)
_NEEDS_ESCAPE_RE = re.compile(r'(["\\])')
_UNQUOTABLE_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class AuthHeader:
    """A parsed ``WWW-Authenticate``/``Authorization``-style value.

    Parameter names are lower-cased (they are case-insensitive); values are unquoted and
    unescaped. The scheme keeps its spelling; compare it with :attr:`is_digest`.
    """

    scheme: str
    params: Mapping[str, str]

    @property
    def is_digest(self) -> bool:
        return self.scheme.lower() == "digest"


def parse_auth_header(value: str) -> AuthHeader:
    """Parse one challenge or credentials value.

    SIP carries exactly one challenge per header field (RFC 3261 §20.44), so a value holding a
    second scheme is rejected rather than silently truncated. Empty list elements are accepted
    as RFC 7230 §7 requires; duplicate parameters are not (RFC 7235 §2.1).
    """
    if len(value) > _MAX_HEADER_LENGTH:
        raise DigestError("authentication header too long")
    text = _FOLD_RE.sub(" ", value) if "\r" in value else value
    scheme_match = _SCHEME_RE.match(text)
    if scheme_match is None:
        raise DigestError("missing or malformed authentication scheme")
    params: dict[str, str] = {}
    end = len(text)
    pos = _skip_separators(text, scheme_match.end())
    while pos < end:
        param = _PARAM_RE.match(text, pos)
        if param is None:
            raise DigestError(f"malformed auth-param at offset {pos}")
        _add_param(params, param)
        pos = param.end()
    return AuthHeader(scheme_match.group(1), MappingProxyType(params))


def _skip_separators(text: str, pos: int) -> int:
    match = _SEPARATORS_RE.match(text, pos)
    return pos if match is None else match.end()


def _add_param(params: dict[str, str], match: re.Match[str]) -> None:
    name = match.group(1).lower()
    if name in params:
        raise DigestError(f"duplicate parameter {name!r}")
    if len(params) >= _MAX_PARAMS:
        raise DigestError("too many parameters")
    quoted = match.group(2)
    if quoted is None:
        params[name] = match.group(3)
    else:
        params[name] = _UNESCAPE_RE.sub(r"\1", quoted) if "\\" in quoted else quoted


def format_auth_header(
    scheme: str,
    params: Mapping[str, str | None] | Iterable[tuple[str, str | None]],
    *,
    tokens: Collection[str] = (),
) -> str:
    """Build a header value; parameters named in ``tokens`` are emitted bare, the rest quoted.

    The digest grammar fixes which parameters are tokens (``algorithm``, ``stale``, and in
    credentials ``qop`` and ``nc``); some deployed servers reject the other spelling, so the
    caller chooses explicitly. ``None`` values are omitted. Values that could break out of the
    header (CR, LF, other controls) raise :class:`DigestError`.
    """
    _require_token(scheme, "scheme")
    items = params.items() if isinstance(params, Mapping) else params
    rendered = []
    for name, value in items:
        if value is None:
            continue
        _require_token(name, "parameter name")
        if name.lower() in tokens:
            _require_token(value, f"value of {name!r}")
            rendered.append(f"{name}={value}")
        else:
            rendered.append(f"{name}={_quote(value)}")
    return f"{scheme} {', '.join(rendered)}" if rendered else scheme


def _require_token(text: str, what: str) -> None:
    if _TOKEN_RE.fullmatch(text) is None:
        raise DigestError(f"{what} is not a valid token")


def _quote(value: str) -> str:
    if _UNQUOTABLE_RE.search(value) is not None:
        raise DigestError("value contains characters not allowed in a quoted-string")
    return '"' + _NEEDS_ESCAPE_RE.sub(r"\\\1", value) + '"'


# --------------------------------------------------------------------------------------------
# Algorithms and the response computation (RFC 7616 §3.4).
# --------------------------------------------------------------------------------------------


class DigestAlgorithm(StrEnum):
    """Digest algorithms of RFC 8760. The value is the wire token."""

    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA256 = "SHA-256"
    SHA256_SESS = "SHA-256-sess"

    @classmethod
    def from_token(cls, token: str | None) -> DigestAlgorithm:
        """Map a wire token, case-insensitively; an absent token means MD5 (RFC 2617 §3.2.1)."""
        if token is None:
            return cls.MD5
        found = _ALGORITHMS_BY_TOKEN.get(token.lower())
        if found is None:
            raise DigestError("unsupported digest algorithm")
        return found

    @property
    def session(self) -> bool:
        """``-sess`` variants key each response with H(HA1:nonce:cnonce) instead of HA1."""
        return self in (DigestAlgorithm.MD5_SESS, DigestAlgorithm.SHA256_SESS)

    @property
    def base(self) -> DigestAlgorithm:
        """The hash family; stored HA1 values are per family, not per variant."""
        if self in (DigestAlgorithm.MD5, DigestAlgorithm.MD5_SESS):
            return DigestAlgorithm.MD5
        return DigestAlgorithm.SHA256

    @property
    def hex_length(self) -> int:
        return 32 if self.base is DigestAlgorithm.MD5 else 64

    def hexdigest(self, text: str) -> str:
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            raise DigestError("value is not encodable as UTF-8") from None
        if self.base is DigestAlgorithm.MD5:
            # MD5 is what the protocol mandates for legacy peers, not a design choice here.
            return hashlib.md5(data, usedforsecurity=False).hexdigest()
        return hashlib.sha256(data).hexdigest()


_ALGORITHMS_BY_TOKEN = {alg.value.lower(): alg for alg in DigestAlgorithm}


def ha1(username: str, realm: str, password: str, algorithm: DigestAlgorithm) -> str:
    """HA1 = H(username:realm:password), the value to store instead of the password.

    Store one per hash family you offer (MD5 and SHA-256); for a ``-sess`` algorithm this
    returns the family's HA1, since the session key depends on per-request nonces.
    """
    return algorithm.base.hexdigest(f"{username}:{realm}:{password}")


def digest_response(
    algorithm: DigestAlgorithm,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The ``response`` value for ``qop=auth`` or, with ``qop=None``, the RFC 2069 legacy form.

    ``nc`` is the 8-hex-digit string exactly as sent: it is hashed verbatim.
    """
    h = algorithm.hexdigest
    key = ha1.lower()
    if algorithm.session:
        if cnonce is None:
            raise DigestError("session algorithms need a cnonce")
        key = h(f"{key}:{nonce}:{cnonce}")
    ha2 = h(f"{method}:{uri}")
    if qop is None:
        return h(f"{key}:{nonce}:{ha2}")
    if qop != "auth":
        raise DigestError("only qop=auth is supported")
    if nc is None or cnonce is None:
        raise DigestError("qop requires nc and cnonce")
    return h(f"{key}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# --------------------------------------------------------------------------------------------
# Typed views of challenges and credentials.
# --------------------------------------------------------------------------------------------

_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_NC_RE = re.compile(r"[0-9a-fA-F]{1,8}")
_CHALLENGE_TOKENS = frozenset({"algorithm", "stale"})
_NONCE_SLOT = "NONCE-SLOT"  # a placeholder no realm or token can contain twice by accident
_CREDENTIALS_TOKENS = frozenset({"algorithm", "qop", "nc"})


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """A digest challenge as sent in ``WWW-Authenticate``/``Proxy-Authenticate``."""

    realm: str
    nonce: str
    algorithm: DigestAlgorithm = DigestAlgorithm.MD5
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False

    @classmethod
    def parse(cls, value: str) -> DigestChallenge:
        header = parse_auth_header(value)
        if not header.is_digest:
            raise DigestError("not a Digest challenge")
        params = header.params
        realm, nonce = params.get("realm"), params.get("nonce")
        if realm is None or nonce is None:
            raise DigestError("challenge lacks realm or nonce")
        qop_list = params.get("qop")
        qop = tuple(q.strip().lower() for q in qop_list.split(",") if q.strip()) if qop_list else ()
        return cls(
            realm=realm,
            nonce=nonce,
            algorithm=DigestAlgorithm.from_token(params.get("algorithm")),
            qop=qop,
            opaque=params.get("opaque"),
            stale=params.get("stale", "").lower() == "true",
        )

    def to_header(self) -> str:
        params: list[tuple[str, str | None]] = [
            ("realm", self.realm),
            ("nonce", self.nonce),
            ("algorithm", self.algorithm.value),
            ("qop", ",".join(self.qop) or None),
            ("opaque", self.opaque),
            ("stale", "true" if self.stale else None),
        ]
        return format_auth_header("Digest", params, tokens=_CHALLENGE_TOKENS)

    def answer(
        self,
        method: str,
        uri: str,
        username: str,
        password: str,
        cnonce: str | None = None,
        nc: int = 1,
    ) -> DigestCredentials:
        """Compute credentials; ``qop=auth`` when offered, the legacy form when no qop is."""
        if not 1 <= nc <= 0xFFFFFFFF:
            raise DigestError("nc must be in 1..0xffffffff")
        if self.qop and "auth" not in self.qop:
            raise DigestError("challenge offers no supported qop")
        qop = "auth" if self.qop else None
        if cnonce is None and (qop is not None or self.algorithm.session):
            cnonce = secrets.token_urlsafe(16)
        nc_text = f"{nc:08x}" if qop is not None else None
        key = ha1(username, self.realm, password, self.algorithm)
        response = digest_response(
            self.algorithm, key, self.nonce, method, uri, qop, nc_text, cnonce
        )
        return DigestCredentials(
            username=username,
            realm=self.realm,
            nonce=self.nonce,
            uri=uri,
            response=response,
            algorithm=self.algorithm,
            qop=qop,
            nc=nc_text,
            cnonce=cnonce,
            opaque=self.opaque,
        )


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """Digest credentials from ``Authorization``/``Proxy-Authorization``.

    Construction validates internal consistency so that verification code can trust it.
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: DigestAlgorithm = DigestAlgorithm.MD5
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None

    def __post_init__(self) -> None:
        if _HEX_RE.fullmatch(self.response) is None:
            raise DigestError("response is not hexadecimal")
        if self.qop is not None:
            if self.nc is None or self.cnonce is None:
                raise DigestError("qop requires nc and cnonce")
            if _NC_RE.fullmatch(self.nc) is None or int(self.nc, 16) == 0:
                raise DigestError("nc must be 1 to 8 hex digits and not zero")
        elif self.nc is not None:
            raise DigestError("nc without qop")
        if self.algorithm.session and self.cnonce is None:
            raise DigestError("session algorithms need a cnonce")

    @classmethod
    def parse(cls, value: str) -> DigestCredentials:
        header = parse_auth_header(value)
        if not header.is_digest:
            raise DigestError("not Digest credentials")
        return cls.from_params(header.params)

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> DigestCredentials:
        """Build from already-parsed parameters (names lower-cased, values unquoted)."""
        try:
            required = [params[name] for name in ("username", "realm", "nonce", "uri", "response")]
        except KeyError as missing:
            raise DigestError(f"missing parameter {missing.args[0]!r}") from None
        if params.get("userhash", "false").lower() != "false":
            raise DigestError("userhash is not supported")
        qop = params.get("qop")
        username, realm, nonce, uri, response = required
        return cls(
            username=username,
            realm=realm,
            nonce=nonce,
            uri=uri,
            response=response,
            algorithm=DigestAlgorithm.from_token(params.get("algorithm")),
            qop=None if qop is None else qop.lower(),
            nc=params.get("nc"),
            cnonce=params.get("cnonce"),
            opaque=params.get("opaque"),
        )

    @property
    def nc_value(self) -> int | None:
        return None if self.nc is None else int(self.nc, 16)

    def to_header(self) -> str:
        params: list[tuple[str, str | None]] = [
            ("username", self.username),
            ("realm", self.realm),
            ("nonce", self.nonce),
            ("uri", self.uri),
            ("response", self.response),
            ("algorithm", self.algorithm.value),
            ("cnonce", self.cnonce),
            ("opaque", self.opaque),
            ("qop", self.qop),
            ("nc", self.nc),
        ]
        return format_auth_header("Digest", params, tokens=_CREDENTIALS_TOKENS)


# --------------------------------------------------------------------------------------------
# Client side.
# --------------------------------------------------------------------------------------------


def answer_challenge(
    challenge_header: str,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str | None = None,
    nc: int = 1,
) -> str:
    """Answer a provider's challenge; returns the ``Authorization`` header value.

    The caller owns ``nc``: reuse of a nonce for a later request must increase it.
    """
    challenge = DigestChallenge.parse(challenge_header)
    return challenge.answer(method, uri, username, password, cnonce=cnonce, nc=nc).to_header()


def select_challenge(headers: Iterable[str]) -> str:
    """Pick the challenge to answer among several header values.

    RFC 8760 §2.4: servers list their preferred algorithm first, and the client uses the
    topmost challenge it supports. Unparsable and unsupported ones are skipped.
    """
    for header in headers:
        try:
            challenge = DigestChallenge.parse(header)
        except DigestError:
            continue
        if not challenge.qop or "auth" in challenge.qop:
            return header
    raise DigestError("no supported digest challenge")


# --------------------------------------------------------------------------------------------
# Server side: replay tracking.
# --------------------------------------------------------------------------------------------


class NonceVerdict(Enum):
    FRESH = "fresh"
    REPLAY = "replay"
    FORGOTTEN = "forgotten"
    """The nonce may have been used before but its record was evicted: treat it as stale."""


class _NonceState:
    __slots__ = ("expires", "highest", "issued", "seen")

    def __init__(self, highest: int, issued: float, expires: float) -> None:
        self.highest = highest
        self.seen = 1  # bit i set: nc == highest - i was accepted
        self.issued = issued
        self.expires = expires


class NonceTracker:
    """Per nonce, which ``nc`` values were already accepted; bounded in memory.

    Beyond the highest ``nc``, a small window of lower values is remembered so that requests
    sent in parallel with one nonce and delivered out of order are not taken for replays.

    When the table is full the least recently used record is dropped. Forgetting a live nonce
    must not reopen it to replays, so the tracker remembers the newest issue time it ever
    dropped (the horizon) and reports any unknown nonce issued at or before it as
    ``FORGOTTEN``; the challenger answers with a stale challenge and the client recovers with
    a fresh nonce. One tracker may be shared by several challengers (e.g. one per tenant).
    """

    __slots__ = ("_entries", "_horizon", "_mask", "_max_entries", "_window")

    def __init__(self, max_entries: int = 100_000, window: int = 32) -> None:
        if max_entries < 1 or window < 1:
            raise ValueError("max_entries and window must be positive")
        self._entries: OrderedDict[str, _NonceState] = OrderedDict()
        self._max_entries = max_entries
        self._window = window
        self._mask = (1 << window) - 1
        self._horizon = float("-inf")

    def __len__(self) -> int:
        return len(self._entries)

    def accept(
        self, nonce: str, nc: int, *, issued: float, expires: float, now: float
    ) -> NonceVerdict:
        """Check ``nc`` for ``nonce`` and record it when fresh. Call only for valid responses."""
        self._purge_expired(now)
        state = self._entries.get(nonce)
        if state is None:
            if issued <= self._horizon:
                return NonceVerdict.FORGOTTEN
            self._make_room(now)
            self._entries[nonce] = _NonceState(nc, issued, expires)
            return NonceVerdict.FRESH
        self._entries.move_to_end(nonce)
        return self._advance(state, nc)

    def _advance(self, state: _NonceState, nc: int) -> NonceVerdict:
        if nc > state.highest:
            shift = nc - state.highest
            # Guard the shift: nc may jump to 0xffffffff, and a 4-Gbit integer is a DoS.
            state.seen = ((state.seen << shift) | 1) & self._mask if shift < self._window else 1
            state.highest = nc
            return NonceVerdict.FRESH
        offset = state.highest - nc
        bit = 1 << offset if offset < self._window else 0
        if not bit or state.seen & bit:
            return NonceVerdict.REPLAY
        state.seen |= bit
        return NonceVerdict.FRESH

    def _purge_expired(self, now: float) -> None:
        entries = self._entries
        while entries:
            nonce, state = next(iter(entries.items()))
            if state.expires >= now:
                return
            del entries[nonce]

    def _make_room(self, now: float) -> None:
        while len(self._entries) >= self._max_entries:
            _, state = self._entries.popitem(last=False)
            if state.expires >= now:
                self._horizon = max(self._horizon, state.issued)


# --------------------------------------------------------------------------------------------
# Server side: the challenger.
# --------------------------------------------------------------------------------------------


class DigestOutcome(Enum):
    """Result of verifying credentials.

    Suggested handling: ``OK`` proceed; ``STALE`` re-challenge with ``stale=true`` (the
    credentials were right, the nonce is old); ``BAD_RESPONSE`` authentication failure, which
    covers unknown users and wrong passwords alike, and forged nonces; ``REPLAY`` re-challenge,
    and consider counting it as a failure; ``MALFORMED`` 400 or a fresh challenge;
    ``UNKNOWN_REALM`` the credentials answer someone else's challenge: re-challenge.
    """

    OK = "ok"
    STALE = "stale"
    BAD_RESPONSE = "bad_response"
    REPLAY = "replay"
    MALFORMED = "malformed"
    UNKNOWN_REALM = "unknown_realm"


HA1Lookup = Callable[[str, str, DigestAlgorithm], str | None]
"""(username, realm, hash family) → stored HA1 hex, or ``None`` for an unknown user."""

_NONCE_CONTEXT = b"pomelo/sip/digest-nonce/v1\x00"
_STAMP_BYTES, _RANDOM_BYTES, _MAC_BYTES = 8, 12, 16
_NONCE_BYTES = _STAMP_BYTES + _RANDOM_BYTES + _MAC_BYTES
_NONCE_CHARS = 4 * _NONCE_BYTES // 3
_MIN_SECRET_BYTES = 16
_DEFAULT_ALGORITHMS = (DigestAlgorithm.SHA256, DigestAlgorithm.MD5)


class DigestChallenger:
    """Issues and verifies digest challenges for one realm.

    ``previous_secrets`` lets a cluster rotate the secret without failing nonces in flight:
    new nonces use ``secret``, verification accepts any of them. ``clock`` must be wall-clock
    time (nonces travel between nodes); ``max_clock_skew`` tolerates nodes slightly ahead.

    ``allow_legacy_no_qop`` accepts RFC 2069-style MD5 answers without qop. They carry no
    ``nc``, so each nonce is accepted once and a reuse is answered as stale, which makes the
    client fetch a fresh nonce instead of failing.

    The digest ``uri`` parameter is hashed as sent. Checking that it designates the
    Request-URI needs SIP URI comparison rules, which belong to the caller's URI parser.
    """

    __slots__ = (
        "_algorithms",
        "_allow_legacy",
        "_clock",
        "_dummy_ha1",
        "_keys",
        "_max_skew",
        "_realm",
        "_realm_bytes",
        "_templates",
        "_tracker",
        "_ttl",
    )

    def __init__(
        self,
        realm: str,
        secret: bytes,
        *,
        algorithms: Sequence[DigestAlgorithm] = _DEFAULT_ALGORITHMS,
        nonce_ttl: float = 300.0,
        clock: Callable[[], float] = time.time,
        previous_secrets: Sequence[bytes] = (),
        allow_legacy_no_qop: bool = False,
        tracker: NonceTracker | None = None,
        max_clock_skew: float = 5.0,
    ) -> None:
        if any(len(key) < _MIN_SECRET_BYTES for key in (secret, *previous_secrets)):
            raise ValueError(f"secrets must be at least {_MIN_SECRET_BYTES} bytes")
        if not algorithms or len(set(algorithms)) != len(algorithms):
            raise ValueError("algorithms must be non-empty and without duplicates")
        if nonce_ttl <= 0 or max_clock_skew < 0:
            raise ValueError("nonce_ttl must be positive and max_clock_skew not negative")
        _quote(realm)  # fail now, not on the first challenge
        self._realm = realm
        self._realm_bytes = realm.encode("utf-8")
        self._keys = (secret, *previous_secrets)
        self._algorithms = tuple(algorithms)
        self._ttl = nonce_ttl
        self._clock = clock
        self._allow_legacy = allow_legacy_no_qop
        self._tracker = tracker if tracker is not None else NonceTracker()
        self._max_skew = max_clock_skew
        self._dummy_ha1 = {alg: "0" * alg.hex_length for alg in DigestAlgorithm}
        self._templates: dict[bool, list[list[str]]] = {}

    @property
    def realm(self) -> str:
        return self._realm

    @property
    def algorithms(self) -> tuple[DigestAlgorithm, ...]:
        return self._algorithms

    # -- issuing ---------------------------------------------------------------------------

    def new_nonce(self) -> str:
        millis = max(0, int(self._clock() * 1000))
        body = struct.pack(">Q", millis) + secrets.token_bytes(_RANDOM_BYTES)
        return base64.b64encode(body + self._mac(self._keys[0], body)).decode("ascii")

    def challenge(self, *, stale: bool = False) -> list[str]:
        """Header values, one per algorithm in preference order (RFC 8760 §2.4).

        All share one nonce: it is not bound to an algorithm, so minting one is enough.
        """
        nonce = self.new_nonce()
        templates = self._templates.get(stale)
        if templates is None:
            # Everything but the nonce is fixed per realm: render it once. Nonces are
            # base64, which a quoted-string carries verbatim, so filling them in is exact.
            templates = self._templates[stale] = [
                DigestChallenge(self._realm, _NONCE_SLOT, alg, qop=("auth",), stale=stale)
                .to_header()
                .split(_NONCE_SLOT)
                for alg in self._algorithms
            ]
        if any(len(parts) != 2 for parts in templates):  # the realm contains the slot
            return [
                DigestChallenge(self._realm, nonce, alg, qop=("auth",), stale=stale).to_header()
                for alg in self._algorithms
            ]
        return [nonce.join(parts) for parts in templates]

    def _mac(self, key: bytes, body: bytes) -> bytes:
        message = _NONCE_CONTEXT + body + self._realm_bytes
        return hmac.digest(key, message, "sha256")[:_MAC_BYTES]

    def _nonce_issued_at(self, nonce: str) -> float | None:
        """Issue time of a nonce this cluster minted for this realm, else ``None``."""
        if len(nonce) != _NONCE_CHARS:
            return None
        try:
            raw = base64.b64decode(nonce.encode("ascii"), validate=True)
        except ValueError:  # non-ASCII, or not base64 (binascii.Error is a ValueError)
            return None
        body, mac = raw[: _STAMP_BYTES + _RANDOM_BYTES], raw[_STAMP_BYTES + _RANDOM_BYTES :]
        if not any(hmac.compare_digest(self._mac(key, body), mac) for key in self._keys):
            return None
        millis: int = struct.unpack(">Q", raw[:_STAMP_BYTES])[0]
        return millis / 1000

    # -- verifying -------------------------------------------------------------------------

    def verify_header(self, method: str, header_value: str, lookup: HA1Lookup) -> DigestOutcome:
        """Parse, look up HA1 and verify. Never raises on hostile input.

        ``lookup`` gets the hash family (MD5 or SHA-256), not the ``-sess`` variant. For
        lookups that must be awaited, parse with :meth:`DigestCredentials.parse` and call
        :meth:`verify` yourself.
        """
        try:
            credentials = DigestCredentials.parse(header_value)
        except DigestError:
            return DigestOutcome.MALFORMED
        if credentials.realm != self._realm:
            return DigestOutcome.UNKNOWN_REALM
        stored = lookup(credentials.username, credentials.realm, credentials.algorithm.base)
        return self.verify(method, credentials, stored)

    def verify(self, method: str, credentials: DigestCredentials, ha1: str | None) -> DigestOutcome:
        """Verify credentials against the stored HA1 (``None`` when the user is unknown).

        Raises ``ValueError`` only for an HA1 of the wrong length, which is a storage bug.
        """
        problem = self._check_shape(credentials)
        if problem is not None:
            return problem
        issued = self._nonce_issued_at(credentials.nonce)
        if issued is None:
            return DigestOutcome.BAD_RESPONSE
        try:
            correct = self._response_matches(method, credentials, ha1)
        except DigestError:
            return DigestOutcome.MALFORMED
        if not correct:
            return DigestOutcome.BAD_RESPONSE
        return self._check_freshness(credentials, issued)

    def _check_shape(self, credentials: DigestCredentials) -> DigestOutcome | None:
        if credentials.realm != self._realm:
            return DigestOutcome.UNKNOWN_REALM
        algorithm = credentials.algorithm
        if algorithm not in self._algorithms:
            return DigestOutcome.MALFORMED
        if credentials.qop is None:
            legacy_ok = self._allow_legacy and algorithm is DigestAlgorithm.MD5
            return None if legacy_ok else DigestOutcome.MALFORMED
        return None if credentials.qop == "auth" else DigestOutcome.MALFORMED

    def _response_matches(
        self, method: str, credentials: DigestCredentials, ha1: str | None
    ) -> bool:
        algorithm = credentials.algorithm
        if ha1 is not None and len(ha1) != algorithm.hex_length:
            raise ValueError(f"stored HA1 does not fit {algorithm.base.value}")
        expected = digest_response(
            algorithm,
            ha1 if ha1 is not None else self._dummy_ha1[algorithm],
            credentials.nonce,
            method,
            credentials.uri,
            credentials.qop,
            credentials.nc,
            credentials.cnonce,
        )
        given = credentials.response.lower().encode("ascii")
        return hmac.compare_digest(expected.encode("ascii"), given) and ha1 is not None

    def _check_freshness(self, credentials: DigestCredentials, issued: float) -> DigestOutcome:
        now = self._clock()
        age = now - issued
        if age > self._ttl or age < -self._max_skew:
            return DigestOutcome.STALE
        nc = credentials.nc_value
        verdict = self._tracker.accept(
            credentials.nonce,
            1 if nc is None else nc,
            issued=issued,
            expires=issued + self._ttl,
            now=now,
        )
        if verdict is NonceVerdict.FRESH:
            return DigestOutcome.OK
        if verdict is NonceVerdict.REPLAY and nc is not None:
            return DigestOutcome.REPLAY
        return DigestOutcome.STALE
