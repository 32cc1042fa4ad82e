"""SIP, SIPS and tel URIs, and name-addr values (RFC 3261 §19.1 and §20.10, RFC 3966).

Parsing is regex driven because the hot path of a server parses several URIs per message and
a compiled pattern does the character-class work in C. Parameter maps are built lazily: most
messages are forwarded or answered without anybody looking at, say, the Contact's ``expires``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TypeAlias
from urllib.parse import unquote

from pomelo.sip.errors import SipParseError

__all__ = [
    "AbsoluteUri",
    "NameAddr",
    "SipUri",
    "TelUri",
    "Uri",
    "parse_name_addr",
    "parse_name_addr_list",
    "parse_uri",
    "quote_display_name",
]

Params: TypeAlias = dict[str, str | None]

_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_USER = rf"[{_UNRESERVED}%&=+$,;?/]"
_PASSWORD = rf"[{_UNRESERVED}%&=+$,]"
_PCHAR = rf"[{_UNRESERVED}%\[\]/:&+$]"
_HCHAR = rf"[{_UNRESERVED}%\[\]/?:+$]"

_SIP_URI_RE = re.compile(
    rf"(sips?):(?:({_USER}+)(?::({_PASSWORD}*))?@)?"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-_.]+)(?::([0-9]+))?"
    rf"((?:;{_PCHAR}+(?:={_PCHAR}+)?)*)"
    rf"(?:\?({_HCHAR}+={_HCHAR}*(?:&{_HCHAR}+={_HCHAR}*)*))?",
    re.IGNORECASE,
)
_TEL_URI_RE = re.compile(
    r"(tel):(\+?[0-9A-Fa-f*#\-.()pPwW]+)((?:;[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]+"
    r"(?:=[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]+)?)*)",
    re.IGNORECASE,
)
_ABSOLUTE_URI_RE = re.compile(r"([A-Za-z][A-Za-z0-9+\-.]*):([^\s<>\"]+)")
_TEL_VISUAL = re.compile(r"[\-.()]")

# RFC 3261 §19.1.4: these URI parameters must match even when only one side carries them.
_STRICT_URI_PARAMS = ("user", "ttl", "method", "maddr", "transport")

TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"  # noqa: S105 - RFC 3261 token, not a secret
QUOTED_STRING = r'"(?:[^"\\]|\\.)*"'
_GEN_VALUE = rf"(?:{QUOTED_STRING}|[^\s;,\"<>=]+)"
HEADER_PARAM = rf"[ \t]*;[ \t]*({TOKEN})(?:[ \t]*=[ \t]*({_GEN_VALUE}))?"
_HEADER_PARAM_RE = re.compile(HEADER_PARAM)
HEADER_PARAMS = rf"(?:[ \t]*;[ \t]*{TOKEN}(?:[ \t]*=[ \t]*{_GEN_VALUE})?)*"

# Enough of absolute-URI syntax to reject garbage early without building the URI object.
_URI_SHAPE = r"[A-Za-z][A-Za-z0-9+\-.]*:"
_NAME_ADDR_RE = re.compile(
    rf"[ \t]*(?:(?:({QUOTED_STRING})|({TOKEN}(?:[ \t]+{TOKEN})*))?[ \t]*<({_URI_SHAPE}[^<>\s]*)>"
    rf"|({_URI_SHAPE}[^\s;,<>\"?]*))"
    rf"({HEADER_PARAMS})[ \t]*(,|\Z)"
)
_TOKEN_RE = re.compile(TOKEN)
_UNESCAPE_RE = re.compile(r"\\(.)")
_DISPLAY_ESCAPE_RE = re.compile(r'(["\\])')


def parse_params(raw: str) -> Params:
    """Turn an already validated ``;a=b;c`` string into a map keyed by lower-case name."""
    params: Params = {}
    for item in raw.split(";"):
        if not item:
            continue
        name, eq, value = item.partition("=")
        params[name.lower()] = value if eq else None
    return params


def parse_header_params(raw: str) -> Params:
    """Like :func:`parse_params` but tolerates the LWS RFC 3261 allows around header params."""
    return {name.lower(): value or None for name, value in _HEADER_PARAM_RE.findall(raw)}


def format_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def _ci_unquote(value: str | None) -> str | None:
    return None if value is None else unquote(value).lower()


class SipUri:
    """A ``sip:`` or ``sips:`` URI; ``host`` never carries IPv6 brackets."""

    __slots__ = ("_headers", "_params", "_params_raw", "host", "password", "port", "scheme", "user")

    def __init__(
        self,
        host: str,
        *,
        user: str | None = None,
        password: str | None = None,
        port: int | None = None,
        scheme: str = "sip",
        params: Params | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self._params: Params | None = dict(params) if params else {}
        self._params_raw = ""
        self._headers: dict[str, str] = dict(headers) if headers else {}

    @property
    def params(self) -> Params:
        if self._params is None:
            self._params = parse_params(self._params_raw)
        return self._params

    @property
    def headers(self) -> dict[str, str]:
        return self._headers

    @property
    def secure(self) -> bool:
        return self.scheme == "sips"

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def lr(self) -> bool:
        return "lr" in self.params

    @property
    def host_port(self) -> str:
        """``host[:port]`` with IPv6 brackets, as written in Via sent-by or Host fields."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    def copy(self) -> SipUri:
        uri = SipUri.__new__(SipUri)
        uri.scheme, uri.user, uri.password = self.scheme, self.user, self.password
        uri.host, uri.port = self.host, self.port
        uri._params = None if self._params is None else dict(self._params)
        uri._params_raw = self._params_raw
        uri._headers = dict(self._headers)
        return uri

    def __str__(self) -> str:
        text = self.scheme + ":"
        if self.user is not None:
            text += self.user if self.password is None else f"{self.user}:{self.password}"
            text += "@"
        text += self.host_port
        text += self._params_raw if self._params is None else format_params(self._params)
        if self._headers:
            text += "?" + "&".join(f"{k}={v}" for k, v in self._headers.items())
        return text

    def __repr__(self) -> str:
        return f"SipUri({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        """RFC 3261 §19.1.4 comparison, which is deliberately not plain string equality."""
        if not isinstance(other, SipUri):
            return NotImplemented
        if (
            self.scheme != other.scheme
            or self.port != other.port
            or self.host.lower() != other.host.lower()
            or _unquote_opt(self.user) != _unquote_opt(other.user)
            or _unquote_opt(self.password) != _unquote_opt(other.password)
        ):
            return False
        mine, theirs = self.params, other.params
        for name in _STRICT_URI_PARAMS:
            if _ci_unquote(mine.get(name)) != _ci_unquote(theirs.get(name)):
                return False
        for name in mine.keys() & theirs.keys():
            if _ci_unquote(mine[name]) != _ci_unquote(theirs[name]):
                return False
        return _norm_headers(self._headers) == _norm_headers(other._headers)

    def __hash__(self) -> int:
        return hash((self.scheme, _unquote_opt(self.user), self.host.lower(), self.port))


def _unquote_opt(value: str | None) -> str | None:
    return None if value is None else unquote(value)


def _norm_headers(headers: dict[str, str]) -> dict[str, str]:
    return {unquote(k).lower(): unquote(v).lower() for k, v in headers.items()}


class TelUri:
    """A ``tel:`` URI (RFC 3966); visual separators are ignored when comparing numbers."""

    __slots__ = ("number", "params")

    def __init__(self, number: str, params: Params | None = None) -> None:
        self.number = number
        self.params: Params = dict(params) if params else {}

    @property
    def scheme(self) -> str:
        return "tel"

    @property
    def is_global(self) -> bool:
        return self.number.startswith("+")

    def copy(self) -> TelUri:
        return TelUri(self.number, self.params)

    def __str__(self) -> str:
        return f"tel:{self.number}{format_params(self.params)}"

    def __repr__(self) -> str:
        return f"TelUri({str(self)!r})"

    def _key(self) -> tuple[str, dict[str, str | None]]:
        number = _TEL_VISUAL.sub("", self.number).lower()
        return number, {k: _ci_unquote(v) for k, v in self.params.items()}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TelUri):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key()[0])


class AbsoluteUri:
    """Any other absolute URI: kept opaque so a UAS can answer 416 instead of failing to parse."""

    __slots__ = ("opaque", "scheme")

    def __init__(self, scheme: str, opaque: str) -> None:
        self.scheme = scheme.lower()
        self.opaque = opaque

    def copy(self) -> AbsoluteUri:
        return AbsoluteUri(self.scheme, self.opaque)

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"

    def __repr__(self) -> str:
        return f"AbsoluteUri({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AbsoluteUri):
            return NotImplemented
        return self.scheme == other.scheme and self.opaque == other.opaque

    def __hash__(self) -> int:
        return hash((self.scheme, self.opaque))


Uri: TypeAlias = SipUri | TelUri | AbsoluteUri


def parse_uri(text: str) -> Uri:
    """Parse any absolute URI, giving ``sip``/``sips``/``tel`` their structured form."""
    if text[:4] == "sip:":
        match = _SIP_URI_RE.fullmatch(text)
        if match is None:
            raise SipParseError(f"malformed SIP URI {_clip(text)}")
        return _sip_uri_from_match(match)
    head = text[:5].lower()
    if head.startswith("sip"):
        match = _SIP_URI_RE.fullmatch(text)
        if match is not None:
            return _sip_uri_from_match(match)
        if head in ("sip:", "sips:"):
            raise SipParseError(f"malformed SIP URI {_clip(text)}")
    elif head[:4] == "tel:":
        tel = _TEL_URI_RE.fullmatch(text)
        if tel is None:
            raise SipParseError(f"malformed tel URI {_clip(text)}")
        return TelUri(tel.group(2), parse_params(tel.group(3)))
    other = _ABSOLUTE_URI_RE.fullmatch(text)
    if other is None:
        raise SipParseError(f"malformed URI {_clip(text)}")
    return AbsoluteUri(other.group(1), other.group(2))


def _sip_uri_from_match(match: re.Match[str]) -> SipUri:
    scheme, user, password, host, port, params, headers = match.groups()
    uri = SipUri.__new__(SipUri)
    uri.scheme = scheme.lower()
    uri.user = user
    uri.password = password
    if host[0] == "[":
        host = host[1:-1]
        _check_ipv6(host)
    uri.host = host
    uri.port = None if port is None else _parse_port(port)
    uri._params = None if params else {}
    uri._params_raw = params
    uri._headers = _parse_uri_headers(headers) if headers else {}
    return uri


def _check_ipv6(host: str) -> None:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise SipParseError(f"invalid IPv6 reference [{_clip(host)}]") from None


def _parse_port(text: str) -> int:
    port = int(text) if len(text) <= 5 else 65536
    if port > 65535:
        raise SipParseError(f"port out of range: {_clip(text)}")
    return port


def _parse_uri_headers(raw: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in raw.split("&"):
        name, _, value = item.partition("=")
        headers[name] = value
    return headers


def _clip(text: str, limit: int = 60) -> str:
    """Quote peer data for an error reason without letting it grow unbounded."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def quote_display_name(name: str) -> str:
    return '"' + _DISPLAY_ESCAPE_RE.sub(r"\\\1", name) + '"'


