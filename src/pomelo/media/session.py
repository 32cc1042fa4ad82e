"""RTP sessions: one UDP socket per call leg, on a port from a configured range.

A session is the PBX's end of one leg's media. It learns where to send from the SDP, but
*latches* to the address the peer's first packet really comes from (symmetric RTP, RFC 4961
style), because phones behind NAT advertise private addresses they cannot be reached at.
After latching, packets from anywhere else are dropped and counted: they are either a stray
stream or someone spraying the port range.

The receive path is the hot path of the media plane (one call is 100 packets a second), so
it reads the fixed header with one ``unpack_from`` and hands the raw datagram on: a relay
forwards it without building objects (``on_packet``); only applications that need audio
(IVR, recording, mixing) pay for decoding (``on_pcm``).

Each session also owns the odd port next to its RTP port for RTCP (RFC 3550 §6). RTCP is a
report every few seconds, so it is parsed into objects; what the peer says about *our* stream
(loss, jitter, round-trip time) is kept as :class:`RemoteReport`. Sending reports is the
engine's job (one tick for all sessions), not a timer per session.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from pomelo.media import g711
from pomelo.media.dtmf import DtmfDetector, DtmfError, DtmfReceiver, dtmf_event_packets
from pomelo.media.rtp import (
    ReportBlock,
    RtcpBye,
    RtcpPacket,
    RtcpReceiverReport,
    RtcpSdes,
    RtcpSenderReport,
    StreamStats,
    build_rtcp_compound,
    ntp_middle32,
    ntp_timestamp,
    parse_rtcp,
)

__all__ = [
    "CODECS",
    "FRAME_SAMPLES",
    "PCMA",
    "PCMU",
    "Codec",
    "MediaPortsExhausted",
    "PacketHandler",
    "PortPool",
    "RemoteReport",
    "RtpSession",
    "SessionCounters",
]

log = logging.getLogger(__name__)

FRAME_SAMPLES: Final = 160
"""20 ms at 8 kHz: the packetisation every G.711 phone defaults to."""

_HEADER = struct.Struct("!BBHII")
_SEQ_TS_SSRC = struct.Struct("!HII")
_SILENCE_ULAW: Final = b"\xff" * FRAME_SAMPLES
_SSRC_SWITCH_QUIET: Final = 0.5
"""Seconds the current source must have been silent before a new SSRC may take over."""
_DTMF_END_LOST: Final = 0.25
"""Seconds of audio after the last telephone-event packet that mean its end was lost."""
_MAX_DATAGRAM: Final = 1500
"""G.711 at the longest packet time phones use (150 ms) fits; anything bigger is an attack or
a broken sender, and would put seconds of noise into a recording in one packet."""
_RTP_HEADER_SIZE: Final = 12
_NEGATIVE_RTT_SLACK: Final = 655
"""1/65536 s units (10 ms): rounding in LSR/DLSR can make a loopback round trip come out a
little below zero; further below is a peer's clock step or bug, and gives no RTT."""


@dataclass(frozen=True, slots=True)
class Codec:
    name: str
    payload_type: int
    clock_rate: int = 8000

    def decode(self, payload: bytes) -> npt.NDArray[np.int16]:
        return g711.ulaw_decode(payload) if self.name == "PCMU" else g711.alaw_decode(payload)

    def encode(self, pcm: npt.NDArray[np.int16]) -> bytes:
        return g711.ulaw_encode(pcm) if self.name == "PCMU" else g711.alaw_encode(pcm)


PCMU: Final = Codec("PCMU", 0)
PCMA: Final = Codec("PCMA", 8)
CODECS: Final = {"PCMU": PCMU, "PCMA": PCMA}


class MediaPortsExhausted(RuntimeError):
    """Every RTP port of the configured range is in use (or taken by another program)."""


InboundTap = Callable[[bytes, str, int, int, float], None]
"""``(payload, codec name, timestamp, ssrc, arrival)``."""

PacketHandler = Callable[["RtpSession", bytes, int, int, int, float], None]
"""``(session, datagram, payload_type, timestamp, ssrc, arrival)`` for every accepted packet."""


