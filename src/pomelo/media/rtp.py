"""RTP and RTCP (RFC 3550) wire formats and receiver statistics.

Parsing is strict about structure (anything that would make us read past the datagram or
misinterpret it raises :class:`RtpError`) but lenient about semantics a relay should pass
through untouched (unknown payload types, unknown RTCP packet types, header extensions).
Every error from the parsers is an :class:`RtpError`, so a socket loop needs one ``except``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "RTCP_BYE",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_SR",
    "ReportBlock",
    "RtcpBye",
    "RtcpPacket",
    "RtcpReceiverReport",
    "RtcpSdes",
    "RtcpSenderReport",
    "RtcpUnknown",
    "RtpError",
    "RtpExtension",
    "RtpPacket",
    "StreamStats",
    "build_rtcp_compound",
    "build_rtp",
    "is_rtcp",
    "ntp_middle32",
    "ntp_timestamp",
    "parse_rtcp",
    "parse_rtp",
]

RTP_VERSION: Final = 2
RTP_HEADER_SIZE: Final = 12
RTP_SEQ_MOD: Final = 1 << 16
MAX_DROPOUT: Final = 3000
MAX_MISORDER: Final = 100
MIN_SEQUENTIAL: Final = 2

RTCP_SR: Final = 200
RTCP_RR: Final = 201
RTCP_SDES: Final = 202
RTCP_BYE: Final = 203

SDES_CNAME: Final = 1
NTP_UNIX_OFFSET: Final = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01

_FIXED = struct.Struct("!BBHII")
_EXT = struct.Struct("!HH")
_RTCP_HEADER = struct.Struct("!BBH")
_SR_INFO = struct.Struct("!IIIIII")
_REPORT_BLOCK = struct.Struct("!IIIIII")
_U32 = struct.Struct("!I")


class RtpError(ValueError):
    """Malformed RTP/RTCP datagram."""


@dataclass(slots=True, frozen=True)
class RtpExtension:
    """RFC 3550 §5.3.1 header extension, kept opaque (RFC 8285 parsing belongs elsewhere)."""

    profile: int
    data: bytes


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet. Mutable so a relay can rewrite SSRC/seq/timestamp and re-serialise."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding: int = 0
    """Number of padding octets on the wire (including the count octet); 0 = none."""

    def to_bytes(self) -> bytes:
        return build_rtp(
            self.payload_type,
            self.sequence,
            self.timestamp,
            self.ssrc,
            self.payload,
            marker=self.marker,
            csrcs=self.csrcs,
            extension=self.extension,
            padding=self.padding,
        )


def is_rtcp(data: bytes | bytearray | memoryview) -> bool:
    """RFC 5761 §4 demultiplexing for rtcp-mux: RTCP packet types 192-223 collide with
    RTP marker+PT 64-95, which RTP profiles never assign."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def parse_rtp(data: bytes | bytearray | memoryview) -> RtpPacket:
    """Parse one RTP datagram; raises :class:`RtpError` if it cannot be a valid packet."""
    size = len(data)
    if size < RTP_HEADER_SIZE:
        raise RtpError(f"RTP packet too short: {size} bytes")
    b0, b1, seq, ts, ssrc = _FIXED.unpack_from(data)
    if b0 >> 6 != RTP_VERSION:
        raise RtpError(f"unsupported RTP version {b0 >> 6}")
    offset = RTP_HEADER_SIZE
    cc = b0 & 0x0F
    csrcs: tuple[int, ...] = ()
    if cc:
        end = offset + 4 * cc
        if end > size:
            raise RtpError("CSRC list exceeds packet")
        csrcs = struct.unpack_from(f"!{cc}I", data, offset)
        offset = end
    extension = None
    if b0 & 0x10:
        if offset + 4 > size:
            raise RtpError("extension header exceeds packet")
        profile, words = _EXT.unpack_from(data, offset)
        start = offset + 4
        offset = start + 4 * words
        if offset > size:
            raise RtpError("extension data exceeds packet")
        extension = RtpExtension(profile, bytes(data[start:offset]))
    end = size
    padding = 0
    if b0 & 0x20:
        padding = data[size - 1]
        if padding == 0 or offset + padding > size:
            raise RtpError(f"invalid RTP padding count {padding}")
        end = size - padding
    return RtpPacket(
        b1 & 0x7F,
        seq,
        ts,
        ssrc,
        bytes(data[offset:end]),
        bool(b1 & 0x80),
        csrcs,
        extension,
        padding,
    )


