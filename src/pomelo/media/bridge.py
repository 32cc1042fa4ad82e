"""Mixing several sessions on the media clock: conferences and supervised calls.

A two-party call is relayed packet by packet (:mod:`pomelo.media.relay`); as soon as a third
party joins — a supervisor listening, whispering or barging, or a conference — the sessions
move to a :class:`MixBridge`: each incoming packet is decoded into a per-member adaptive
jitter buffer (reordering, steady playout), and every 20 ms tick takes one frame per member,
lets the :class:`~pomelo.media.mixer.Mixer` build what each member hears, and sends it
encoded in that member's own law. The buffer holds at most 120 ms: a member whose packets
arrive in a burst loses the oldest audio rather than drifting behind the others.

The recorder keeps following the client: what he says (left) as it arrives, what he hears
(right) as the bridge sends it — a whisper, which he does not hear, is not in the recording.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import numpy as np
import numpy.typing as npt

from pomelo.media.engine import MediaClock
from pomelo.media.jitter import JitterBuffer
from pomelo.media.mixer import Mixer
from pomelo.media.relay import RecorderTap
from pomelo.media.session import FRAME_SAMPLES, RtpSession, _payload

__all__ = ["MixBridge"]

MAX_QUEUED: Final = 4 * FRAME_SAMPLES
"""Samples a member may have waiting (80 ms); beyond that the oldest are dropped."""

_EMPTY = np.zeros(0, dtype=np.int16)


class _Member:
    """One participant's incoming audio: 20 ms packets go through an adaptive jitter
    buffer (reordered, played at a steady pace); other packet sizes through a sample queue."""

    __slots__ = ("jitter", "pending", "session", "ssrc")

    def __init__(self, session: RtpSession) -> None:
        self.session = session
        self.pending: npt.NDArray[np.int16] = _EMPTY
        self.jitter: JitterBuffer[npt.NDArray[np.int16]] = JitterBuffer(max_delay_ms=120)
        self.ssrc: int | None = None

    def push_packet(
        self, pcm: npt.NDArray[np.int16], seq: int, ts: int, ssrc: int, now: float
    ) -> None:
        if len(pcm) != FRAME_SAMPLES:
            self.push(pcm)
            return
        if ssrc != self.ssrc:
            self.ssrc = ssrc
            self.jitter.reset()
        self.jitter.push(seq, ts, pcm, now)

    def push(self, pcm: npt.NDArray[np.int16]) -> None:
        pending = np.concatenate([self.pending, pcm]) if len(self.pending) else pcm
        if len(pending) > MAX_QUEUED:
            pending = pending[-MAX_QUEUED:]
        self.pending = pending

    def pop(self) -> npt.NDArray[np.int16] | None:
        if len(self.pending) < FRAME_SAMPLES:
            return self.jitter.pop()
        frame, self.pending = self.pending[:FRAME_SAMPLES], self.pending[FRAME_SAMPLES:]
        return frame


class MixBridge:
    """Sessions by participant id, mixed every tick by ``mixer``'s hearing rules."""

    __slots__ = ("_token", "client", "clock", "members", "mixer", "on_mix", "recorder")

    def __init__(self, clock: MediaClock) -> None:
        self.clock = clock
        self.mixer = Mixer()
        self.members: dict[str, _Member] = {}
        self.client: str | None = None
        self.recorder: RecorderTap | None = None
        self.on_mix: Callable[[npt.NDArray[np.int16]], None] | None = None
        """Sees, every tick, everybody's audio summed (a conference recording)."""
        self._token: int | None = None

    def add(self, participant: str, session: RtpSession) -> None:
        self.members[participant] = _Member(session)
        self.mixer.add(participant)
        session.on_packet = self._receiver(participant)
        if self._token is None:
            self._token = self.clock.subscribe(self._tick)

    def remove(self, participant: str) -> RtpSession | None:
        member = self.members.pop(participant, None)
        if participant in self.mixer:
            self.mixer.remove(participant)
        if member is None:
            return None
        member.session.on_packet = None
        if not self.members:
            self.stop()
        return member.session

    def stop(self) -> None:
        if self._token is not None:
            self.clock.unsubscribe(self._token)
            self._token = None
        for member in self.members.values():
            member.session.on_packet = None
        self.members.clear()

    def _receiver(
        self, participant: str
    ) -> Callable[[RtpSession, bytes, int, int, int, float], None]:
        def receive(
            session: RtpSession, data: bytes, pt: int, ts: int, ssrc: int, now: float
        ) -> None:
            member = self.members.get(participant)
            if member is None:
                return
            codec = session.codec
            if pt == codec.payload_type:
                payload = _payload(data)
                seq = (data[2] << 8) | data[3]
                member.push_packet(codec.decode(payload), seq, ts, ssrc, now)
                if participant == self.client and self.recorder is not None:
                    self.recorder.add_g711(0, payload, codec.name, ts, ssrc, now)
            elif pt == session.dtmf_pt:
                session.deliver(data, pt, ts, now)

        return receive

    def _tick(self, _now: float) -> None:
        frames = {pid: member.pop() for pid, member in self.members.items()}
        heard = self.mixer.mix(frames)
        if self.on_mix is not None:
            spoken = [f for f in frames.values() if f is not None]
            total = np.zeros(FRAME_SAMPLES, dtype=np.int32)
            for frame in spoken:
                total += frame
            self.on_mix(np.clip(total, -32768, 32767).astype(np.int16))
        arrival = time.monotonic()
        for pid, frame in heard.items():
            member = self.members.get(pid)
            if member is None or member.session.closed:
                continue
            session = member.session
            payload = session.send_pcm(frame)
            if pid == self.client and self.recorder is not None:
                self.recorder.add_g711(
                    1, payload, session.codec.name, session.timestamp, session.ssrc, arrival
                )