class PortPool:
    """Even RTP ports of ``[low, high]`` (the odd neighbour is left for RTCP).

    Ports are handed out round-robin from a random start so that a port freed a moment ago
    (whose late packets may still be in flight) is the last to be reused.
    """

    __slots__ = ("_free", "_in_use", "high", "low")

    def __init__(self, low: int, high: int) -> None:
        if low > high:
            raise ValueError(f"empty RTP port range {low}-{high}")
        self.low, self.high = low, high
        first = low + (low & 1)
        ports = list(range(first, high + 1, 2))
        if not ports:
            raise ValueError(f"RTP port range {low}-{high} holds no even port")
        start = random.randrange(len(ports))
        self._free = ports[start:] + ports[:start]
        self._in_use: set[int] = set()

    @property
    def available(self) -> int:
        return len(self._free)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def take(self) -> int:
        if not self._free:
            raise MediaPortsExhausted(f"no free RTP port in {self.low}-{self.high}")
        port = self._free.pop(0)
        self._in_use.add(port)
        return port

    def give_back(self, port: int) -> None:
        if port in self._in_use:
            self._in_use.discard(port)
            self._free.append(port)


@dataclass(slots=True)
class SessionCounters:
    received: int = 0
    sent: int = 0
    octets_sent: int = 0
    """Payload octets of the packets sent (the SR's octet count): datagram minus 12 bytes."""
    malformed: int = 0
    """Datagrams that are neither RTP nor RTCP, on either port (and broken RTCP)."""
    foreign_source: int = 0
    foreign_ssrc: int = 0
    unknown_payload: int = 0
    rtcp_received: int = 0
    rtcp_sent: int = 0


@dataclass(frozen=True, slots=True)
class RemoteReport:
    """What the peer last reported about *our* stream (its RTCP report block for our SSRC):
    the only view the PBX has of the audio it sends, as the peer hears it."""

    fraction_lost: float
    """Share of our packets lost since the peer's previous report, 0.0 to 1.0."""
    cumulative_lost: int
    highest_seq: int
    """Extended highest sequence number of ours the peer has received."""
    jitter_ms: float
    rtt_ms: float | None
    """Round trip (RFC 3550 §6.4.1); None until the peer echoes one of our SRs."""
    at: float
    """``time.monotonic()`` when the report arrived."""


