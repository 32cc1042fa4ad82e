"""SDP (RFC 4566) parsing and serialization, and the answerer side of RFC 3264 offer/answer.

The model keeps every line it does not interpret, in order, so a B2BUA can relay a
description it only partly understands without dropping anything.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from pomelo.sip.errors import SdpParseError

__all__ = [
    "DEFAULT_CODECS",
    "Codec",
    "Connection",
    "MediaDescription",
    "Origin",
    "RtpMap",
    "SessionDescription",
    "build_answer",
    "parse_sdp",
]

DIRECTIONS: Final = ("sendrecv", "sendonly", "recvonly", "inactive")
_MIRROR: Final = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


# Static payload types (RFC 3551 table 4) that may legitimately appear without an rtpmap.
def _is_number(text: str, max_digits: int = 10) -> bool:
    """ASCII digits only, and few enough that int() stays cheap and cannot raise."""
    return 0 < len(text) <= max_digits and text.isascii() and text.isdigit()


_STATIC: Final = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    18: ("G729", 8000, 1),
}
# RFC 4566 §5 fixes the order of session-level and media-level lines.
_SESSION_ORDER: Final = "vosiuepcbtrzka"
_MEDIA_ORDER: Final = "micbka"
_SESSION_EXTRAS: Final = frozenset("iuepbrzk")


@dataclass(slots=True)
class Origin:
    username: str
    session_id: str
    session_version: str
    nettype: str
    addrtype: str
    address: str

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(slots=True)
class Connection:
    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(slots=True, frozen=True)
class RtpMap:
    payload_type: int
    encoding: str
    clock_rate: int
    channels: int = 1

    def __str__(self) -> str:
        suffix = f"/{self.channels}" if self.channels != 1 else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{suffix}"


@dataclass(slots=True)
class MediaDescription:
    """One ``m=`` section. ``attributes`` holds ``(name, value)`` pairs, value None for flags."""

    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    connection: Connection | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=list)

    def attribute(self, name: str) -> str | None:
        for key, value in self.attributes:
            if key == name:
                return value
        return None

    def attribute_values(self, name: str) -> list[str | None]:
        return [value for key, value in self.attributes if key == name]

    @property
    def rtpmaps(self) -> dict[int, RtpMap]:
        """Payload type → mapping, including static types the offer left implicit."""
        maps: dict[int, RtpMap] = {}
        for fmt in self.formats:
            if _is_number(fmt) and int(fmt) in _STATIC:
                name, rate, channels = _STATIC[int(fmt)]
                maps[int(fmt)] = RtpMap(int(fmt), name, rate, channels)
        for value in self.attribute_values("rtpmap"):
            rtpmap = _parse_rtpmap(value or "")
            if rtpmap is not None:
                maps[rtpmap.payload_type] = rtpmap
        return maps

    @property
    def fmtp(self) -> dict[int, str]:
        result: dict[int, str] = {}
        for value in self.attribute_values("fmtp"):
            pt, _, params = (value or "").partition(" ")
            if _is_number(pt):
                result[int(pt)] = params.strip()
        return result

    @property
    def ptime(self) -> int | None:
        value = self.attribute("ptime")
        return int(value) if value and _is_number(value) else None

    @property
    def direction(self) -> str:
        """Media direction; RFC 4566 §6 makes sendrecv the default."""
        for key, _ in self.attributes:
            if key in DIRECTIONS:
                return key
        return "sendrecv"

    @direction.setter
    def direction(self, value: str) -> None:
        if value not in DIRECTIONS:
            raise ValueError(f"unknown direction {value!r}")
        self.attributes = [(k, v) for k, v in self.attributes if k not in DIRECTIONS]
        self.attributes.append((value, None))

    @property
    def rtcp(self) -> tuple[int, Connection | None] | None:
        """The RFC 3605 ``a=rtcp`` port and optional address."""
        value = self.attribute("rtcp")
        if not value:
            return None
        parts = value.split()
        if not _is_number(parts[0], 5):
            return None
        if len(parts) == 4:
            return int(parts[0]), Connection(parts[3], parts[1], parts[2])
        return int(parts[0]), None

    def lines(self) -> list[str]:
        count = f"/{self.port_count}" if self.port_count is not None else ""
        out = [f"m={self.media} {self.port}{count} {self.proto} {' '.join(self.formats)}"]
        extras = sorted(self.other, key=lambda item: _MEDIA_ORDER.index(item[0]))
        out += [f"{kind}={value}" for kind, value in extras if kind == "i"]
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"{kind}={value}" for kind, value in extras if kind != "i"]
        out += [f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes]
        return out


@dataclass(slots=True)
class SessionDescription:
    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    timing: list[str] = field(default_factory=lambda: ["0 0"])
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=list)
    version: int = 0

    def attribute(self, name: str) -> str | None:
        for key, value in self.attributes:
            if key == name:
                return value
        return None

    def connection_for(self, media: MediaDescription) -> Connection | None:
        """Media-level c= wins over the session-level one (RFC 4566 §5.7)."""
        return media.connection or self.connection

    def serialize(self) -> bytes:
        return ("\r\n".join(self.lines()) + "\r\n").encode("utf-8")

    def __str__(self) -> str:
        return "\r\n".join(self.lines()) + "\r\n"

    def lines(self) -> list[str]:
        extras = sorted(self.other, key=lambda item: _SESSION_ORDER.index(item[0]))
        out = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        out += [f"{k}={v}" for k, v in extras if k in "iuep"]
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"{k}={v}" for k, v in extras if k == "b"]
        out += [f"t={value}" for value in self.timing]
        out += [f"{k}={v}" for k, v in extras if k in "rzk"]
        out += [f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes]
        for media in self.media:
            out += media.lines()
        return out


def _parse_rtpmap(value: str) -> RtpMap | None:
    pt, _, encoding = value.partition(" ")
    parts = encoding.strip().split("/")
    if not _is_number(pt) or len(parts) < 2 or not _is_number(parts[1]):
        return None
    channels = int(parts[2]) if len(parts) > 2 and _is_number(parts[2]) else 1
    return RtpMap(int(pt), parts[0], int(parts[1]), channels)


def _parse_connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise SdpParseError(f"malformed c= line {value[:60]!r}")
    return Connection(parts[2], parts[0], parts[1])


def _parse_origin(value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise SdpParseError(f"malformed o= line {value[:60]!r}")
    return Origin(*parts)


def _parse_media(value: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 4:
        raise SdpParseError(f"malformed m= line {value[:60]!r}")
    port_text, _, count_text = parts[1].partition("/")
    if not _is_number(port_text, 5) or int(port_text) > 65535:
        raise SdpParseError(f"invalid media port {parts[1][:20]!r}")
    if count_text and not _is_number(count_text, 5):
        raise SdpParseError(f"invalid port count {parts[1][:20]!r}")
    return MediaDescription(
        media=parts[0],
        port=int(port_text),
        proto=parts[2],
        formats=parts[3:],
        port_count=int(count_text) if count_text else None,
    )


def _parse_attribute(value: str) -> tuple[str, str | None]:
    name, colon, rest = value.partition(":")
    if not name:
        raise SdpParseError("empty a= attribute")
    return name, rest if colon else None


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse a session description, tolerating LF-only line ends as RFC 4566 §5 allows."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        raise SdpParseError("SDP is not valid UTF-8") from None
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines or lines[0] != "v=0":
        raise SdpParseError("SDP must start with v=0")
    origin: Origin | None = None
    name: str | None = None
    media: MediaDescription | None = None
    timing: list[str] = []
    conn: Connection | None = None
    attributes: list[tuple[str, str | None]] = []
    other: list[tuple[str, str]] = []
    sections: list[MediaDescription] = []
    for line in lines[1:]:
        if len(line) < 2 or line[1] != "=":
            raise SdpParseError(f"malformed SDP line {line[:60]!r}")
        kind, value = line[0], line[2:]
        if kind == "m":
            media = _parse_media(value)
            sections.append(media)
        elif media is not None:
            _media_line(media, kind, value)
        elif kind == "o":
            origin = _parse_origin(value)
        elif kind == "s":
            name = value
        elif kind == "t":
            timing.append(value)
        elif kind == "c":
            conn = _parse_connection(value)
        elif kind == "a":
            attributes.append(_parse_attribute(value))
        elif kind in _SESSION_EXTRAS:
            other.append((kind, value))
        else:
            raise SdpParseError(f"unknown SDP line type {kind!r}")
    if origin is None or name is None:
        raise SdpParseError("SDP lacks o= or s= line")
    if not timing:
        raise SdpParseError("SDP lacks a t= line")
    return SessionDescription(
        origin=origin,
        session_name=name,
        connection=conn,
        timing=timing,
        attributes=attributes,
        media=sections,
        other=other,
    )


def _media_line(media: MediaDescription, kind: str, value: str) -> None:
    if kind == "a":
        media.attributes.append(_parse_attribute(value))
    elif kind == "c":
        media.connection = _parse_connection(value)
    elif kind in "ibk":
        media.other.append((kind, value))
    else:
        raise SdpParseError(f"SDP line type {kind!r} not allowed in a media section")


# -- offer/answer ----------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Codec:
    """A codec we can receive. ``payload_type`` None means dynamic: the offer's number wins."""

    name: str
    clock_rate: int
    payload_type: int | None = None
    channels: int = 1
    fmtp: str | None = None

    def matches(self, rtpmap: RtpMap) -> bool:
        return (
            rtpmap.encoding.lower() == self.name.lower()
            and rtpmap.clock_rate == self.clock_rate
            and rtpmap.channels == self.channels
        )