class NameAddr:
    """``[display-name] <uri> *(;param)`` as used by From, To, Contact, Route and friends.

    The URI text is checked for shape when the header is parsed but only turned into a
    :class:`SipUri` on first access: a proxy or a transaction layer relays From and To
    without ever looking inside them. A malformed URI therefore raises
    :class:`SipParseError` from the ``uri`` property, not from the message parser.
    """

    __slots__ = ("_params", "_params_raw", "_uri", "_uri_raw", "display_name")

    def __init__(
        self, uri: Uri | str, display_name: str | None = None, params: Params | None = None
    ) -> None:
        self._uri: Uri | None = parse_uri(uri) if isinstance(uri, str) else uri
        self._uri_raw = ""
        self.display_name = display_name
        self._params: Params | None = dict(params) if params else {}
        self._params_raw = ""

    @property
    def uri(self) -> Uri:
        uri = self._uri
        if uri is None:
            uri = self._uri = parse_uri(self._uri_raw)
        return uri

    @uri.setter
    def uri(self, value: Uri) -> None:
        self._uri = value

    @property
    def params(self) -> Params:
        if self._params is None:
            self._params = parse_header_params(self._params_raw)
        return self._params

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @tag.setter
    def tag(self, value: str | None) -> None:
        if value is None:
            self.params.pop("tag", None)
        else:
            self.params["tag"] = value

    def copy(self) -> NameAddr:
        clone = NameAddr.__new__(NameAddr)
        clone._uri = None if self._uri is None else self._uri.copy()
        clone._uri_raw = self._uri_raw
        clone.display_name = self.display_name
        clone._params = None if self._params is None else dict(self._params)
        clone._params_raw = self._params_raw
        return clone

    def __str__(self) -> str:
        raw = self._params_raw
        if self._params is None and " " not in raw and "\t" not in raw:
            params = raw
        else:
            params = format_params(self.params)
        uri = self._uri_raw if self._uri is None else str(self._uri)
        if self.display_name is None:
            return f"<{uri}>{params}"
        return f"{quote_display_name(self.display_name)} <{uri}>{params}"

    def __repr__(self) -> str:
        return f"NameAddr({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NameAddr):
            return NotImplemented
        return (
            self.uri == other.uri
            and (self.display_name or None) == (other.display_name or None)
            and {k: _ci_unquote(v) for k, v in self.params.items()}
            == {k: _ci_unquote(v) for k, v in other.params.items()}
        )

    __hash__ = None  # type: ignore[assignment]