class RtpSession(asyncio.DatagramProtocol):
    """The PBX's RTP endpoint for one leg."""

    __slots__ = (
        "_dtmf_last",
        "_dtmf_rx",
        "_inband",
        "_last_ts_step",
        "_relay_offsets",
        "_relay_source",
        "_reported_sent",
        "_rtcp_mux",
        "_rtcp_source",
        "_sdp_remote",
        "closed",
        "codec",
        "counters",
        "dtmf_pt",
        "in_ssrc",
        "inbound_tap",
        "last_received",
        "latched",
        "local_address",
        "on_close",
        "on_dtmf",
        "on_packet",
        "on_pcm",
        "pool",
        "remote",
        "remote_report",
        "rtcp_transport",
        "seq",
        "ssrc",
        "stats",
        "timestamp",
        "transport",
    )

    def __init__(self, pool: PortPool | None = None) -> None:
        self.pool = pool
        self.transport: asyncio.DatagramTransport | None = None
        self.local_address: tuple[str, int] = ("", 0)
        self.remote: tuple[str, int] | None = None
        self._sdp_remote: tuple[str, int] | None = None
        self.latched = False
        self.codec: Codec = PCMU
        self.dtmf_pt: int | None = 101
        self.ssrc = random.getrandbits(32)
        self.seq = random.getrandbits(16)
        self.timestamp = random.getrandbits(32)
        self._last_ts_step = 0
        self._relay_source: int | None = None
        self._relay_offsets = (0, 0)
        self.in_ssrc: int | None = None
        self.last_received = 0.0
        self.counters = SessionCounters()
        self.stats: StreamStats | None = None
        self.on_packet: PacketHandler | None = None
        self.on_pcm: Callable[[npt.NDArray[np.int16], int, float], None] | None = None
        self.on_dtmf: Callable[[str], None] | None = None
        self.inbound_tap: InboundTap | None = None
        """Sees every audio payload that is *not* relayed (a recorder during a menu)."""
        self.on_close: Callable[[RtpSession], None] | None = None
        self._dtmf_rx = DtmfReceiver()
        self._dtmf_last = 0.0
        self._inband: DtmfDetector | None = None
        self.rtcp_transport: asyncio.DatagramTransport | None = None
        self._rtcp_source: tuple[str, int] | None = None
        """Where the peer's RTCP comes from, once it came (symmetric, like RTP)."""
        self._rtcp_mux = False
        """The peer's RTCP came on the RTP port (RFC 5761): ours goes back the same way."""
        self._reported_sent = 0
        """``counters.sent`` at our previous report: more since then makes the next an SR."""
        self.remote_report: RemoteReport | None = None
        self.closed = False

    # -- life cycle -------------------------------------------------------------------------

    @classmethod
    async def open(cls, pool: PortPool, host: str = "127.0.0.1") -> RtpSession:
        """Bind a session to the next free even port of ``pool`` and its odd neighbour (RTCP).
        A pair of which another program holds either port is skipped: peers send RTCP to
        our RTP port + 1 whatever we say, so that port must be ours."""
        loop = asyncio.get_running_loop()
        for _ in range(pool.available or 1):
            port = pool.take()
            session = cls(pool)
            try:
                await loop.create_datagram_endpoint(_factory(session), local_addr=(host, port))
            except OSError:
                pool.give_back(port)  # taken by some other program: try the next one
                continue
            try:
                await loop.create_datagram_endpoint(
                    _rtcp_factory(session), local_addr=(host, port + 1)
                )
            except OSError:
                if session.transport is not None:
                    session.transport.close()
                pool.give_back(port)
                continue
            return session
        raise MediaPortsExhausted(f"could not bind any RTP port in {pool.low}-{pool.high}")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        host, port = transport.get_extra_info("sockname")[:2]
        self.local_address = (host, port)

    def close(self) -> None:
        if self.closed:
            return
        if self.remote is not None:
            self.send_report(bye=True)  # the peer may drop our stream's state at once
        self.closed = True
        self.on_packet = self.on_pcm = self.on_dtmf = None
        if self.on_close is not None:
            self.on_close(self)
            self.on_close = None
        if self.transport is not None:
            self.transport.close()
        if self.rtcp_transport is not None:
            self.rtcp_transport.close()
        if self.pool is not None:
            self.pool.give_back(self.local_address[1])

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def error_received(self, exc: Exception) -> None:
        log.debug("RTP %s: %s", self.local_address, exc)  # ICMP port unreachable: peer gone

    # -- configuration --------------------------------------------------------------------

    def configure(
        self, remote: tuple[str, int] | None, codec: Codec, dtmf_pt: int | None = 101
    ) -> None:
        """Apply what the leg's SDP negotiated. A new address from the peer (a re-INVITE
        moving the media) unlatches, so the new stream — new SSRC too — is accepted at once.
        The same SDP address again (a refresh, hold, resume) keeps the latch: behind NAT
        the SDP address is a private one we could not send to."""
        if remote != self._sdp_remote:
            self._sdp_remote = self.remote = remote
            self.latched = False
            self._rtcp_source = None
            self._rtcp_mux = False
            self.remote_report = None
            if remote is not None:
                self.in_ssrc = None
        self.codec = codec
        self.dtmf_pt = dtmf_pt

    def detect_inband(self, enabled: bool = True) -> None:
        """Listen for DTMF tones in the audio (trunks that do not send RFC 4733 events)."""
        self._inband = DtmfDetector() if enabled else None

    # -- receiving ------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        counters = self.counters
        if not 12 <= len(data) <= _MAX_DATAGRAM or data[0] >> 6 != 2:
            counters.malformed += 1
            return
        source = (addr[0], addr[1])
        _b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
        pt = b1 & 0x7F
        if source != self.remote:
            if self.latched or (self.remote is None and self.in_ssrc is not None):
                counters.foreign_source += 1
                return
            if pt != self.codec.payload_type and pt != self.dtmf_pt:
                # Only a stream of what was negotiated may take the session over: a stray
                # datagram must not hijack the media before the phone's first packet.
                counters.foreign_source += 1
                return
            self.remote = source  # type: ignore[assignment]
        self.latched = True
        if 72 <= pt <= 76:
            self.rtcp_received(data, source, muxed=True)  # RTCP multiplexed (RFC 5761)
            return
        now = time.monotonic()
        if ssrc != self.in_ssrc:
            if self.in_ssrc is not None and now - self.last_received < _SSRC_SWITCH_QUIET:
                counters.foreign_ssrc += 1
                return
            self.in_ssrc = ssrc
            self.stats = StreamStats(ssrc)
            self._dtmf_rx = DtmfReceiver()
        stats = self.stats
        if stats is not None:
            stats.update(seq, ts, now)
        self.last_received = now
        counters.received += 1
        handler = self.on_packet
        if handler is not None:
            handler(self, data, pt, ts, ssrc, now)
            return
        self.deliver(data, pt, ts, now)

    def deliver(self, data: bytes, pt: int, ts: int, now: float) -> None:
        """Decode one accepted packet for the applications: audio to ``on_pcm``, key
        presses to ``on_dtmf``. Public so a relay tap can reuse it."""
        if pt == self.codec.payload_type:
            if self._dtmf_last and now - self._dtmf_last > _DTMF_END_LOST:
                self._flush_dtmf()
            if self.inbound_tap is not None:
                self.inbound_tap(_payload(data), self.codec.name, ts, self.in_ssrc or 0, now)
            if self.on_pcm is None and self._inband is None:
                return
            pcm = self.codec.decode(_payload(data))
            if self.on_pcm is not None:
                self.on_pcm(pcm, ts, now)
            if self._inband is not None and self.on_dtmf is not None:
                for digit in self._inband.feed(pcm):
                    self.on_dtmf(digit)
        elif pt == self.dtmf_pt:
            try:
                digits = self._dtmf_rx.feed(ts, _payload(data))
            except DtmfError:
                self.counters.malformed += 1
                return
            self._dtmf_last = now
            if self.on_dtmf is not None:
                for d in digits:
                    self.on_dtmf(d.digit)
        else:
            self.counters.unknown_payload += 1

    def _flush_dtmf(self) -> None:
        """Audio is flowing again but the key press never ended: all three end packets were
        lost. Report the key now rather than at the next press."""
        self._dtmf_last = 0.0
        digits = self._dtmf_rx.flush()
        if self.on_dtmf is not None:
            for d in digits:
                self.on_dtmf(d.digit)

    # -- RTCP -----------------------------------------------------------------------------

    def rtcp_received(
        self, data: bytes, addr: tuple[str | object, ...], *, muxed: bool = False
    ) -> None:
        """One RTCP datagram from the RTCP port (or the RTP port, ``muxed``). Only the host
        the media comes from (or, before it flows, the SDP's host) is heard; its first valid
        packet latches where ours go. Never raises: what does not parse is ``malformed``."""
        counters = self.counters
        host, port = addr[0], addr[1]
        remote = self.remote
        if not isinstance(host, str) or not isinstance(port, int):
            counters.malformed += 1
            return
        source = (host, port)
        latched = self._rtcp_source
        if latched is not None and source != latched:
            counters.foreign_source += 1
            return
        if remote is None or host != remote[0]:
            if self.latched:
                counters.foreign_source += 1
            # else the media has not flowed yet: behind NAT the phone's RTCP may well come
            # from another host than its SDP says; unheard, but no intruder either
            return
        if len(data) > _MAX_DATAGRAM:
            counters.malformed += 1
            return
        try:
            packets = parse_rtcp(data)
        except (ValueError, IndexError, struct.error):
            counters.malformed += 1
            return
        if latched is None:
            self._rtcp_source, self._rtcp_mux = source, muxed
        counters.rtcp_received += 1
        self._take_reports(packets)

    def _take_reports(self, packets: list[RtcpPacket]) -> None:
        now = time.monotonic()
        arrival_ntp = ntp_middle32(*ntp_timestamp(time.time()))
        for packet in packets:
            if isinstance(packet, RtcpSenderReport):
                stats = self.stats
                if stats is not None and packet.ssrc == stats.ssrc:
                    stats.on_sender_report(packet, now)  # echoed as LSR/DLSR in our reports
            elif not isinstance(packet, RtcpReceiverReport):
                continue
            for block in packet.reports:
                if block.ssrc == self.ssrc:
                    self.remote_report = _remote_report(block, self.codec, now, arrival_ntp)

    @property
    def rtcp_remote(self) -> tuple[str, int] | None:
        """Where our RTCP goes: where the peer's comes from, else its RTP port + 1."""
        if self._rtcp_source is not None:
            return self._rtcp_source
        remote = self.remote
        if remote is None or remote[1] >= 0xFFFF:
            return None
        return remote[0], remote[1] + 1

    @property
    def cname(self) -> str:
        return f"pomelo@{self.local_address[0]}"

    def send_report(self, *, bye: bool = False) -> bool:
        """Send one compound RTCP packet: SR if we sent RTP since our previous report, else
        RR (with a report block on the peer's stream once it has one), SDES CNAME, and BYE
        when leaving. False when there is no one to send to."""
        target = self.rtcp_remote
        transport = self.transport if self._rtcp_mux else self.rtcp_transport
        if target is None or transport is None or self.closed:
            return False
        packets: list[RtcpPacket] = [self._report(), RtcpSdes.cname(self.ssrc, self.cname)]
        if bye:
            packets.append(RtcpBye((self.ssrc,)))
        transport.sendto(build_rtcp_compound(packets), target)
        self.counters.rtcp_sent += 1
        return True

    def _report(self) -> RtcpSenderReport | RtcpReceiverReport:
        blocks: tuple[ReportBlock, ...] = ()
        stats = self.stats
        if stats is not None and stats.expected > 0:
            blocks = (stats.report_block(time.monotonic()),)
        counters = self.counters
        if counters.sent == self._reported_sent:
            return RtcpReceiverReport(self.ssrc, blocks)
        self._reported_sent = counters.sent
        seconds, fraction = ntp_timestamp(time.time())
        # The timestamp of our last packet stands for "now": within one packet time of it,
        # and only lip sync (which audio alone does not need) would use it.
        return RtcpSenderReport(
            self.ssrc,
            seconds,
            fraction,
            self.timestamp,
            counters.sent,
            counters.octets_sent,
            blocks,
        )

    # -- sending --------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        """Send a datagram as it is (a relayed packet keeps its sender's SSRC)."""
        remote = self.remote
        transport = self.transport
        if remote is None or transport is None or self.closed:
            return
        transport.sendto(data, remote)
        counters = self.counters
        counters.sent += 1
        counters.octets_sent += len(data) - _RTP_HEADER_SIZE

    def send_relayed(self, data: bytes) -> None:
        """Send another leg's packet as part of *our* stream: its SSRC becomes ours and its
        sequence numbers and timestamps are shifted onto our numbering. The gaps and order
        of the source are kept (the far end still sees loss and reordering as they are),
        but a change of source — the relay after a prompt, the other phone after a transfer,
        the relay after a conference — is not a jump the phone's jitter buffer must cope
        with: some phones (baresip among them) go silent on such a jump."""
        _b0, _b1, seq, ts, ssrc = _HEADER.unpack_from(data)
        if ssrc != self._relay_source:
            self._relay_source = ssrc
            step = self._last_ts_step or FRAME_SAMPLES
            self._relay_offsets = (
                (self.seq + 1 - seq) & 0xFFFF,
                (self.timestamp + step - ts) & 0xFFFFFFFF,
            )
        seq_offset, ts_offset = self._relay_offsets
        out_seq = (seq + seq_offset) & 0xFFFF
        out_ts = (ts + ts_offset) & 0xFFFFFFFF
        packet = bytearray(data)
        _SEQ_TS_SSRC.pack_into(packet, 2, out_seq, out_ts, self.ssrc)
        if (out_seq - self.seq) & 0xFFFF < 0x8000:  # newest so far: our stream continues here
            self.seq, self.timestamp = out_seq, out_ts
            self._last_ts_step = FRAME_SAMPLES
        self.send_raw(bytes(packet))

    def send_payload(self, payload: bytes, pt: int, *, step: int, marker: bool = False) -> None:
        """Send a packet of our own stream (SSRC, sequence and timestamp are ours)."""
        self._relay_source = None  # relaying resumes on fresh offsets after our packets
        self.seq = (self.seq + 1) & 0xFFFF
        self.timestamp = (self.timestamp + self._last_ts_step) & 0xFFFFFFFF
        self._last_ts_step = step
        header = _HEADER.pack(
            0x80, pt | (0x80 if marker else 0), self.seq, self.timestamp, self.ssrc
        )
        self.send_raw(header + payload)

    def send_pcm(self, frame: npt.NDArray[np.int16]) -> bytes:
        """Encode and send one 20 ms frame; returns the payload (for the recorder)."""
        payload = self.codec.encode(frame)
        self.send_payload(payload, self.codec.payload_type, step=len(payload))
        return payload

    def send_silence(self) -> None:
        payload = _SILENCE_ULAW if self.codec.name == "PCMU" else b"\xd5" * FRAME_SAMPLES
        self.send_payload(payload, self.codec.payload_type, step=FRAME_SAMPLES)

    def send_dtmf(self, digit: str, duration_ms: int = 100) -> None:
        """Send a key press as RFC 4733 events (all packets at once: the event's timing is in
        its duration field, which is what receivers go by)."""
        if self.dtmf_pt is None:
            raise DtmfError("the peer did not negotiate telephone-event")
        self._relay_source = None
        self.timestamp = (self.timestamp + self._last_ts_step) & 0xFFFFFFFF
        self._last_ts_step = 0
        start = self.timestamp
        packets = dtmf_event_packets(digit, duration_ms=duration_ms)
        for packet in packets:
            self.seq = (self.seq + 1) & 0xFFFF
            b1 = self.dtmf_pt | (0x80 if packet.marker else 0)
            header = _HEADER.pack(0x80, b1, self.seq, start, self.ssrc)
            self.send_raw(header + packet.payload)
        self._last_ts_step = packets[-1].event.duration if packets else 0