DEFAULT_CODECS: Final = (
    Codec("PCMU", 8000, 0),
    Codec("PCMA", 8000, 8),
    Codec("telephone-event", 8000, None, fmtp="0-16"),
)

_RTP_PROFILES: Final = frozenset(("RTP/AVP", "RTP/AVPF"))


def build_answer(
    offer: SessionDescription,
    *,
    address: str,
    ports: Sequence[int],
    codecs: Sequence[Codec] = DEFAULT_CODECS,
    session_id: int | None = None,
    username: str = "-",
    direction: str | None = None,
) -> SessionDescription:
    """Answer ``offer`` per RFC 3264 §6.

    Every offered m-line gets an answer m-line in the same position. Audio RTP streams that
    share at least one real codec with ``codecs`` are accepted on the next port from
    ``ports``; everything else is rejected with port 0. Accepted formats keep the offer's
    order and payload numbers (mandatory for dynamic types such as telephone-event), and the
    direction mirrors the offer's. ``direction`` (e.g. "sendonly" for hold) is combined
    with the mirrored one so that we never claim to send or receive what the offer refused.
    """
    if direction is not None and direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}")
    addrtype = "IP6" if ":" in address else "IP4"
    sid = str(session_id if session_id is not None else int(time.time()))
    answer = SessionDescription(
        origin=Origin(username, sid, sid, "IN", addrtype, address),
        session_name="-",
        connection=Connection(address, "IN", addrtype),
        timing=list(offer.timing),
    )
    available = iter(ports)
    for offered in offer.media:
        formats = _accepted_formats(offered, codecs)
        if formats is None:
            answer.media.append(_rejected(offered))
            continue
        port = next(available, None)
        if port is None:
            raise ValueError("not enough local ports for the accepted media streams")
        answer.media.append(_accepted(offered, formats, port, direction))
    return answer


