"""Rational-ratio resampling of int16 PCM with a Kaiser-windowed sinc (polyphase).

Used to bring prompts and WebRTC audio to the 8 kHz of G.711 and back. For a ratio
``up/down`` (reduced), output sample n sits at input position n*down/up; its fractional
part takes only ``up`` distinct values, so one filter row per phase is precomputed and
each output is a dot product with the surrounding input samples.

The low-pass cutoff is placed a little below the lower of the two Nyquist frequencies so
downsampling does not alias and upsampling does not image. Each phase row is normalised
to unit DC gain, which keeps levels exact and avoids a phase-dependent ripple.
"""

from __future__ import annotations

from functools import lru_cache
from math import ceil, gcd
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["Resampler", "resample"]

_ZERO_CROSSINGS: Final = 16  # sinc lobes per side at the cutoff: sets transition width
_ROLLOFF: Final = 0.9  # cutoff as a fraction of the lower Nyquist frequency
_KAISER_BETA: Final = 8.6  # ~80 dB stopband
_MAX_PHASES: Final = 4096  # bounds the table size for odd ratios
_CHUNK: Final = 4096  # outputs per vectorised step, bounds temporary memory

_F64 = npt.NDArray[np.float64]


@lru_cache(maxsize=32)
def _design(up: int, down: int) -> tuple[_F64, int]:
    """Per-phase filter table of shape (up, 2*half) and ``half`` (taps each side)."""
    cutoff = _ROLLOFF * min(1.0, up / down)  # relative to the input Nyquist frequency
    half_width = _ZERO_CROSSINGS / cutoff  # in input samples
    half = ceil(half_width)
    # Row p: output at fractional position p/up past input i0 uses inputs i0-half+1..i0+half.
    frac = np.arange(up, dtype=np.float64)[:, None] / up
    taps = np.arange(2 * half, dtype=np.float64)[None, :]
    distance = frac + (half - 1) - taps
    window = np.i0(_KAISER_BETA * np.sqrt(np.clip(1.0 - (distance / half_width) ** 2, 0, 1)))
    window /= np.i0(_KAISER_BETA)
    window[np.abs(distance) > half_width] = 0.0
    table = np.sinc(cutoff * distance) * window
    table /= table.sum(axis=1, keepdims=True)
    table.setflags(write=False)
    return table, half


class Resampler:
    """Streaming resampler: feeding audio in chunks gives the same samples as one call.

    Output is aligned with the input (output sample 0 is input sample 0); the price is a
    look-ahead of ``half`` input samples, held back until more input or ``flush()``.
    """

    __slots__ = ("_down", "_half", "_history", "_in_total", "_next_out", "_table", "_up")

    def __init__(self, from_rate: int, to_rate: int) -> None:
        if from_rate <= 0 or to_rate <= 0:
            raise ValueError("sample rates must be positive")
        g = gcd(from_rate, to_rate)
        self._up = to_rate // g
        self._down = from_rate // g
        if self._up > _MAX_PHASES:
            raise ValueError(f"unsupported rate ratio {from_rate}->{to_rate}")
        self._table, self._half = _design(self._up, self._down)
        self._reset()

    def _reset(self) -> None:
        # History starts with half-1 zeros standing in for the time before input sample 0.
        self._history = np.zeros(self._half - 1, dtype=np.float64)
        self._in_total = 0
        self._next_out = 0

    @property
    def passthrough(self) -> bool:
        return self._up == self._down

    def process(self, pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        """Resample the next chunk; returns every output sample that is now computable."""
        samples = np.asarray(pcm)
        self._in_total += len(samples)
        if self.passthrough:
            return samples.astype(np.int16, copy=True)
        return _to_int16(self._run(samples.astype(np.float64)))

    def flush(self) -> npt.NDArray[np.int16]:
        """Emit the held-back tail (zero look-ahead) and reset for a new stream."""
        if self.passthrough:
            self._reset()
            return np.zeros(0, dtype=np.int16)
        wanted = -(-self._in_total * self._up // self._down)  # ceil: output covers input
        tail = self._run(np.zeros(self._half + 1, dtype=np.float64))
        tail = tail[: max(0, wanted - (self._next_out - len(tail)))]
        self._reset()
        return _to_int16(tail)

    def _run(self, samples: _F64) -> _F64:
        up, down, half = self._up, self._down, self._half
        buffer = np.concatenate([self._history, samples])
        base = self._next_input_base()
        available = base + len(buffer)  # absolute index one past the last input sample
        # Output n needs inputs up to floor(n*down/up) + half.
        limit = (available - half) * up
        end = (limit - 1) // down + 1 if limit > 0 else 0
        start = self._next_out
        out = np.empty(max(0, end - start), dtype=np.float64)
        taps = np.arange(2 * half)
        for lo in range(start, end, _CHUNK):
            positions = np.arange(lo, min(end, lo + _CHUNK), dtype=np.int64) * down
            first = positions // up - half + 1 - base
            windows = buffer[first[:, None] + taps]
            rows = self._table[positions % up]
            out[lo - start : lo - start + len(positions)] = np.einsum("ij,ij->i", windows, rows)
        self._next_out = max(start, end)
        keep_from = (self._next_out * down) // up - half + 1 - base
        self._history = buffer[keep_from:].copy()
        return out

    def _next_input_base(self) -> int:
        """Absolute input index of history[0]."""
        return (self._next_out * self._down) // self._up - self._half + 1


def _to_int16(samples: _F64) -> npt.NDArray[np.int16]:
    return np.clip(np.rint(samples), -32768, 32767).astype(np.int16)


def resample(pcm: npt.NDArray[np.int16], from_rate: int, to_rate: int) -> npt.NDArray[np.int16]:
    """One-shot resampling; the result has ceil(len * to_rate / from_rate) samples."""
    resampler = Resampler(from_rate, to_rate)
    head = resampler.process(pcm)
    return np.concatenate([head, resampler.flush()])
