"""DTMF: RFC 4733 telephone-events and in-band tones (ITU-T Q.23/Q.24).

Out-of-band (RFC 4733) is what SIP trunks and phones normally send; in-band detection is
the fallback for legacy gateways that leave the tones in the audio. Both paths end in the
same thing: each key press reported exactly once.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from pomelo.media.rtp import RtpPacket, build_rtp

__all__ = [
    "DIGITS",
    "DtmfDetector",
    "DtmfDigit",
    "DtmfError",
    "DtmfReceiver",
    "EventPacket",
    "TelephoneEvent",
    "digit_to_event",
    "dtmf_event_packets",
    "dtmf_event_rtp",
    "dtmf_tone",
    "dtmf_tones",
    "event_to_digit",
    "goertzel_power",
]

DIGITS: Final = "0123456789*#ABCD"
"""RFC 4733 §3.2: events 0-15 in this order."""

ROW_FREQS: Final = (697.0, 770.0, 852.0, 941.0)
COL_FREQS: Final = (1209.0, 1336.0, 1477.0, 1633.0)
_KEYPAD: Final = ("123A", "456B", "789C", "*0#D")
_KEY_POSITION: Final = {k: (r, c) for r, keys in enumerate(_KEYPAD) for c, k in enumerate(keys)}

# µ-law full scale (+3.17 dBm0) is a sine of peak 8159 on the 14-bit scale (32636 on 16 bits).
_DBM0_PEAK: Final = 32636.0 / 10 ** (3.17 / 20)

_EVENT = struct.Struct("!BBH")


class DtmfError(ValueError):
    """Malformed telephone-event payload or unknown digit."""


def digit_to_event(digit: str) -> int:
    index = DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if index < 0:
        raise DtmfError(f"not a DTMF digit: {digit!r}")
    return index


def event_to_digit(event: int) -> str | None:
    """The key for events 0-15; None for the other RFC 4733 events (flash, tones, ...)."""
    return DIGITS[event] if 0 <= event < len(DIGITS) else None


# ------------------------------------------------------------------------ RFC 4733 payload


@dataclass(slots=True, frozen=True)
class TelephoneEvent:
    event: int
    end: bool = False
    volume: int = 10
    """Power level as -dBm0 (0-63); DTMF senders normally use 0-36."""
    duration: int = 0
    """Duration so far in timestamp units (8 kHz for the usual telephone-event/8000)."""

    def to_bytes(self) -> bytes:
        if not 0 <= self.event <= 255:
            raise DtmfError(f"event out of range: {self.event}")
        if not 0 <= self.volume <= 63:
            raise DtmfError(f"volume out of range: {self.volume}")
        if not 0 <= self.duration <= 0xFFFF:
            raise DtmfError(f"duration out of range: {self.duration}")
        return _EVENT.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)

    @classmethod
    def parse(cls, payload: bytes | bytearray | memoryview) -> TelephoneEvent:
        # RFC 4733 allows several events in one payload (redundancy); the first is current.
        if len(payload) < 4:
            raise DtmfError(f"telephone-event payload too short: {len(payload)} bytes")
        event, flags, duration = _EVENT.unpack_from(payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)


@dataclass(slots=True, frozen=True)
class EventPacket:
    """One packet of an event: send it ``offset_ms`` after the start, with the event's
    RTP timestamp and the next sequence number."""

    marker: bool
    event: TelephoneEvent
    offset_ms: int

    @property
    def payload(self) -> bytes:
        return self.event.to_bytes()


def dtmf_event_packets(
    digit: str,
    *,
    duration_ms: int = 100,
    volume: int = 10,
    clock_rate: int = 8000,
    interval_ms: int = 50,
    end_repeats: int = 3,
) -> list[EventPacket]:
    """Packets for one key press (RFC 4733 §2.5.1): a marked start, an update every
    ``interval_ms`` with the growing duration, then the end packet sent ``end_repeats``
    times because a lost end would otherwise leave the far side guessing."""
    event = digit_to_event(digit)
    total = duration_ms * clock_rate // 1000
    step = interval_ms * clock_rate // 1000
    if total <= 0 or step <= 0:
        raise DtmfError("duration and interval must be positive")
    if total > 0xFFFF:
        raise DtmfError("events longer than 65535 timestamp units need segmenting")
    packets: list[EventPacket] = []
    elapsed = step
    while elapsed < total:
        packets.append(
            EventPacket(
                marker=not packets,
                event=TelephoneEvent(event, False, volume, elapsed),
                offset_ms=(elapsed - step) * 1000 // clock_rate,
            )
        )
        elapsed += step
    end = TelephoneEvent(event, True, volume, total)
    end_offset = (total - step) * 1000 // clock_rate if packets else 0
    first_is_end = not packets  # a press shorter than one interval is all end packets
    for i in range(end_repeats):
        packets.append(EventPacket(first_is_end and i == 0, end, end_offset))
    return packets


def dtmf_event_rtp(
    packets: list[EventPacket],
    *,
    payload_type: int,
    first_seq: int,
    timestamp: int,
    ssrc: int,
) -> list[bytes]:
    """Serialise event packets: consecutive sequence numbers, one shared timestamp."""
    return [
        build_rtp(payload_type, first_seq + i, timestamp, ssrc, p.payload, marker=p.marker)
        for i, p in enumerate(packets)
    ]


@dataclass(slots=True, frozen=True)
class DtmfDigit:
    digit: str
    duration: int
    """In timestamp units; 0 when detected in-band (where it is not measured)."""
    timestamp: int = 0
    ended: bool = True
    """False when the end packets never arrived and the digit was flushed instead."""


class DtmfReceiver:
    """Turns a telephone-event packet stream into key presses, each reported once.

    An event is identified by its RTP timestamp (RFC 4733 §2.5.1.1), not by the marker bit,
    so losing the start packet costs nothing and the three end packets collapse into one
    report. Digits are reported when the event ends, which also gives the duration; if
    the end never arrives the digit is reported when the next event starts or on flush().
    """

    __slots__ = ("_current", "_done", "_duration", "_event", "_newest")

    def __init__(self) -> None:
        self._done: deque[int] = deque(maxlen=16)
        self._current: int | None = None
        self._event = 0
        self._duration = 0
        self._newest: int | None = None

    def feed(
        self, timestamp: int, payload: bytes | bytearray | memoryview, marker: bool = False
    ) -> list[DtmfDigit]:
        """Process one packet; returns the digits completed by it (usually none or one)."""
        del marker  # deliberately unused: the start packet may be lost
        event = TelephoneEvent.parse(payload)
        timestamp &= 0xFFFFFFFF
        if timestamp in self._done:
            return []
        out: list[DtmfDigit] = []
        if timestamp != self._current:
            if self._newest is not None and not _ts_newer(timestamp, self._newest):
                return []  # a straggler from an event that has been superseded
            out.extend(self._finish(ended=False))
            self._current = timestamp
            self._newest = timestamp
            self._event = event.event
            self._duration = 0
        self._duration = max(self._duration, event.duration)
        if event.end:
            out.extend(self._finish(ended=True))
        return out

    def feed_packet(self, packet: RtpPacket) -> list[DtmfDigit]:
        return self.feed(packet.timestamp, packet.payload, packet.marker)

    def flush(self) -> list[DtmfDigit]:
        """Report an event whose end packets were all lost (call on a timeout or BYE)."""
        return self._finish(ended=False)

    def _finish(self, *, ended: bool) -> list[DtmfDigit]:
        timestamp = self._current
        if timestamp is None:
            return []
        self._current = None
        self._done.append(timestamp)
        digit = event_to_digit(self._event)
        if digit is None:
            return []
        return [DtmfDigit(digit, self._duration, timestamp, ended)]


def _ts_newer(a: int, b: int) -> bool:
    """Serial-number comparison of 32-bit RTP timestamps (RFC 1982)."""
    return 0 < ((a - b) & 0xFFFFFFFF) < 0x80000000


# ------------------------------------------------------------------------------ in-band


def dtmf_tone(
    digit: str,
    duration_ms: float,
    *,
    sample_rate: int = 8000,
    level_dbm0: float = -10.0,
    twist_db: float = 0.0,
) -> npt.NDArray[np.int16]:
    """The dual tone for ``digit``; ``level_dbm0`` is per tone, ``twist_db`` raises the
    high-group tone above the low one (negative for the usual line-induced twist)."""
    row, col = _KEY_POSITION[DIGITS[digit_to_event(digit)]]
    n = np.arange(round(duration_ms * sample_rate / 1000))
    low = _DBM0_PEAK * 10 ** (level_dbm0 / 20)
    high = low * 10 ** (twist_db / 20)
    signal = low * np.sin(2 * np.pi * ROW_FREQS[row] / sample_rate * n) + high * np.sin(
        2 * np.pi * COL_FREQS[col] / sample_rate * n
    )
    pcm: npt.NDArray[np.int16] = np.clip(np.rint(signal), -32768, 32767).astype(np.int16)
    return pcm


def dtmf_tones(
    digits: str,
    *,
    tone_ms: float = 100.0,
    gap_ms: float = 100.0,
    sample_rate: int = 8000,
    level_dbm0: float = -10.0,
) -> npt.NDArray[np.int16]:
    """A dialling sequence with silence between (and after) the tones, for in-band playout."""
    gap = np.zeros(round(gap_ms * sample_rate / 1000), dtype=np.int16)
    parts: list[npt.NDArray[np.int16]] = []
    for digit in digits:
        parts.append(dtmf_tone(digit, tone_ms, sample_rate=sample_rate, level_dbm0=level_dbm0))
        parts.append(gap)
    return np.concatenate(parts) if parts else gap[:0]


def goertzel_power(samples: npt.ArrayLike, freq: float, sample_rate: int = 8000) -> float:
    """Reference Goertzel recursion: |X(f)|² of the block, for one frequency."""
    coeff = 2.0 * math.cos(2.0 * math.pi * freq / sample_rate)
    s1 = s2 = 0.0
    for x in np.asarray(samples, dtype=np.float64).tolist():
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


class DtmfDetector:
    """In-band DTMF detector for 8 kHz linear audio, fed with frames of any size.

    Audio is cut into fixed blocks (102 samples = 12.75 ms by default) and the eight DTMF
    bins are evaluated per block. Numerically this is the Goertzel algorithm's output,
    but computed as one matrix product per batch of blocks: the per-sample recursion in
    Python would cost ~100x more, and numpy has no IIR primitive.

    A block "holds" a digit only if: it is loud enough; the strongest row and column bins
    both clear a level floor; the twist between them is in range; each is clearly above
    the runner-up in its group (relative peak); and the two tones carry most of the block
    energy (this is what rejects speech, music and noise). A digit is reported after
    ``min_blocks`` consecutive blocks agree (2 x 12.75 ms: tones >= 38 ms are always
    caught, tones < 25 ms never are, as Q.24 asks) and the detector re-arms only after
    ``gap_blocks`` blocks without it, so a long press is reported once.
    """

    __slots__ = (
        "_basis",
        "_block",
        "_candidate",
        "_count",
        "_gap_blocks",
        "_held",
        "_max_normal_twist",
        "_max_reverse_twist",
        "_min_blocks",
        "_min_tone_power",
        "_misses",
        "_pending",
        "_purity",
        "_relative_peak",
        "_scale",
    )

    def __init__(
        self,
        *,
        sample_rate: int = 8000,
        block_size: int = 102,
        min_blocks: int = 2,
        gap_blocks: int = 2,
        min_level_dbm0: float = -30.0,
        max_normal_twist_db: float = 8.0,
        max_reverse_twist_db: float = 4.0,
        relative_peak_db: float = 8.0,
        purity: float = 0.6,
    ) -> None:
        self._block = block_size
        n = np.arange(block_size, dtype=np.float64)[:, None]
        omega = 2 * np.pi * np.array(ROW_FREQS + COL_FREQS) / sample_rate
        self._basis = np.concatenate([np.cos(omega * n), np.sin(omega * n)], axis=1)
        # 2|X|²/N² is the mean power of a sine of that frequency: comparable to dBm0 levels.
        self._scale = 2.0 / (block_size * block_size)
        self._min_tone_power = (_DBM0_PEAK * 10 ** (min_level_dbm0 / 20)) ** 2 / 2
        self._max_normal_twist = 10 ** (max_normal_twist_db / 10)
        self._max_reverse_twist = 10 ** (max_reverse_twist_db / 10)
        self._relative_peak = 10 ** (relative_peak_db / 10)
        self._purity = purity
        self._min_blocks = min_blocks
        self._gap_blocks = gap_blocks
        self._pending = np.zeros(0, dtype=np.float64)
        self._candidate: str | None = None
        self._count = 0
        self._held: str | None = None
        self._misses = 0

    def reset(self) -> None:
        self._pending = self._pending[:0]
        self._candidate = self._held = None
        self._count = self._misses = 0

    def feed(self, frame: npt.NDArray[np.int16]) -> list[str]:
        """Consume one frame of samples; returns digits whose press was confirmed in it."""
        data = np.concatenate([self._pending, np.asarray(frame, dtype=np.float64)])
        count = len(data) // self._block
        used = count * self._block
        self._pending = data[used:]
        if not count:
            return []
        blocks = data[:used].reshape(count, self._block)
        energies = np.einsum("ij,ij->i", blocks, blocks) / self._block
        spectra = blocks @ self._basis
        powers = (spectra[:, :8] ** 2 + spectra[:, 8:] ** 2) * self._scale
        found: list[str] = []
        for energy, bins in zip(energies.tolist(), powers.tolist(), strict=True):
            confirmed = self._step(self._classify(energy, bins))
            if confirmed is not None:
                found.append(confirmed)
        return found

    def _classify(self, energy: float, bins: list[float]) -> str | None:
        floor = self._min_tone_power
        if energy < 2 * floor:
            return None
        rows = bins[:4]
        cols = bins[4:]
        row = max(range(4), key=rows.__getitem__)
        col = max(range(4), key=cols.__getitem__)
        row_power = rows[row]
        col_power = cols[col]
        if row_power < floor or col_power < floor:
            return None
        if col_power > row_power * self._max_reverse_twist:
            return None
        if row_power > col_power * self._max_normal_twist:
            return None
        if row_power + col_power < self._purity * energy:
            return None
        peak = self._relative_peak
        for i in range(4):
            if i != row and rows[i] * peak > row_power:
                return None
            if i != col and cols[i] * peak > col_power:
                return None
        return _KEYPAD[row][col]

    def _step(self, digit: str | None) -> str | None:
        if digit is not None and digit == self._candidate:
            self._count += 1
        else:
            self._candidate = digit
            self._count = 1
        if self._held is not None:
            if digit == self._held:
                self._misses = 0
            else:
                self._misses += 1
                if self._misses >= self._gap_blocks:
                    self._held = None
        if self._held is None and digit is not None and self._count >= self._min_blocks:
            self._held = digit
            self._misses = 0
            return digit
        return None
