"""Audio between aiortc and the G.711 side: 8 kHz mono int16 frames of 20 ms both ways.

Browser → SIP: aiortc decodes the browser's Opus into ``av.AudioFrame`` (48 kHz, usually
stereo); :class:`Downsampler` mixes it to mono, resamples it to 8 kHz with
:mod:`pomelo.media.resample` and cuts it into the 160-sample frames an RTP session sends.

SIP → browser: RTP arrives in bursts and sometimes not at all (hold, a silent trunk), but
aiortc pulls one frame per ``recv()`` and stamps packets from the frame's ``pts``, so
:class:`SipAudioTrack` paces itself on the loop clock, plays what was queued and fills the
gaps with silence. Its queue is short and drops the oldest frame when full: after a burst the
browser hears the latest audio rather than an ever-growing delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
from collections import deque
from collections.abc import Callable
from typing import Final

import av
import numpy as np
import numpy.typing as npt
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from pomelo.media.resample import Resampler

__all__ = [
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "Downsampler",
    "PcmSink",
    "SipAudioTrack",
    "pump_browser_audio",
]

SAMPLE_RATE: Final = 8000
FRAME_SAMPLES: Final = 160
"""20 ms at 8 kHz: one RTP packet of G.711."""
_PTIME: Final = FRAME_SAMPLES / SAMPLE_RATE
_TIME_BASE: Final = fractions.Fraction(1, SAMPLE_RATE)
_QUEUE_FRAMES: Final = 10
"""At most 200 ms of SIP audio waits for the browser; older frames are dropped."""

PcmSink = Callable[[npt.NDArray[np.int16]], None]


class SipAudioTrack(MediaStreamTrack):
    """The browser's incoming audio: frames pushed from RTP, pulled by aiortc's encoder."""

    kind = "audio"

    __slots__ = ("_frames", "_pts", "_start")

    def __init__(self) -> None:
        super().__init__()
        self._frames: deque[npt.NDArray[np.int16]] = deque(maxlen=_QUEUE_FRAMES)
        self._start: float | None = None
        self._pts = 0

    def push(self, pcm: npt.NDArray[np.int16]) -> None:
        """Queue one 20 ms frame (160 samples) decoded from RTP."""
        if len(pcm) == FRAME_SAMPLES:
            self._frames.append(pcm)

    @property
    def queued(self) -> int:
        return len(self._frames)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            self._pts += FRAME_SAMPLES
            delay = self._start + self._pts / SAMPLE_RATE - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -5 * _PTIME:
                # The loop stalled: restart the schedule instead of bursting to catch up.
                self._start = loop.time() - self._pts / SAMPLE_RATE
        samples = self._frames.popleft() if self._frames else _SILENCE
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = _TIME_BASE
        return frame


_SILENCE: Final = np.zeros(FRAME_SAMPLES, dtype=np.int16)


class Downsampler:
    """Any ``av.AudioFrame`` stream → 8 kHz mono int16 frames of exactly 160 samples."""

    __slots__ = ("_pending", "_rate", "_resampler")

    def __init__(self) -> None:
        self._rate = 0
        self._resampler: Resampler | None = None
        self._pending = np.zeros(0, dtype=np.int16)

    def feed(self, frame: av.AudioFrame) -> list[npt.NDArray[np.int16]]:
        mono = _mono_int16(frame)
        rate = int(frame.sample_rate)
        if rate != self._rate or self._resampler is None:
            # A new rate (renegotiation) starts a new stream; what was pending is stale.
            self._rate = rate
            self._resampler = Resampler(rate, SAMPLE_RATE)
            self._pending = np.zeros(0, dtype=np.int16)
        out = self._resampler.process(mono)
        pending = np.concatenate([self._pending, out]) if len(self._pending) else out
        count = len(pending) // FRAME_SAMPLES
        frames = [pending[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES].copy() for i in range(count)]
        self._pending = pending[count * FRAME_SAMPLES :].copy()
        return frames


def _mono_int16(frame: av.AudioFrame) -> npt.NDArray[np.int16]:
    """Average the channels; float formats are scaled to the int16 range."""
    data = frame.to_ndarray()
    channels = max(1, len(frame.layout.channels))
    if frame.format.is_planar:
        mixed = data.astype(np.float64).mean(axis=0)
    else:
        mixed = data.reshape(-1, channels).astype(np.float64).mean(axis=1)
    if np.issubdtype(data.dtype, np.floating):
        mixed = mixed * 32767.0
    elif data.dtype == np.int32:
        mixed = mixed / 65536.0
    out: npt.NDArray[np.int16] = np.clip(np.rint(mixed), -32768, 32767).astype(np.int16)
    return out


async def pump_browser_audio(track: MediaStreamTrack, sink: PcmSink) -> None:
    """Feed the browser's decoded audio to ``sink`` as 20 ms frames until the track ends."""
    down = Downsampler()
    with contextlib.suppress(MediaStreamError):
        while True:
            frame = await track.recv()
            if not isinstance(frame, av.AudioFrame):
                continue
            for pcm in down.feed(frame):
                sink(pcm)