def _name_addr_from_match(match: re.Match[str], bracket_only: bool, what: str) -> NameAddr:
    quoted, token, bracketed, bare, params, _ = match.groups()
    if bracketed is None:
        if bracket_only:
            raise SipParseError(f"{what} value must be enclosed in <>")
        bracketed = bare
    item = NameAddr.__new__(NameAddr)
    item._uri = None
    item._uri_raw = bracketed
    if quoted is not None:
        inner = quoted[1:-1]
        item.display_name = _UNESCAPE_RE.sub(r"\1", inner) if "\\" in inner else inner
    else:
        item.display_name = token
    item._params = None if params else {}
    item._params_raw = params
    return item


def parse_name_addr_list(
    value: str, what: str = "header", *, bracket_only: bool = False
) -> list[NameAddr]:
    """Split a comma-separated list of name-addr values, honouring quotes and ``<>``."""
    items: list[NameAddr] = []
    pos = 0
    while True:
        match = _NAME_ADDR_RE.match(value, pos)
        if match is None:
            raise SipParseError(_diagnose(value, what))
        items.append(_name_addr_from_match(match, bracket_only, what))
        if not match.group(6):
            return items
        pos = match.end()


def parse_name_addr(value: str, what: str = "header") -> NameAddr:
    """Parse a single-valued name-addr header such as From or To."""
    match = _NAME_ADDR_RE.match(value)
    if match is None:
        raise SipParseError(_diagnose(value, what))
    quoted, token, bracketed, bare, params, more = match.groups()
    if more:
        raise SipParseError(f"{what} header must have a single value")
    item = NameAddr.__new__(NameAddr)
    item._uri = None
    item._uri_raw = bare if bracketed is None else bracketed
    if quoted is None:
        item.display_name = token
    else:
        inner = quoted[1:-1]
        item.display_name = _UNESCAPE_RE.sub(r"\1", inner) if "\\" in inner else inner
    item._params = None if params else {}
    item._params_raw = params
    return item


def _diagnose(value: str, what: str) -> str:
    unescaped = _UNESCAPE_RE.sub("", value)
    if unescaped.count('"') % 2:
        return f"unterminated quoted string in {what} header"
    if value.count("<") != value.count(">"):
        return f"unbalanced <> in {what} header"
    if not value.strip():
        return f"empty {what} header"
    if value.rstrip().endswith(",") or ",," in value.replace(" ", ""):
        return f"empty list element in {what} header"
    return f"malformed {what} header {_clip(value)}"


def is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None