def build_rtp(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes | bytearray | memoryview = b"",
    *,
    marker: bool = False,
    csrcs: tuple[int, ...] = (),
    extension: RtpExtension | None = None,
    padding: int = 0,
) -> bytes:
    """Serialise an RTP packet; ``padding`` is the total padding length (1-255) or 0."""
    if not 0 <= payload_type <= 127:
        raise ValueError(f"payload type out of range: {payload_type}")
    if len(csrcs) > 15:
        raise ValueError("at most 15 CSRCs")
    if not 0 <= padding <= 255:
        raise ValueError(f"padding out of range: {padding}")
    b0 = 0x80 | len(csrcs)
    if padding:
        b0 |= 0x20
    if extension is not None:
        b0 |= 0x10
    header = _FIXED.pack(
        b0,
        (0x80 if marker else 0) | payload_type,
        sequence & 0xFFFF,
        timestamp & 0xFFFFFFFF,
        ssrc & 0xFFFFFFFF,
    )
    if not (csrcs or extension is not None or padding):
        return header + payload
    parts = [header]
    if csrcs:
        parts.append(struct.pack(f"!{len(csrcs)}I", *csrcs))
    if extension is not None:
        data = extension.data
        if len(data) % 4:
            raise ValueError("extension data must be a multiple of 4 bytes")
        parts.append(_EXT.pack(extension.profile, len(data) // 4))
        parts.append(data)
    parts.append(bytes(payload))
    if padding:
        parts.append(bytes(padding - 1) + bytes((padding,)))
    return b"".join(parts)


# --------------------------------------------------------------------------- statistics


class StreamStats:
    """Receiver-side statistics for one SSRC (RFC 3550 A.1, A.3 and A.8).

    Deviation from A.1, on purpose: duplicates are detected with a 128-packet window and
    are *not* counted as received, so ``lost`` is the true loss instead of possibly going
    negative when the network duplicates packets.
    """

    __slots__ = (
        "_bad_seq",
        "_expected_prior",
        "_last_sr_arrival",
        "_last_sr_middle",
        "_received_prior",
        "_transit",
        "_window",
        "base_seq",
        "clock_rate",
        "cycles",
        "duplicates",
        "jitter",
        "max_seq",
        "out_of_order",
        "probation",
        "received",
        "ssrc",
    )

    _WINDOW_BITS: Final = 128
    _WINDOW_MASK: Final = (1 << 128) - 1

    def __init__(self, ssrc: int, *, clock_rate: int = 8000) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.jitter = 0.0
        """Interarrival jitter estimate in timestamp units (A.8, not yet truncated)."""
        self.duplicates = 0
        self.out_of_order = 0
        self._transit: int | None = None
        self._last_sr_middle = 0
        self._last_sr_arrival = 0.0
        self._init_seq(0)
        self.probation = -1  # nothing seen yet; the first packet starts probation

    def _start(self, seq: int) -> None:
        # A.1: a new source is "on probation" until MIN_SEQUENTIAL packets arrive in order.
        self._init_seq(seq)
        self.max_seq = (seq - 1) & 0xFFFF
        self.probation = MIN_SEQUENTIAL

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self._bad_seq = RTP_SEQ_MOD + 1  # so seq == bad_seq is false
        self.cycles = 0
        self.received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._window = 1

    def update(self, seq: int, timestamp: int, arrival: float) -> bool:
        """Account for one packet; ``arrival`` in seconds on any monotonic clock.

        Returns False for packets that should not be treated as part of the stream yet
        (still on probation, a large jump awaiting confirmation, or a duplicate).
        """
        if not self._update_seq(seq):
            return False
        self._update_jitter(timestamp, arrival)
        return True

    def _update_seq(self, seq: int) -> bool:
        if self.probation < 0:
            self._start(seq)
        udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation:
            if seq == (self.max_seq + 1) & 0xFFFF:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    return True
            else:
                self.probation = MIN_SEQUENTIAL - 1
                self.max_seq = seq
            return False
        if udelta == 0:
            self.duplicates += 1
            return False
        if udelta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += RTP_SEQ_MOD
            self.max_seq = seq
            self._window = ((self._window << udelta) | 1) & self._WINDOW_MASK
        elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
            # A very large jump: only believe it if the next packet continues from it.
            if seq == self._bad_seq:
                self._init_seq(seq)
            else:
                self._bad_seq = (seq + 1) & 0xFFFF
                return False
        else:
            behind = RTP_SEQ_MOD - udelta
            if behind < self._WINDOW_BITS:
                bit = 1 << behind
                if self._window & bit:
                    self.duplicates += 1
                    return False
                self._window |= bit
            self.out_of_order += 1
        self.received += 1
        return True

    def _update_jitter(self, timestamp: int, arrival: float) -> None:
        arrival_units = int(arrival * self.clock_rate)
        transit = (arrival_units - timestamp) & 0xFFFFFFFF
        previous = self._transit
        self._transit = transit
        if previous is None:
            return
        d = (transit - previous) & 0xFFFFFFFF
        if d >= 0x80000000:
            d = 0x100000000 - d
        self.jitter += (d - self.jitter) / 16.0

    @property
    def jitter_ms(self) -> float:
        return self.jitter * 1000.0 / self.clock_rate

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        if self.probation or not self.received:
            return 0
        return self.extended_max - self.base_seq + 1

    @property
    def lost(self) -> int:
        return self.expected - self.received

    def on_sender_report(self, sr: RtcpSenderReport, arrival: float) -> None:
        """Remember the last SR so report blocks can carry LSR/DLSR for RTT (§6.4.1)."""
        self._last_sr_middle = ntp_middle32(sr.ntp_seconds, sr.ntp_fraction)
        self._last_sr_arrival = arrival

    def report_block(self, now: float) -> ReportBlock:
        """Build the report block for this source and start a new reporting interval (A.3)."""
        expected = self.expected
        expected_interval = expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min((lost_interval << 8) // expected_interval, 255)
        dlsr = 0
        if self._last_sr_middle:
            dlsr = max(0, int((now - self._last_sr_arrival) * 65536)) & 0xFFFFFFFF
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=fraction,
            cumulative_lost=max(-0x800000, min(self.lost, 0x7FFFFF)),
            highest_seq=self.extended_max & 0xFFFFFFFF,
            jitter=int(self.jitter),
            lsr=self._last_sr_middle,
            dlsr=dlsr,
        )


# --------------------------------------------------------------------------------- RTCP


def ntp_timestamp(unix_time: float) -> tuple[int, int]:
    """Split a Unix time into the 64-bit NTP (seconds, fraction) pair used by SR."""
    seconds = int(unix_time)
    fraction = int((unix_time - seconds) * (1 << 32)) & 0xFFFFFFFF
    return (seconds + NTP_UNIX_OFFSET) & 0xFFFFFFFF, fraction


def ntp_middle32(seconds: int, fraction: int) -> int:
    """The compact NTP form carried in LSR (middle 32 bits of the 64-bit timestamp)."""
    return ((seconds & 0xFFFF) << 16) | (fraction >> 16)


@dataclass(slots=True, frozen=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int
    """Fraction lost since the previous report, as a fixed point number (x/256)."""
    cumulative_lost: int
    """Signed 24-bit cumulative loss."""
    highest_seq: int
    jitter: int
    lsr: int = 0
    dlsr: int = 0

    def to_bytes(self) -> bytes:
        lost = self.cumulative_lost & 0xFFFFFF
        return _REPORT_BLOCK.pack(
            self.ssrc,
            ((self.fraction_lost & 0xFF) << 24) | lost,
            self.highest_seq,
            self.jitter,
            self.lsr,
            self.dlsr,
        )

    @classmethod
    def parse(cls, data: bytes | memoryview, offset: int) -> ReportBlock:
        ssrc, loss, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        lost = loss & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        return cls(ssrc, loss >> 24, lost, highest, jitter, lsr, dlsr)


@dataclass(slots=True, frozen=True)
class RtcpSenderReport:
    ssrc: int
    ntp_seconds: int
    ntp_fraction: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""
    """Profile-specific extension after the report blocks, kept opaque."""

    def to_bytes(self) -> bytes:
        body = _SR_INFO.pack(
            self.ssrc,
            self.ntp_seconds,
            self.ntp_fraction,
            self.rtp_timestamp & 0xFFFFFFFF,
            self.packet_count & 0xFFFFFFFF,
            self.octet_count & 0xFFFFFFFF,
        )
        body += b"".join(r.to_bytes() for r in self.reports) + self.extension
        return _rtcp_packet(RTCP_SR, len(self.reports), body)


@dataclass(slots=True, frozen=True)
class RtcpReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    def to_bytes(self) -> bytes:
        body = _U32.pack(self.ssrc) + b"".join(r.to_bytes() for r in self.reports)
        return _rtcp_packet(RTCP_RR, len(self.reports), body + self.extension)


@dataclass(slots=True, frozen=True)
class RtcpSdes:
    """SDES chunks: (ssrc, ((item type, value), ...)). Every compound packet needs a CNAME."""

    chunks: tuple[tuple[int, tuple[tuple[int, bytes], ...]], ...]

    @classmethod
    def cname(cls, ssrc: int, cname: str) -> RtcpSdes:
        return cls(((ssrc, ((SDES_CNAME, cname.encode()),)),))

    def to_bytes(self) -> bytes:
        parts: list[bytes] = []
        for ssrc, items in self.chunks:
            chunk = bytearray(_U32.pack(ssrc))
            for item_type, value in items:
                if len(value) > 255:
                    raise ValueError("SDES item longer than 255 bytes")
                chunk += bytes((item_type, len(value))) + value
            # Item list ends with a null octet, then pads to a 32-bit boundary.
            chunk += bytes(4 - len(chunk) % 4)
            parts.append(bytes(chunk))
        return _rtcp_packet(RTCP_SDES, len(self.chunks), b"".join(parts))


@dataclass(slots=True, frozen=True)
class RtcpBye:
    ssrcs: tuple[int, ...]
    reason: str = ""

    def to_bytes(self) -> bytes:
        body = b"".join(_U32.pack(s) for s in self.ssrcs)
        if self.reason:
            text = self.reason.encode()[:255]
            tail = bytes((len(text),)) + text
            body += tail + bytes(-len(tail) % 4)
        return _rtcp_packet(RTCP_BYE, len(self.ssrcs), body)


@dataclass(slots=True, frozen=True)
class RtcpUnknown:
    """APP, feedback (RFC 4585), XR, ...: passed through for a relay to forward verbatim."""

    packet_type: int
    count: int
    body: bytes = field(repr=False)

    def to_bytes(self) -> bytes:
        return _rtcp_packet(self.packet_type, self.count, self.body)


RtcpPacket = RtcpSenderReport | RtcpReceiverReport | RtcpSdes | RtcpBye | RtcpUnknown


def _rtcp_packet(packet_type: int, count: int, body: bytes) -> bytes:
    if count > 31:
        raise ValueError("RTCP count field holds at most 31 items")
    if len(body) % 4:
        raise ValueError("RTCP body must be a multiple of 4 bytes")
    return _RTCP_HEADER.pack(0x80 | count, packet_type, len(body) // 4) + body


def build_rtcp_compound(packets: Iterable[RtcpPacket]) -> bytes:
    """Concatenate packets; RFC 3550 §6.1 wants SR/RR first and an SDES CNAME included."""
    return b"".join(p.to_bytes() for p in packets)


def parse_rtcp(data: bytes | bytearray | memoryview) -> list[RtcpPacket]:
    """Parse a compound RTCP datagram (§6.1): every sub-packet must be version 2, lengths
    must tile the datagram exactly, and only the last one may be padded.

    The "first packet is SR/RR" rule of A.2 is not enforced so RFC 5506 reduced-size RTCP
    (a lone feedback packet) is accepted.
    """
    view = memoryview(bytes(data))
    size = len(view)
    if size < 4:
        raise RtpError("RTCP packet too short")
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < size:
        if offset + 4 > size:
            raise RtpError("truncated RTCP header")
        b0, packet_type, words = _RTCP_HEADER.unpack_from(view, offset)
        if b0 >> 6 != RTP_VERSION:
            raise RtpError(f"unsupported RTCP version {b0 >> 6}")
        end = offset + 4 + 4 * words
        if end > size:
            raise RtpError("RTCP length exceeds datagram")
        body_end = end
        if b0 & 0x20:
            if end != size:
                raise RtpError("padding only allowed on the last RTCP packet")
            pad = view[end - 1]
            if pad == 0 or pad > 4 * words:
                raise RtpError(f"invalid RTCP padding count {pad}")
            body_end = end - pad
        packets.append(_parse_one(packet_type, b0 & 0x1F, view[offset + 4 : body_end]))
        offset = end
    return packets


def _parse_one(packet_type: int, count: int, body: memoryview) -> RtcpPacket:
    if packet_type == RTCP_SR:
        return _parse_sr(count, body)
    if packet_type == RTCP_RR:
        return _parse_rr(count, body)
    if packet_type == RTCP_SDES:
        return _parse_sdes(count, body)
    if packet_type == RTCP_BYE:
        return _parse_bye(count, body)
    return RtcpUnknown(packet_type, count, bytes(body))


def _report_blocks(count: int, body: memoryview, offset: int) -> tuple[ReportBlock, ...]:
    if offset + 24 * count > len(body):
        raise RtpError("report blocks exceed RTCP packet")
    return tuple(ReportBlock.parse(body, offset + 24 * i) for i in range(count))


def _parse_sr(count: int, body: memoryview) -> RtcpSenderReport:
    if len(body) < 24:
        raise RtpError("SR too short")
    ssrc, sec, frac, rtp_ts, packets, octets = _SR_INFO.unpack_from(body)
    blocks = _report_blocks(count, body, 24)
    extension = bytes(body[24 + 24 * count :])
    return RtcpSenderReport(ssrc, sec, frac, rtp_ts, packets, octets, blocks, extension)


def _parse_rr(count: int, body: memoryview) -> RtcpReceiverReport:
    if len(body) < 4:
        raise RtpError("RR too short")
    (ssrc,) = _U32.unpack_from(body)
    blocks = _report_blocks(count, body, 4)
    return RtcpReceiverReport(ssrc, blocks, bytes(body[4 + 24 * count :]))


def _parse_sdes(count: int, body: memoryview) -> RtcpSdes:
    chunks: list[tuple[int, tuple[tuple[int, bytes], ...]]] = []
    offset = 0
    size = len(body)
    for _ in range(count):
        if offset + 4 > size:
            raise RtpError("SDES chunk exceeds packet")
        (ssrc,) = _U32.unpack_from(body, offset)
        offset += 4
        items: list[tuple[int, bytes]] = []
        while True:
            if offset >= size:
                raise RtpError("unterminated SDES item list")
            item_type = body[offset]
            if item_type == 0:
                offset = (offset + 4) & ~3  # skip the null octet and pad to the next word
                break
            if offset + 2 > size or offset + 2 + body[offset + 1] > size:
                raise RtpError("SDES item exceeds packet")
            length = body[offset + 1]
            items.append((item_type, bytes(body[offset + 2 : offset + 2 + length])))
            offset += 2 + length
        chunks.append((ssrc, tuple(items)))
    return RtcpSdes(tuple(chunks))


def _parse_bye(count: int, body: memoryview) -> RtcpBye:
    end = 4 * count
    if end > len(body):
        raise RtpError("BYE SSRC list exceeds packet")
    ssrcs = struct.unpack_from(f"!{count}I", body)
    reason = ""
    if end < len(body):
        length = body[end]
        if end + 1 + length > len(body):
            raise RtpError("BYE reason exceeds packet")
        reason = bytes(body[end + 1 : end + 1 + length]).decode("utf-8", "replace")
    return RtcpBye(tuple(ssrcs), reason)