class _RtcpPort(asyncio.DatagramProtocol):
    """The session's RTCP socket (RTP port + 1): hands every datagram to its session."""

    __slots__ = ("session",)

    def __init__(self, session: RtpSession) -> None:
        self.session = session

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.session.rtcp_transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.session.rtcp_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("RTCP %s: %s", self.session.local_address, exc)


def _remote_report(block: ReportBlock, codec: Codec, now: float, arrival_ntp: int) -> RemoteReport:
    rtt: float | None = None
    if block.lsr:
        # RFC 3550 §6.4.1: arrival - LSR - DLSR, all in 1/65536 s of the NTP clock.
        units = (arrival_ntp - block.lsr - block.dlsr) & 0xFFFFFFFF
        if units < 0x80000000:
            rtt = units * 1000 / 65536
        elif units >= 0x100000000 - _NEGATIVE_RTT_SLACK:
            rtt = 0.0
    return RemoteReport(
        fraction_lost=block.fraction_lost / 256,
        cumulative_lost=block.cumulative_lost,
        highest_seq=block.highest_seq,
        jitter_ms=block.jitter * 1000 / codec.clock_rate,
        rtt_ms=rtt,
        at=now,
    )


def _factory(session: RtpSession) -> Callable[[], RtpSession]:
    return lambda: session


def _rtcp_factory(session: RtpSession) -> Callable[[], _RtcpPort]:
    return lambda: _RtcpPort(session)


def _payload(data: bytes) -> bytes:
    """The payload of an RTP datagram, past CSRCs and a header extension, without padding."""
    b0 = data[0]
    offset = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10 and len(data) >= offset + 4:
        offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
    end = len(data)
    if b0 & 0x20 and end > offset:
        end -= data[-1]
    return data[offset:end] if end > offset else b""
