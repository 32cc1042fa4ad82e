"""Moving audio between sessions: the two-party relay and prompt playback.

**Relay.** A two-party call forwards datagrams as they are when both legs negotiated the same
G.711 law and payload numbers (the common case: no decoding, no object per packet). When the
laws differ the payload goes through a 256-byte translation table (µ-law ↔ A-law is a
byte-for-byte mapping) and the payload type octet is rewritten; telephone-events are forwarded
with the other leg's event payload type. Anything else is dropped and counted.

**Taps.** A recorder watches the *client's* leg: what arrives from the client (left channel)
and what the PBX sends to the client (right channel), so one recording holds the employee, the
prompts and the music exactly as the client heard them.

**Playback.** Prompts are encoded once, up front, in the leg's law, so each 20 ms tick costs a
slice and a send, which is what lets one core serve thousands of IVR streams.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from pomelo.media import g711
from pomelo.media.engine import MediaClock
from pomelo.media.session import FRAME_SAMPLES, RtpSession, _payload

__all__ = ["Playback", "RecorderTap", "Relay"]

_ULAW_TO_ALAW: Final = g711.ulaw_to_alaw(bytes(range(256)))
_ALAW_TO_ULAW: Final = g711.alaw_to_ulaw(bytes(range(256)))
_B1 = struct.Struct("!B")


class RecorderTap(Protocol):
    def add_g711(
        self, channel: int, payload: bytes, codec: str, timestamp: int, ssrc: int, arrival: float
    ) -> None: ...


class Relay:
    """Joins two sessions; ``client`` (``a`` or ``b``) names the leg a recording follows."""

    __slots__ = ("a", "b", "client", "dropped", "recorder")

    def __init__(self, a: RtpSession, b: RtpSession) -> None:
        self.a, self.b = a, b
        self.client: RtpSession = a
        self.recorder: RecorderTap | None = None
        self.dropped = 0

    def start(self) -> None:
        self.a.on_packet = self._forward
        self.b.on_packet = self._forward

    def stop(self) -> None:
        for session in (self.a, self.b):
            if session.on_packet == self._forward:
                session.on_packet = None

    def _forward(
        self, src: RtpSession, data: bytes, pt: int, ts: int, ssrc: int, now: float
    ) -> None:
        dst = self.b if src is self.a else self.a
        src_codec = src.codec
        if pt == src_codec.payload_type:
            dst_codec = dst.codec
            sent = data  # in the source's law: what the recording must decode as such
            if dst_codec.name != src_codec.name:
                data = _transcode(data, dst_codec.payload_type, dst_codec.name == "PCMA")
            elif dst_codec.payload_type != pt:
                data = data[:1] + _B1.pack((data[1] & 0x80) | dst_codec.payload_type) + data[2:]
            dst.send_relayed(data)
            recorder = self.recorder
            if recorder is not None:
                if src is self.client:
                    recorder.add_g711(0, _payload(sent), src_codec.name, ts, ssrc, now)
                else:
                    recorder.add_g711(1, _payload(data), dst.codec.name, ts, ssrc, now)
        elif pt == src.dtmf_pt:
            if dst.dtmf_pt is not None:
                if dst.dtmf_pt != pt:
                    data = data[:1] + _B1.pack((data[1] & 0x80) | dst.dtmf_pt) + data[2:]
                dst.send_relayed(data)
            src.deliver(data, pt, ts, now)
        else:
            self.dropped += 1


def _transcode(data: bytes, dst_pt: int, to_alaw: bool) -> bytes:
    table = _ULAW_TO_ALAW if to_alaw else _ALAW_TO_ULAW
    offset = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x30:  # extension or padding: dropped (with their flags), CSRCs kept
        payload = _payload(data)
        return (
            _B1.pack(data[0] & 0xCF)
            + _B1.pack((data[1] & 0x80) | dst_pt)
            + data[2:offset]
            + payload.translate(table)
        )
    return (
        data[:1]
        + _B1.pack((data[1] & 0x80) | dst_pt)
        + data[2:offset]
        + data[offset:].translate(table)
    )


class Playback:
    """Plays PCM (a prompt, a TTS phrase, music) into a session on the media clock.

    ``done`` resolves when the audio ends (never for a loop) or the playback is stopped.
    """

    __slots__ = (
        "_encoded",
        "_loop",
        "_offset",
        "_token",
        "clock",
        "done",
        "pcm",
        "recorder",
        "session",
    )

    def __init__(
        self,
        session: RtpSession,
        clock: MediaClock,
        pcm: npt.NDArray[np.int16],
        *,
        loop: bool = False,
        recorder: RecorderTap | None = None,
    ) -> None:
        self.session = session
        self.clock = clock
        pad = (-len(pcm)) % FRAME_SAMPLES
        if pad:
            pcm = np.concatenate([pcm, np.zeros(pad, dtype=np.int16)])
        self.pcm = pcm
        self._encoded = session.codec.encode(pcm) if len(pcm) else b""
        self._offset = 0
        self._loop = loop
        self.recorder = recorder
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._token: int | None = None

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 8000

    def start(self) -> Playback:
        if not self._encoded:
            self._finish()
            return self
        self._token = self.clock.subscribe(self._tick)
        return self

    def _tick(self, now: float) -> None:
        session = self.session
        if session.closed:
            self.stop()
            return
        end = self._offset + FRAME_SAMPLES
        chunk = self._encoded[self._offset : end]
        codec = session.codec
        session.send_payload(chunk, codec.payload_type, step=FRAME_SAMPLES)
        if self.recorder is not None:
            self.recorder.add_g711(
                1, chunk, codec.name, session.timestamp, session.ssrc, time.monotonic()
            )
        self._offset = end
        if self._offset >= len(self._encoded):
            if self._loop:
                self._offset = 0
            else:
                self.stop()

    def stop(self) -> None:
        if self._token is not None:
            self.clock.unsubscribe(self._token)
            self._token = None
        self._finish()

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


OnDigit = Callable[[str], None]