def _rejected(offered: MediaDescription) -> MediaDescription:
    return MediaDescription(offered.media, 0, offered.proto, list(offered.formats[:1]))


def _accepted_formats(
    offered: MediaDescription, codecs: Sequence[Codec]
) -> list[tuple[RtpMap, Codec]] | None:
    if offered.port == 0 or offered.media != "audio" or offered.proto not in _RTP_PROFILES:
        return None
    maps = offered.rtpmaps
    chosen: list[tuple[RtpMap, Codec]] = []
    for fmt in offered.formats:
        rtpmap = maps.get(int(fmt)) if _is_number(fmt) else None
        if rtpmap is None:
            continue
        codec = next((c for c in codecs if c.matches(rtpmap)), None)
        if codec is not None:
            chosen.append((rtpmap, codec))
    if not any(rtpmap.encoding.lower() != "telephone-event" for rtpmap, _ in chosen):
        return None
    return chosen


def _accepted(
    offered: MediaDescription,
    formats: list[tuple[RtpMap, Codec]],
    port: int,
    direction: str | None,
) -> MediaDescription:
    media = MediaDescription(
        offered.media, port, offered.proto, [str(m.payload_type) for m, _ in formats]
    )
    offered_fmtp = offered.fmtp
    for rtpmap, codec in formats:
        media.attributes.append(("rtpmap", str(rtpmap)))
        fmtp = offered_fmtp.get(rtpmap.payload_type, codec.fmtp)
        if fmtp:
            media.attributes.append(("fmtp", f"{rtpmap.payload_type} {fmtp}"))
    ptime = offered.ptime
    if ptime is not None:
        media.attributes.append(("ptime", str(ptime)))
    media.direction = _combine(_MIRROR[offered.direction], direction)
    return media


def _combine(mirrored: str, wanted: str | None) -> str:
    """Intersect two directions: we may only send if both allow sending, same for receiving."""
    if wanted is None:
        return mirrored
    send = mirrored in ("sendrecv", "sendonly") and wanted in ("sendrecv", "sendonly")
    recv = mirrored in ("sendrecv", "recvonly") and wanted in ("sendrecv", "recvonly")
    if send and recv:
        return "sendrecv"
    if send:
        return "sendonly"
    return "recvonly" if recv else "inactive"
