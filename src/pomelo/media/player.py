"""Frame sources: what the media plane plays to a caller, one 20 ms frame per tick.

Sources are pure and pull-driven: the call's media task asks for a frame each packet time
and encodes it, so a source does no I/O and owns no timer. Files are loaded (off the loop)
before a source is built from them.

Frames handed out are read-only views where possible (no copy per packet); a consumer that
needs to change samples copies first, which numpy enforces by raising on a write.
``done`` answers "would the next ``read()`` return None?", so a scenario can move on without
consuming a frame.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = [
    "FRAME_MS",
    "FRAME_SAMPLES",
    "RATE",
    "Clip",
    "FrameSource",
    "Loop",
    "Playlist",
    "Silence",
    "Tone",
]

RATE: Final = 8000
FRAME_MS: Final = 20
FRAME_SAMPLES: Final = RATE * FRAME_MS // 1000

Frame = npt.NDArray[np.int16]


def _frozen(samples: Frame) -> Frame:
    samples.setflags(write=False)
    return samples


_ZERO_FRAME: Final = _frozen(np.zeros(FRAME_SAMPLES, dtype=np.int16))


@runtime_checkable
class FrameSource(Protocol):
    """Anything that yields exactly ``FRAME_SAMPLES`` int16 samples per ``read()``."""

    @property
    def done(self) -> bool: ...

    def read(self) -> Frame | None: ...


def _as_pcm(pcm: npt.ArrayLike) -> Frame:
    samples = np.asarray(pcm)
    if samples.ndim != 1:
        raise ValueError(f"expected mono samples, got an array of shape {samples.shape}")
    if samples.dtype != np.int16:
        raise TypeError(f"expected int16 samples, got {samples.dtype}")
    return samples


def _frames_for_ms(ms: float) -> int:
    if ms < 0:
        raise ValueError(f"duration must not be negative, got {ms} ms")
    return math.ceil(ms / FRAME_MS)


class Clip:
    """Plays samples once; the last partial frame is padded with silence."""

    __slots__ = ("_frames", "_next")

    def __init__(self, pcm: npt.ArrayLike) -> None:
        samples = _as_pcm(pcm)
        count = -(-len(samples) // FRAME_SAMPLES)
        padded = np.zeros(count * FRAME_SAMPLES, dtype=np.int16)
        padded[: len(samples)] = samples
        self._frames = _frozen(padded.reshape(count, FRAME_SAMPLES))
        self._next = 0

    @property
    def done(self) -> bool:
        return self._next >= len(self._frames)

    @property
    def remaining_frames(self) -> int:
        return len(self._frames) - self._next

    def read(self) -> Frame | None:
        if self._next >= len(self._frames):
            return None
        frame: Frame = self._frames[self._next]
        self._next += 1
        return frame

    def rewind(self) -> None:
        """Start again from the first frame (e.g. an IVR menu repeated after no input)."""
        self._next = 0


class Loop:
    """Plays samples forever (music on hold), seamlessly across the loop point.

    The wrap does not pad: frame boundaries drift through the clip, so a clip whose length
    is not a multiple of 20 ms loops without a gap of silence each round.
    """

    __slots__ = ("_length", "_position", "_samples")

    def __init__(self, pcm: npt.ArrayLike) -> None:
        samples = _as_pcm(pcm)
        if len(samples) == 0:
            raise ValueError("cannot loop an empty clip")
        self._length = len(samples)
        # Appending one frame's worth of the (cyclic) start lets every read be one slice.
        self._samples = _frozen(np.concatenate([samples, np.resize(samples, FRAME_SAMPLES)]))
        self._position = 0

    @property
    def done(self) -> bool:
        return False

    def read(self) -> Frame:
        start = self._position
        self._position = (start + FRAME_SAMPLES) % self._length
        frame: Frame = self._samples[start : start + FRAME_SAMPLES]
        return frame


class Silence:
    """Silence for ``ms`` milliseconds (rounded up to whole frames), or forever if None."""

    __slots__ = ("_left",)

    def __init__(self, ms: float | None = None) -> None:
        self._left: int | None = None if ms is None else _frames_for_ms(ms)

    @property
    def done(self) -> bool:
        return self._left == 0

    def read(self) -> Frame | None:
        if self._left is None:
            return _ZERO_FRAME
        if self._left == 0:
            return None
        self._left -= 1
        return _ZERO_FRAME


class Tone:
    """A sine tone (ringback, beeps); phase-continuous across frames, forever if ms is None."""

    __slots__ = ("_amplitude", "_left", "_phase", "_step")

    def __init__(self, freq: float, ms: float | None, *, level_dbfs: float = -12.0) -> None:
        if not 0 < freq < RATE / 2:
            raise ValueError(f"tone frequency must be between 0 and {RATE // 2} Hz, got {freq}")
        if level_dbfs > 0:
            raise ValueError(f"tone level must be at most 0 dBFS, got {level_dbfs}")
        self._left: int | None = None if ms is None else _frames_for_ms(ms)
        self._step = 2 * math.pi * freq / RATE
        self._amplitude = 32767 * 10 ** (level_dbfs / 20)
        self._phase = 0.0

    @property
    def done(self) -> bool:
        return self._left == 0

    def read(self) -> Frame | None:
        if self._left is not None:
            if self._left == 0:
                return None
            self._left -= 1
        angles = self._phase + self._step * np.arange(FRAME_SAMPLES)
        self._phase = (self._phase + self._step * FRAME_SAMPLES) % (2 * math.pi)
        frame: Frame = np.rint(self._amplitude * np.sin(angles)).astype(np.int16)
        return frame


class Playlist:
    """Plays sources one after another; an endless source (Loop) ends the sequence there."""

    __slots__ = ("_index", "_sources")

    def __init__(self, sources: Iterable[FrameSource] = ()) -> None:
        self._sources: list[FrameSource] = list(sources)
        self._index = 0

    def append(self, source: FrameSource) -> None:
        self._sources.append(source)

    def _skip_finished(self) -> FrameSource | None:
        while self._index < len(self._sources):
            current = self._sources[self._index]
            if not current.done:
                return current
            self._index += 1
        return None

    @property
    def done(self) -> bool:
        return self._skip_finished() is None

    def read(self) -> Frame | None:
        while (current := self._skip_finished()) is not None:
            frame = current.read()
            if frame is not None:
                return frame
            self._index += 1  # a source that ended without saying so in ``done``
        return None
