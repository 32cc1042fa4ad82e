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
from pomelo.media.rtp import StreamStats

__all__ = [
    "CODECS",
    "FRAME_SAMPLES",
    "PCMA",
    "PCMU",
    "Codec",
    "MediaPortsExhausted",
    "PacketHandler",
    "PortPool",
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
_DTMF_END_LOST: Final = 0.25
"""Seconds of audio after the last telephone-event packet that mean its end was lost."""
"""Seconds the current source must have been silent before a new SSRC may take over."""
_MAX_DATAGRAM: Final = 1500
"""G.711 at the longest packet time phones use (150 ms) fits; anything bigger is an attack or
a broken sender, and would put seconds of noise into a recording in one packet."""


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
    malformed: int = 0
    foreign_source: int = 0
    foreign_ssrc: int = 0
    unknown_payload: int = 0


class RtpSession(asyncio.DatagramProtocol):
    """The PBX's RTP endpoint for one leg."""

    __slots__ = (
        "_dtmf_last",
        "_dtmf_rx",
        "_inband",
        "_last_ts_step",
        "_relay_offsets",
        "_relay_source",
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
        self.closed = False

    # -- life cycle -------------------------------------------------------------------------

    @classmethod
    async def open(cls, pool: PortPool, host: str = "127.0.0.1") -> RtpSession:
        """Bind a session to the next free even port of ``pool``."""
        loop = asyncio.get_running_loop()
        for _ in range(pool.available or 1):
            port = pool.take()
            session = cls(pool)
            try:
                await loop.create_datagram_endpoint(_factory(session), local_addr=(host, port))
            except OSError:
                pool.give_back(port)  # taken by some other program: try the next one
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
        self.closed = True
        self.on_packet = self.on_pcm = self.on_dtmf = None
        if self.on_close is not None:
            self.on_close(self)
            self.on_close = None
        if self.transport is not None:
            self.transport.close()
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
            return  # RTCP multiplexed on the RTP port: nothing we need from it
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

    # -- sending --------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        """Send a datagram as it is (a relayed packet keeps its sender's SSRC)."""
        remote = self.remote
        transport = self.transport
        if remote is None or transport is None or self.closed:
            return
        transport.sendto(data, remote)
        self.counters.sent += 1

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


def _factory(session: RtpSession) -> Callable[[], RtpSession]:
    return lambda: session


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
