"""SIP requests and responses: a bytes-level parser, a serializer and transaction helpers.

The parser is built for a server that handles thousands of messages a second in CPython.
It does the structural work once, with compiled patterns where possible, and only for the
headers every layer needs (routing, transaction matching, dialog identification). Every other
header stays a raw string until somebody asks for it, which keeps the common case cheap and
means an exotic header we do not understand can never make a message unparseable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Final

from pomelo.sip.errors import SipParseError
from pomelo.sip.uri import (
    HEADER_PARAMS,
    TOKEN,
    NameAddr,
    Params,
    SipUri,
    Uri,
    format_params,
    parse_header_params,
    parse_name_addr,
    parse_name_addr_list,
    parse_uri,
)

__all__ = [
    "COMPACT_FORMS",
    "MAGIC_COOKIE",
    "MAX_HEADERS",
    "MAX_MESSAGE_SIZE",
    "REASON_PHRASES",
    "SipMessage",
    "SipRequest",
    "SipResponse",
    "Via",
    "canonical_header_name",
    "header_key",
    "make_response",
    "parse_message",
    "parse_via_list",
]

MAX_MESSAGE_SIZE: Final = 65535
"""Largest datagram we accept; a stream framer enforces its own, separate limits."""
MAX_HEADERS: Final = 256
MAGIC_COOKIE: Final = "z9hG4bK"
"""RFC 3261 §8.1.1.7 branch prefix that marks a branch as usable for transaction matching."""

_MAX_CSEQ: Final = 2**31 - 1
_MAX_FORWARDS_LIMIT: Final = 255

COMPACT_FORMS: Final[dict[str, str]] = {
    "i": "call-id",
    "f": "from",
    "t": "to",
    "v": "via",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "u": "allow-events",
}

_CANONICAL: Final[dict[str, str]] = {
    name.lower(): name
    for name in (
        "Accept",
        "Accept-Contact",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Authentication-Info",
        "Authorization",
        "Call-ID",
        "Call-Info",
        "Contact",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Date",
        "Error-Info",
        "Event",
        "Expires",
        "From",
        "In-Reply-To",
        "Max-Forwards",
        "Min-Expires",
        "Min-SE",
        "MIME-Version",
        "Organization",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Path",
        "Priority",
        "Privacy",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Require",
        "RAck",
        "Reason",
        "Record-Route",
        "Refer-To",
        "Referred-By",
        "Reply-To",
        "Require",
        "Retry-After",
        "Route",
        "RSeq",
        "Server",
        "Session-Expires",
        "Subject",
        "Subscription-State",
        "Supported",
        "Timestamp",
        "To",
        "Unsupported",
        "User-Agent",
        "Via",
        "Warning",
        "WWW-Authenticate",
    )
}

_EAGER: Final = frozenset(
    (
        "via",
        "from",
        "to",
        "call-id",
        "cseq",
        "contact",
        "route",
        "record-route",
        "max-forwards",
        "content-length",
    )
)

# Exact spellings seen on the wire almost every time: one dict hit instead of lower()+lookup.
_FAST_KEYS: Final[dict[str, str]] = {}
for _low, _canon in _CANONICAL.items():
    _FAST_KEYS[_canon] = _low
    _FAST_KEYS[_low] = _low
for _short, _low in COMPACT_FORMS.items():
    _FAST_KEYS[_short] = _low
    _FAST_KEYS[_short.upper()] = _low
_FAST_KEYS.update({"Call-Id": "call-id", "Cseq": "cseq", "CSEQ": "cseq"})

REASON_PHRASES: Final[dict[int, str]] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

_FOLD_RE = re.compile(r"\r\n[ \t]+")
_TOKEN_RE = re.compile(TOKEN)
_CSEQ_RE = re.compile(rf"([0-9]{{1,10}})[ \t]+({TOKEN})")
_CALL_ID_RE = re.compile(
    r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+(?:@[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+)?"
)
_VIA_RE = re.compile(
    rf"[ \t]*[Ss][Ii][Pp][ \t]*/[ \t]*2\.0[ \t]*/[ \t]*({TOKEN})[ \t]+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-_.]+)(?:[ \t]*:[ \t]*([0-9]{1,5}))?"
    rf"({HEADER_PARAMS})[ \t]*(,|\Z)"
)
_VIA_PROTOCOL_RE = re.compile(rf"({TOKEN})[ \t]*/[ \t]*({TOKEN})[ \t]*/")
_WARNING_RE = re.compile(
    r"[0-9]{3}[ \t]+\S+[ \t]+\".*\"(?:[ \t]*,[ \t]*[0-9]{3}[ \t]+\S+[ \t]+\".*\")*"
)
_DELTA_RE = re.compile(r"[0-9]{1,10}")


def _clip(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def header_key(name: str) -> str:
    """Lower-case long form of a header name, the key all lookups use."""
    key = _FAST_KEYS.get(name)
    if key is not None:
        return key
    low = name.strip().lower()
    return COMPACT_FORMS.get(low, low)


def canonical_header_name(name: str) -> str:
    """The long, conventionally capitalised name the serializer writes."""
    key = header_key(name)
    return _CANONICAL.get(key, name.strip())


class Via:
    """One Via entry; ``host`` has no IPv6 brackets and ``transport`` is upper-case."""

    __slots__ = ("_params", "_params_raw", "host", "port", "transport")

    def __init__(
        self, transport: str, host: str, port: int | None = None, params: Params | None = None
    ) -> None:
        self.transport = transport.upper()
        self.host = host
        self.port = port
        self._params: Params | None = dict(params) if params else {}
        self._params_raw = ""

    @property
    def params(self) -> Params:
        if self._params is None:
            self._params = parse_header_params(self._params_raw)
        return self._params

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @branch.setter
    def branch(self, value: str | None) -> None:
        self._set("branch", value)

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """The port stamped by the server, or None while the param is absent or empty."""
        value = self.params.get("rport")
        if value and len(value) <= 5 and value.isascii() and value.isdigit():
            return int(value)
        return None

    @property
    def rport_requested(self) -> bool:
        return "rport" in self.params

    @property
    def sent_by(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def has_magic_cookie(self) -> bool:
        branch = self.branch
        return branch is not None and branch.startswith(MAGIC_COOKIE)

    def _set(self, name: str, value: str | None) -> None:
        if value is None:
            self.params.pop(name, None)
        else:
            self.params[name] = value

    def stamp_source(self, host: str, port: int) -> None:
        """Record where the request really came from (RFC 3261 §18.2.1, RFC 3581 §4).

        ``received`` is added when the sent-by host differs from the packet source, and always
        when the client asked for ``rport``, so responses can traverse the client's NAT.
        """
        params = self.params
        if "rport" in params:
            params["rport"] = str(port)
            params["received"] = host
        elif host != self.host:
            params["received"] = host

    def response_target(self, default_port: int = 5060) -> tuple[str, int]:
        """Where a response to this Via goes (RFC 3261 §18.2.2 with RFC 3581 §4)."""
        host = self.received or self.host
        port = self.rport or self.port or default_port
        return host, port

    def copy(self) -> Via:
        clone = Via.__new__(Via)
        clone.transport, clone.host, clone.port = self.transport, self.host, self.port
        clone._params = None if self._params is None else dict(self._params)
        clone._params_raw = self._params_raw
        return clone

    def __str__(self) -> str:
        raw = self._params_raw
        if self._params is None and " " not in raw and "\t" not in raw:
            params = raw
        else:
            params = format_params(self.params)
        return f"SIP/2.0/{self.transport} {self.sent_by}{params}"

    def __repr__(self) -> str:
        return f"Via({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Via):
            return NotImplemented
        return (
            self.transport == other.transport
            and self.host.lower() == other.host.lower()
            and self.port == other.port
            and self.params == other.params
        )

    __hash__ = None  # type: ignore[assignment]


def parse_via_list(value: str) -> list[Via]:
    """Parse a Via header value, which may carry several comma-separated entries."""
    vias: list[Via] = []
    pos = 0
    match_at = _VIA_RE.match
    while True:
        match = match_at(value, pos)
        if match is None:
            raise SipParseError(_via_reason(value, pos))
        transport, host, port, params, more = match.groups()
        via = Via.__new__(Via)
        via.transport = transport.upper()
        via.host = host[1:-1] if host[0] == "[" else host
        via.port = None if port is None else int(port)
        if via.port is not None and via.port > 65535:
            raise SipParseError(f"Via port out of range: {port}")
        via._params = None if params else {}
        via._params_raw = params
        vias.append(via)
        if not more:
            return vias
        pos = match.end()


def _via_reason(value: str, pos: int) -> str:
    rest = value[pos:].strip()
    if not rest:
        return "empty Via header or list element"
    protocol = _VIA_PROTOCOL_RE.match(rest)
    if protocol is not None and (protocol.group(1).upper(), protocol.group(2)) != ("SIP", "2.0"):
        return f"unsupported Via protocol {protocol.group(1)}/{protocol.group(2)}"
    if ";;" in rest.replace(" ", "") or rest.endswith((",", ";")) or rest.startswith(","):
        return "empty parameter or list element in Via header"
    return f"malformed Via header {_clip(value)}"


def _bounded_int(text: str, limit: int, what: str) -> int:
    """Convert decimal digits, refusing values past ``limit`` before int() sees a huge string."""
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        if text.startswith("-"):
            raise SipParseError(f"negative {what}")
        raise SipParseError(f"{what} is not a number: {_clip(text)}")
    if len(text) > len(str(limit)) or int(text) > limit:
        raise SipParseError(f"{what} too large: {_clip(text)}")
    return int(text)


def _parse_cseq(value: str) -> tuple[int, str]:
    match = _CSEQ_RE.fullmatch(value)
    if match is None:
        number = value.split(None, 1)[0] if value.strip() else ""
        if number.isascii() and number.isdigit():
            raise SipParseError(f"CSeq number too large: {_clip(number)}")
        raise SipParseError(f"malformed CSeq header {_clip(value)}")
    number, method = match.groups()
    cseq = int(number)
    if cseq > _MAX_CSEQ:
        raise SipParseError(f"CSeq number too large: {number}")
    return cseq, method


def _check_call_id(value: str) -> str:
    # Printable ASCII without spaces is what matters for safe relaying; the exact word
    # grammar is only consulted when the cheap test fails, to produce a precise reason.
    if value and value.isascii() and value.isprintable() and " " not in value:
        return value
    if _CALL_ID_RE.fullmatch(value) is None:
        raise SipParseError(f"malformed Call-ID {_clip(value)}")
    return value


def _check_warning(value: str) -> None:
    if _WARNING_RE.fullmatch(value) is None:
        raise SipParseError(f"malformed Warning header {_clip(value)}")


def _check_retry_after(value: str) -> None:
    delta = value.split(";", 1)[0].split("(", 1)[0].strip()
    if _DELTA_RE.fullmatch(delta) is None or int(delta) > 2**32 - 1:
        raise SipParseError(f"malformed Retry-After header {_clip(value)}")


# Lazily kept headers that still get a cheap check in the parser (RFC 4475 shows attackers
# overflowing their scalars).
_VALIDATORS: Final[dict[str, Callable[[str], None]]] = {
    "warning": _check_warning,
    "retry-after": _check_retry_after,
}


class SipMessage:
    """State shared by requests and responses; the parsed headers are plain attributes.

    Eagerly parsed headers live in typed attributes; every other header is kept, in order,
    as ``(key, name, value)`` where ``key`` is the lower-case long name used for lookups.
    """

    __slots__ = (
        "_extra",
        "body",
        "call_id",
        "contact_wildcard",
        "contacts",
        "cseq",
        "cseq_method",
        "from_",
        "max_forwards",
        "record_routes",
        "routes",
        "to",
        "vias",
    )

    vias: list[Via]
    from_: NameAddr
    to: NameAddr
    call_id: str
    cseq: int
    cseq_method: str
    contacts: list[NameAddr]
    contact_wildcard: bool
    routes: list[NameAddr]
    record_routes: list[NameAddr]
    max_forwards: int | None
    body: bytes
    _extra: list[tuple[str, str, str]]

    def _init_common(
        self,
        *,
        from_: NameAddr,
        to: NameAddr,
        call_id: str,
        cseq: int,
        cseq_method: str,
        vias: Iterable[Via] | None,
        contacts: Iterable[NameAddr] | None,
        routes: Iterable[NameAddr] | None,
        record_routes: Iterable[NameAddr] | None,
        max_forwards: int | None,
        body: bytes,
        headers: Iterable[tuple[str, str]] | None,
    ) -> None:
        self.vias = list(vias or ())
        self.from_ = from_
        self.to = to
        self.call_id = call_id
        self.cseq = cseq
        self.cseq_method = cseq_method
        self.contacts = list(contacts or ())
        self.contact_wildcard = False
        self.routes = list(routes or ())
        self.record_routes = list(record_routes or ())
        self.max_forwards = max_forwards
        self.body = body
        self._extra = []
        for name, value in headers or ():
            self.add_header(name, value)

    # -- transaction-layer conveniences -------------------------------------------------

    @property
    def top_via(self) -> Via | None:
        return self.vias[0] if self.vias else None

    @property
    def branch(self) -> str | None:
        return self.vias[0].branch if self.vias else None

    @property
    def content_type(self) -> str | None:
        return self.header("content-type")

    # -- generic header access ----------------------------------------------------------

    def _eager_values(self, key: str) -> list[str]:
        if key == "via":
            return [str(v) for v in self.vias]
        if key == "from":
            return [str(self.from_)]
        if key == "to":
            return [str(self.to)]
        if key == "call-id":
            return [self.call_id]
        if key == "cseq":
            return [f"{self.cseq} {self.cseq_method}"]
        if key == "contact":
            return ["*"] if self.contact_wildcard else [str(c) for c in self.contacts]
        if key == "route":
            return [str(r) for r in self.routes]
        if key == "record-route":
            return [str(r) for r in self.record_routes]
        if key == "max-forwards":
            return [] if self.max_forwards is None else [str(self.max_forwards)]
        return [str(len(self.body))]

    def header_values(self, name: str) -> list[str]:
        """All values of a header, case-insensitive and compact-form aware, in order.

        List-valued eager headers give one string per element even when the wire had them
        comma-folded on one line.
        """
        key = header_key(name)
        if key in _EAGER:
            return self._eager_values(key)
        return [value for k, _, value in self._extra if k == key]

    def header(self, name: str) -> str | None:
        """First value of a header, or None."""
        key = header_key(name)
        if key in _EAGER:
            values = self._eager_values(key)
            return values[0] if values else None
        for k, _, value in self._extra:
            if k == key:
                return value
        return None

    def has_header(self, name: str) -> bool:
        return bool(self.header_values(name))

    def add_header(self, name: str, value: str) -> None:
        """Append a header; eager headers are parsed so the typed attributes stay in charge."""
        key = header_key(name)
        if key in _EAGER:
            self._set_eager(key, value, append=True)
        else:
            self._extra.append((key, name.strip(), value.strip()))

    def set_header(self, name: str, value: str) -> None:
        """Replace every occurrence of a header with a single value."""
        key = header_key(name)
        if key in _EAGER:
            self._set_eager(key, value, append=False)
            return
        extra = self._extra
        for index, (k, _, _) in enumerate(extra):
            if k == key:
                extra[index] = (key, name.strip(), value.strip())
                extra[index + 1 :] = [item for item in extra[index + 1 :] if item[0] != key]
                return
        extra.append((key, name.strip(), value.strip()))

    def remove_header(self, name: str) -> None:
        key = header_key(name)
        if key in ("from", "to", "call-id", "cseq", "content-length"):
            raise ValueError(f"{name} is mandatory or derived and cannot be removed")
        if key == "via":
            self.vias.clear()
        elif key == "contact":
            self.contacts.clear()
            self.contact_wildcard = False
        elif key == "route":
            self.routes.clear()
        elif key == "record-route":
            self.record_routes.clear()
        elif key == "max-forwards":
            self.max_forwards = None
        else:
            self._extra = [item for item in self._extra if item[0] != key]

    def _set_eager(self, key: str, value: str, *, append: bool) -> None:
        value = value.strip()
        if key == "via":
            vias = parse_via_list(value)
            self.vias = [*self.vias, *vias] if append else vias
        elif key == "from":
            self.from_ = parse_name_addr(value, "From")
        elif key == "to":
            self.to = parse_name_addr(value, "To")
        elif key == "call-id":
            self.call_id = _check_call_id(value)
        elif key == "cseq":
            self.cseq, self.cseq_method = _parse_cseq(value)
        elif key == "contact":
            self._set_contact(value, append)
        elif key == "route":
            routes = parse_name_addr_list(value, "Route", bracket_only=True)
            self.routes = [*self.routes, *routes] if append else routes
        elif key == "record-route":
            rr = parse_name_addr_list(value, "Record-Route", bracket_only=True)
            self.record_routes = [*self.record_routes, *rr] if append else rr
        elif key == "max-forwards":
            self.max_forwards = _bounded_int(value, _MAX_FORWARDS_LIMIT, "Max-Forwards")
        else:
            raise ValueError("Content-Length is derived from the body")

    def _set_contact(self, value: str, append: bool) -> None:
        if value == "*":
            self.contacts = []
            self.contact_wildcard = True
            return
        contacts = parse_name_addr_list(value, "Contact")
        self.contacts = [*self.contacts, *contacts] if append else contacts
        self.contact_wildcard = False

    def header_items(self) -> list[tuple[str, str]]:
        """Headers in serialization order with canonical long names."""
        items: list[tuple[str, str]] = [("Via", str(v)) for v in self.vias]
        items += [("Route", str(r)) for r in self.routes]
        items += [("Record-Route", str(r)) for r in self.record_routes]
        items.append(("From", str(self.from_)))
        items.append(("To", str(self.to)))
        items.append(("Call-ID", self.call_id))
        items.append(("CSeq", f"{self.cseq} {self.cseq_method}"))
        if self.contact_wildcard:
            items.append(("Contact", "*"))
        items += [("Contact", str(c)) for c in self.contacts]
        if self.max_forwards is not None:
            items.append(("Max-Forwards", str(self.max_forwards)))
        items += [(_CANONICAL.get(key, name), value) for key, name, value in self._extra]
        items.append(("Content-Length", str(len(self.body))))
        return items

    def start_line(self) -> str:
        raise NotImplementedError

    def serialize(self) -> bytes:
        lines = [self.start_line()]
        lines += [f"{name}: {value}" for name, value in self.header_items()]
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8") + self.body

    __bytes__ = serialize

    def _copy_common_into(self, other: SipMessage) -> None:
        other.vias = [v.copy() for v in self.vias]
        other.from_ = self.from_.copy()
        other.to = self.to.copy()
        other.call_id = self.call_id
        other.cseq = self.cseq
        other.cseq_method = self.cseq_method
        other.contacts = [c.copy() for c in self.contacts]
        other.contact_wildcard = self.contact_wildcard
        other.routes = [r.copy() for r in self.routes]
        other.record_routes = [r.copy() for r in self.record_routes]
        other.max_forwards = self.max_forwards
        other.body = self.body
        other._extra = list(self._extra)


class SipRequest(SipMessage):
    __slots__ = ("_uri", "_uri_raw", "method")

    method: str
    _uri: Uri | None
    _uri_raw: str

    @property
    def uri(self) -> Uri:
        """The Request-URI; the parser checks it but may leave building it to first access."""
        uri = self._uri
        if uri is None:
            uri = self._uri = parse_uri(self._uri_raw)
        return uri

    @uri.setter
    def uri(self, value: Uri) -> None:
        self._uri = value
        self._uri_raw = ""

    def __init__(
        self,
        method: str,
        uri: Uri | str,
        *,
        from_: NameAddr,
        to: NameAddr,
        call_id: str,
        cseq: int = 1,
        cseq_method: str | None = None,
        vias: Iterable[Via] | None = None,
        contacts: Iterable[NameAddr] | None = None,
        routes: Iterable[NameAddr] | None = None,
        record_routes: Iterable[NameAddr] | None = None,
        max_forwards: int | None = 70,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] | None = None,
    ) -> None:
        self.method = method
        self.uri = parse_uri(uri) if isinstance(uri, str) else uri
        self._init_common(
            from_=from_,
            to=to,
            call_id=call_id,
            cseq=cseq,
            cseq_method=cseq_method or method,
            vias=vias,
            contacts=contacts,
            routes=routes,
            record_routes=record_routes,
            max_forwards=max_forwards,
            body=body,
            headers=headers,
        )

    def start_line(self) -> str:
        uri = self._uri
        return f"{self.method} {self._uri_raw if uri is None else uri} SIP/2.0"

    def copy(self) -> SipRequest:
        clone = SipRequest.__new__(SipRequest)
        clone.method = self.method
        clone._uri = None if self._uri is None else self._uri.copy()
        clone._uri_raw = self._uri_raw
        self._copy_common_into(clone)
        return clone

    def __repr__(self) -> str:
        return f"<SipRequest {self.method} {self.uri} cseq={self.cseq} call_id={self.call_id!r}>"


class SipResponse(SipMessage):
    __slots__ = ("reason", "status")

    status: int
    reason: str

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        *,
        from_: NameAddr,
        to: NameAddr,
        call_id: str,
        cseq: int,
        cseq_method: str,
        vias: Iterable[Via] | None = None,
        contacts: Iterable[NameAddr] | None = None,
        record_routes: Iterable[NameAddr] | None = None,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] | None = None,
    ) -> None:
        if not 100 <= status <= 699:
            raise ValueError(f"status code out of range: {status}")
        self.status = status
        self.reason = REASON_PHRASES.get(status, "") if reason is None else reason
        self._init_common(
            from_=from_,
            to=to,
            call_id=call_id,
            cseq=cseq,
            cseq_method=cseq_method,
            vias=vias,
            contacts=contacts,
            routes=None,
            record_routes=record_routes,
            max_forwards=None,
            body=body,
            headers=headers,
        )

    @property
    def is_provisional(self) -> bool:
        return self.status < 200

    @property
    def is_final(self) -> bool:
        return self.status >= 200

    def start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    def copy(self) -> SipResponse:
        clone = SipResponse.__new__(SipResponse)
        clone.status = self.status
        clone.reason = self.reason
        self._copy_common_into(clone)
        return clone

    def __repr__(self) -> str:
        return f"<SipResponse {self.status} {self.reason!r} cseq={self.cseq} {self.cseq_method}>"


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    to_tag: str | None = None,
    *,
    copy_record_route: bool = False,
) -> SipResponse:
    """Build a response the way RFC 3261 §8.2.6 asks a UAS to.

    Via, From, To, Call-ID and CSeq are copied (deep copies, so tagging the response's To
    cannot leak into the request). ``to_tag`` is only applied when the request's To has no
    tag yet, since an in-dialog request already carries the dialog's tag. A 100 echoes
    Timestamp (§8.2.6.1). ``copy_record_route`` serves dialog-creating responses (§12.1.1).
    """
    response = SipResponse.__new__(SipResponse)
    if not 100 <= status <= 699:
        raise ValueError(f"status code out of range: {status}")
    response.status = status
    response.reason = REASON_PHRASES.get(status, "") if reason is None else reason
    response.vias = [v.copy() for v in request.vias]
    response.from_ = request.from_.copy()
    response.to = request.to.copy()
    if to_tag is not None and request.to.tag is None:
        response.to.tag = to_tag
    response.call_id = request.call_id
    response.cseq = request.cseq
    response.cseq_method = request.cseq_method
    response.contacts = []
    response.contact_wildcard = False
    response.routes = []
    response.record_routes = [r.copy() for r in request.record_routes] if copy_record_route else []
    response.max_forwards = None
    response.body = b""
    response._extra = []
    if status == 100:
        timestamp = request.header("timestamp")
        if timestamp is not None:
            response._extra.append(("timestamp", "Timestamp", timestamp))
    return response


# -- parser --------------------------------------------------------------------------------

# Fast paths. Each pattern accepts a strict subset of what the general grammar above accepts
# and captures the same pieces, so on a miss the general code runs and decides exactly as it
# always has: the fast paths can make a message cheaper to parse, never parse it differently.
# They use positive character classes only, which the regex engine tests with one bitmap
# lookup per character instead of a chain of negated items and a Unicode category check.
_FAST_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"  # noqa: S105 - RFC 3261 token, not a secret
_FAST_PARAMS = rf"(?:;{_FAST_TOKEN}(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]/?@&$]+)?)*"
_VIA_FAST_RE = re.compile(
    rf"SIP/2\.0/(UDP|TCP|TLS|SCTP|WSS?) ([A-Za-z0-9\-_.]+)(?::([0-9]{{1,5}}))?({_FAST_PARAMS})"
)
_NAME_ADDR_FAST_RE = re.compile(
    rf'(?:({_FAST_TOKEN}(?: {_FAST_TOKEN})*) ?|"([^"\\]*)" ?)?'
    r"<((?:sips?|tel):[A-Za-z0-9\-_.!~*'()%&=+$,;?/:@\[\]]*)>"
    rf"({_FAST_PARAMS})"
)
# Request-URIs that parse_uri() is certain to accept and to print back unchanged (lower-case
# scheme, no password, no IPv6 reference, no headers, a port without leading zeros), so the
# SipUri can be built on first access and an untouched request still serializes its raw text.
_REQUEST_URI_FAST = (
    r"sips?:(?:[A-Za-z0-9\-_.!~*'()%&=+$,]+@)?[A-Za-z0-9\-_.]+(?::([1-9][0-9]{0,4}))?"
    r"(?:;[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]+(?:=[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]+)?)*"
)
_REQUEST_URI_FAST_RE = re.compile(_REQUEST_URI_FAST)
_REQUEST_LINE_FAST_RE = re.compile(
    r"(INVITE|ACK|BYE|CANCEL|OPTIONS|REGISTER|INFO|UPDATE|PRACK|SUBSCRIBE|NOTIFY|REFER|MESSAGE)"
    rf" ({_REQUEST_URI_FAST}) SIP/2\.0"
)

# Header dispatch: one dict hit on the exact spelling gives the lookup key and what to do.
_EXTRA = 0
_VIA = 1
_FROM = 2
_TO = 3
_CALL_ID = 4
_CSEQ = 5
_CONTACT = 6
_MAX_FORWARDS = 7
_CONTENT_LENGTH = 8
_ROUTE = 9
_RECORD_ROUTE = 10
_CHECKED = 11

_KEY_ACTIONS: Final[dict[str, int]] = {
    "via": _VIA,
    "from": _FROM,
    "to": _TO,
    "call-id": _CALL_ID,
    "cseq": _CSEQ,
    "contact": _CONTACT,
    "max-forwards": _MAX_FORWARDS,
    "content-length": _CONTENT_LENGTH,
    "route": _ROUTE,
    "record-route": _RECORD_ROUTE,
    **dict.fromkeys(_VALIDATORS, _CHECKED),
}
_DISPATCH: Final[dict[str, tuple[str, int, str]]] = {
    name: (key, _KEY_ACTIONS.get(key, _EXTRA), name) for name, key in _FAST_KEYS.items()
}


def parse_message(
    data: bytes,
    *,
    max_size: int = MAX_MESSAGE_SIZE,
    max_headers: int = MAX_HEADERS,
    require_content_length: bool = False,
) -> SipRequest | SipResponse:
    """Parse one complete message (a datagram, or a frame cut by the stream framer).

    On datagrams a missing Content-Length means "the rest of the packet" and octets past a
    smaller Content-Length are ignored (RFC 3261 §18.3); streams set
    ``require_content_length``. Any defect raises :class:`SipParseError` and nothing else.
    """
    if len(data) > max_size:
        raise SipParseError(f"message larger than {max_size} bytes")
    if data[:2] == b"\r\n":
        data = data.lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise SipParseError("header section is not terminated by an empty line")
    try:
        head = data[:end].decode()
    except UnicodeDecodeError:
        raise SipParseError("header section is not valid UTF-8") from None
    lines = head.split("\r\n")
    # A lone CR or LF would survive into header values and let a relayed copy of this
    # message smuggle extra header lines past us. Every CRLF went into the split, so any CR
    # or LF left in the pieces is a bare one; joining them is cheaper than counting twice.
    rest = "".join(lines)
    if "\r" in rest or "\n" in rest:
        raise SipParseError("bare CR or LF in header section")
    if len(lines) > max_headers + 1:
        raise SipParseError(f"more than {max_headers} header lines")
    try:
        message, length = _parse_lines(lines)
    except _FoldedLine:
        # Folding is obsolete and rare, so rather than scanning every message up front it is
        # noticed when a continuation line turns up (or when the header before it fails to
        # parse), and the unfolded text is then parsed from scratch.
        message, length = _parse_lines(_FOLD_RE.sub(" ", head).split("\r\n"))
    except SipParseError:
        if _FOLD_RE.search(head) is None:
            raise
        message, length = _parse_lines(_FOLD_RE.sub(" ", head).split("\r\n"))
    body_start = end + 4
    if length is None:
        if require_content_length:
            raise SipParseError("Content-Length is required on stream transports")
        message.body = data[body_start:]
    elif length > len(data) - body_start:
        raise SipParseError("Content-Length is larger than the message body")
    else:
        message.body = data[body_start : body_start + length]
    return message


class _FoldedLine(Exception):
    """Internal signal: a header line was an obsolete LWS continuation."""


_COMMON_METHODS: Final = frozenset(
    [
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "INFO",
        "UPDATE",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "REFER",
        "MESSAGE",
    ]
)


def _parse_request_line(line: str) -> SipRequest:
    fast = _REQUEST_LINE_FAST_RE.fullmatch(line)
    if fast is not None:
        method, target, port = fast.groups()
        if port is None or int(port) <= 65535:
            request = _new_request(SipRequest)
            request.method = method
            request._uri = None  # built by the ``uri`` property on first access
            request._uri_raw = target
            return request
    parts = line.split(" ")
    if len(parts) != 3:
        raise SipParseError(f"malformed request line {_clip(line)}")
    method, target, version = parts
    if method not in _COMMON_METHODS and _TOKEN_RE.fullmatch(method) is None:
        raise SipParseError(f"invalid method {_clip(method)}")
    if version != "SIP/2.0" and version.upper() != "SIP/2.0":
        raise SipParseError(f"unsupported SIP version {_clip(version)}")
    request = SipRequest.__new__(SipRequest)
    request.method = method
    request._uri_raw = target
    fast = _REQUEST_URI_FAST_RE.fullmatch(target)
    if fast is not None and (fast.lastindex is None or int(fast[1]) <= 65535):
        request._uri = None  # built by the ``uri`` property on first access
        return request
    uri = parse_uri(target)
    if type(uri) is SipUri and uri.headers:
        raise SipParseError("Request-URI must not contain headers")
    request._uri = uri
    return request


def _parse_status_line(line: str) -> SipResponse:
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version != "SIP/2.0" and version.upper() != "SIP/2.0":
        raise SipParseError(f"unsupported SIP version {_clip(version)}")
    if len(code) != 3 or not code.isascii() or not code.isdigit() or code[0] not in "123456":
        raise SipParseError(f"invalid status code {_clip(code)}")
    response = SipResponse.__new__(SipResponse)
    response.status = int(code)
    response.reason = reason
    return response


def _name_addr(match: re.Match[str]) -> NameAddr:
    """Build a NameAddr from a :data:`_NAME_ADDR_FAST_RE` match."""
    token, quoted, uri, params = match.groups()
    item = _new_name_addr(NameAddr)
    item._uri = None
    item._uri_raw = uri
    item.display_name = token if quoted is None else quoted
    item._params = None if params else {}
    item._params_raw = params
    return item


_new_name_addr = NameAddr.__new__
_new_via = Via.__new__
_new_request = SipRequest.__new__


def _parse_lines(lines: list[str]) -> tuple[SipRequest | SipResponse, int | None]:
    """Build the message from the start line and header lines; also returns Content-Length."""
    start = lines[0]
    message: SipRequest | SipResponse
    message = _parse_status_line(start) if start[:4] == "SIP/" else _parse_request_line(start)
    vias: list[Via] = []
    contacts: list[NameAddr] = []
    routes: list[NameAddr] = []
    record_routes: list[NameAddr] = []
    extra: list[tuple[str, str, str]] = []
    from_: NameAddr | None = None
    to: NameAddr | None = None
    call_id: str | None = None
    cseq: int | None = None
    cseq_method = ""
    max_forwards: int | None = None
    length: int | None = None
    wildcard = False
    dispatch = _DISPATCH.get
    via_fast = _VIA_FAST_RE.fullmatch
    name_addr_fast = _NAME_ADDR_FAST_RE.fullmatch
    add_extra = extra.append
    rows = iter(lines)
    next(rows)
    for line in rows:
        name, colon, value = line.partition(":")
        entry = dispatch(name)
        if entry is None:
            entry = _slow_entry(line, name, colon)
        key, action, name = entry
        value = value.strip(" \t")
        if action == _EXTRA:
            add_extra((key, name, value))
        elif action == _VIA:
            match = via_fast(value)
            if match is None:
                vias += parse_via_list(value)
                continue
            transport, host, port, params = match.groups()
            via = _new_via(Via)
            via.transport = transport
            via.host = host
            if port is None:
                via.port = None
            elif (number := int(port)) <= 65535:
                via.port = number
            else:
                vias += parse_via_list(value)  # raises with the usual reason
            via._params = None if params else {}
            via._params_raw = params
            vias.append(via)
        elif action <= _TO:
            match = name_addr_fast(value)
            if action == _FROM:
                if from_ is not None:
                    raise SipParseError("duplicate From header")
                from_ = parse_name_addr(value, "From") if match is None else _name_addr(match)
            else:
                if to is not None:
                    raise SipParseError("duplicate To header")
                to = parse_name_addr(value, "To") if match is None else _name_addr(match)
        elif action == _CALL_ID:
            if call_id is not None:
                raise SipParseError("duplicate Call-ID header")
            # Printable ASCII without spaces is what matters for safe relaying; the exact
            # word grammar is only consulted when this cheap test fails.
            if value.isascii() and value.isprintable() and value and " " not in value:
                call_id = value
            else:
                call_id = _check_call_id(value)
        elif action == _CSEQ:
            if cseq is not None:
                raise SipParseError("duplicate CSeq header")
            digits, _, method = value.partition(" ")
            if (
                method in _COMMON_METHODS
                and digits.isdigit()
                and digits.isascii()
                and len(digits) < 10
            ):
                cseq = int(digits)
                cseq_method = method
            else:
                cseq, cseq_method = _parse_cseq(value)
        elif action == _CONTACT:
            if value == "*":
                wildcard = True
                continue
            match = name_addr_fast(value)
            if match is not None:
                contacts.append(_name_addr(match))
            else:
                contacts += parse_name_addr_list(value, "Contact")
        elif action == _MAX_FORWARDS:
            if max_forwards is not None:
                raise SipParseError("duplicate Max-Forwards header")
            if (
                len(value) <= 6
                and value.isdigit()
                and value.isascii()
                and (number := int(value)) <= _MAX_FORWARDS_LIMIT
            ):
                max_forwards = number
            else:
                max_forwards = _bounded_int(value, _MAX_FORWARDS_LIMIT, "Max-Forwards")
        elif action == _CONTENT_LENGTH:
            if length is not None:
                raise SipParseError("duplicate Content-Length header")
            if (
                len(value) <= 6
                and value.isdigit()
                and value.isascii()
                and (number := int(value)) <= MAX_MESSAGE_SIZE * 16
            ):
                length = number
            else:
                length = _bounded_int(value, MAX_MESSAGE_SIZE * 16, "Content-Length")
        elif action == _CHECKED:
            _VALIDATORS[key](value)
            add_extra((key, name, value))
        else:
            what = "Route" if action == _ROUTE else "Record-Route"
            match = name_addr_fast(value)
            if match is not None:
                items = [_name_addr(match)]
            else:
                items = parse_name_addr_list(value, what, bracket_only=True)
            if action == _ROUTE:
                routes += items
            else:
                record_routes += items
    if from_ is None or to is None or call_id is None or cseq is None or not vias:
        raise SipParseError(_missing_reason(from_, to, call_id, cseq, vias))
    if wildcard and contacts:
        raise SipParseError("Contact '*' mixed with other contacts")
    if type(message) is SipRequest and cseq_method != message.method:
        raise SipParseError("CSeq method does not match the request method")
    message.vias = vias
    message.from_ = from_
    message.to = to
    message.call_id = call_id
    message.cseq = cseq
    message.cseq_method = cseq_method
    message.contacts = contacts
    message.contact_wildcard = wildcard
    message.routes = routes
    message.record_routes = record_routes
    message.max_forwards = max_forwards
    message._extra = extra
    return message, length


def _slow_entry(line: str, name: str, colon: str) -> tuple[str, int, str]:
    if line[:1] in (" ", "\t"):
        raise _FoldedLine
    if not colon:
        raise SipParseError(f"header line without colon {_clip(line)}")
    name = name.rstrip(" \t")
    if _TOKEN_RE.fullmatch(name) is None:
        raise SipParseError(f"invalid header name {_clip(name)}")
    key = header_key(name)
    return key, _KEY_ACTIONS.get(key, _EXTRA), name


def _missing_reason(*found: object) -> str:
    names = ("From", "To", "Call-ID", "CSeq", "Via")
    missing = [name for name, value in zip(names, found, strict=True) if value in (None, [])]
    return "missing mandatory header(s): " + ", ".join(missing)
