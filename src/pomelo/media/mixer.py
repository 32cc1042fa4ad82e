"""Audio mixer for conferences and call supervision (pure numpy, no I/O).

Every participant gets his own mix: the sum of the frames of the speakers he hears. Who
hears whom is a boolean hear-matrix, so one mechanism covers an open conference, a
listen-only supervisor, a whisper to the agent and a barge-in; switching between them is
just rewriting a few matrix cells between two 20 ms ticks, with no stream renegotiation.

Two ways to compute the mixes:

* the open conference (everybody hears everybody else, the overwhelmingly common case):
  one int32 total of the active speakers, then each output is the total minus the
  participant's own frame: O(speakers + participants) frame additions;
* any other matrix: a matrix product of the hear-matrix restricted to the active speakers
  with the stacked speaker frames, in float64 (exact for these integer sums, and BLAS-fast).

Sums saturate at the int16 limits, like a hardware mixer clipping, rather than wrapping
around into loud noise. A participant who hears nobody (or only silent speakers) gets a
zero frame, never None, so a caller can always encode and send exactly one frame per tick.

Muting is kept apart from the hear-matrix so that unmuting restores whatever the matrix
said, whichever supervision mode was switched in the meantime.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["FRAME_SAMPLES", "Mixer", "SupervisorMode", "supervise"]

FRAME_SAMPLES: Final = 160  # 20 ms at 8 kHz
_INT16_MIN: Final = -32768
_INT16_MAX: Final = 32767

Frame = npt.NDArray[np.int16]


class Mixer:
    """Per-listener mixes of int16 frames, driven by a hear-matrix.

    Participants join hearing everybody already present and heard by all of them (an open
    conference); ``set_hearing`` and ``supervise`` carve exceptions out of that.
    """

    __slots__ = (
        "_frame_samples",
        "_full",
        "_hear",
        "_ids",
        "_index",
        "_muted",
        "_weights_cache",
    )

    def __init__(self, frame_samples: int = FRAME_SAMPLES) -> None:
        if frame_samples <= 0:
            raise ValueError("frame_samples must be positive")
        self._frame_samples = frame_samples
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        # _hear[listener, speaker]; the diagonal is always False (nobody hears himself).
        self._hear = np.zeros((0, 0), dtype=np.bool_)
        self._muted: set[str] = set()
        self._full = True  # the matrix is the open conference: all True off the diagonal
        self._weights_cache: npt.NDArray[np.float64] | None = None  # _hear as float64

    # -- membership -------------------------------------------------------------------

    @property
    def participants(self) -> tuple[str, ...]:
        return tuple(self._ids)

    def __contains__(self, participant: object) -> bool:
        return participant in self._index

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, participant: str) -> None:
        """Join the open conference: hears everybody present, heard by everybody present."""
        if participant in self._index:
            raise ValueError(f"participant {participant!r} is already in the mix")
        n = len(self._ids)
        hear = np.ones((n + 1, n + 1), dtype=np.bool_)
        hear[:n, :n] = self._hear
        hear[n, n] = False
        self._hear = hear
        self._ids.append(participant)
        self._index[participant] = n
        self._weights_cache = None

    def remove(self, participant: str) -> None:
        """Leave the mix; the others keep their hearing relations among themselves."""
        slot = self._slot(participant)
        self._hear = np.delete(np.delete(self._hear, slot, axis=0), slot, axis=1)
        del self._ids[slot]
        self._index = {pid: i for i, pid in enumerate(self._ids)}
        self._muted.discard(participant)
        self._refresh_full()

    # -- hearing and muting -----------------------------------------------------------

    def hears(self, listener: str, speaker: str) -> bool:
        """What the matrix says, regardless of mute (see ``is_muted``)."""
        return bool(self._hear[self._slot(listener), self._slot(speaker)])

    def set_hearing(self, listener: str, speaker: str, hears: bool) -> None:
        li, si = self._slot(listener), self._slot(speaker)
        if li == si:
            if hears:
                raise ValueError("a participant never hears himself")
            return
        if bool(self._hear[li, si]) == hears:
            return
        self._hear[li, si] = hears
        self._refresh_full()

    def mute(self, participant: str, muted: bool = True) -> None:
        """A muted participant is heard by nobody; he still hears as before."""
        self._slot(participant)
        if muted:
            self._muted.add(participant)
        else:
            self._muted.discard(participant)

    def is_muted(self, participant: str) -> bool:
        self._slot(participant)
        return participant in self._muted

    # -- mixing -----------------------------------------------------------------------

    def mix(self, frames: Mapping[str, Frame | None]) -> dict[str, Frame]:
        """One output frame per participant for this tick.

        ``frames`` holds what each participant said during the tick: a missing key or None
        is silence (no packet arrived, DTX). Frames of ids that are not (or no longer) in the
        mix are ignored, since a packet may still be in flight when someone leaves. The
        outputs are rows of one fresh array: valid until the caller chooses to change them.
        """
        spoken, active = self._spoken(frames)
        sums: npt.NDArray[np.int32] | npt.NDArray[np.float64]
        if not active:
            out = np.zeros((len(self._ids), self._frame_samples), dtype=np.int16)
        else:
            if self._full:
                sums = np.add.reduce(spoken, axis=0) - spoken
            elif len(active) == len(self._ids):
                sums = self._weights() @ spoken.astype(np.float64)
            else:  # skip the silent columns: large conferences have few talkers at a time
                sums = self._weights()[:, active] @ spoken[active].astype(np.float64)
            # minimum/maximum in place: cheaper per call than np.clip on frame-sized arrays
            np.maximum(np.minimum(sums, _INT16_MAX, out=sums), _INT16_MIN, out=sums)
            out = sums.astype(np.int16)
        return {pid: out[i] for i, pid in enumerate(self._ids)}

    def _spoken(
        self, frames: Mapping[str, Frame | None]
    ) -> tuple[npt.NDArray[np.int32], list[int]]:
        """Every participant's audible frame as an int32 row (zeros if silent or muted)."""
        spoken = np.zeros((len(self._ids), self._frame_samples), dtype=np.int32)
        active: list[int] = []
        for pid, frame in frames.items():
            if frame is None:
                continue
            slot = self._index.get(pid)
            if slot is None or pid in self._muted:
                continue
            self._check_frame(pid, frame)
            spoken[slot] = frame
            active.append(slot)
        return spoken, active

    def _weights(self) -> npt.NDArray[np.float64]:
        if self._weights_cache is None:
            self._weights_cache = self._hear.astype(np.float64)
        return self._weights_cache

    def _check_frame(self, pid: str, frame: Frame) -> None:
        if frame.dtype != np.int16 or frame.shape != (self._frame_samples,):
            raise ValueError(
                f"frame of {pid!r} must be int16[{self._frame_samples}], "
                f"got {frame.dtype}{list(frame.shape)}"
            )

    # -- internals --------------------------------------------------------------------

    def _slot(self, participant: str) -> int:
        try:
            return self._index[participant]
        except KeyError:
            raise KeyError(f"no participant {participant!r} in the mix") from None

    def _refresh_full(self) -> None:
        """Called after every matrix change: also drops the cached float matrix."""
        self._weights_cache = None
        n = len(self._ids)
        self._full = int(np.count_nonzero(self._hear)) == n * (n - 1)


class SupervisorMode(enum.Enum):
    """How a supervisor takes part in an agent's two-party call."""

    LISTEN = "listen"
    """The supervisor hears client and agent; nobody hears him."""
    WHISPER = "whisper"
    """The supervisor hears both; only the agent hears him (coaching)."""
    BARGE = "barge"
    """A three-way conference: everybody hears everybody."""


def supervise(
    mixer: Mixer, supervisor: str, client: str, employee: str, mode: SupervisorMode
) -> None:
    """Set the six hearing relations between the three parties for ``mode``.

    Callable any time during the call and as often as wanted: it writes absolute values,
    so repeating a mode changes nothing and any mode can follow any other. Missing
    participants are added first. Client and employee always hear each other; other
    participants of the mixer (if any) are left as they are. Mute states are untouched.
    """
    parties = (supervisor, client, employee)
    if len(set(parties)) != len(parties):
        raise ValueError("supervisor, client and employee must be three different participants")
    _ensure(mixer, parties)
    mixer.set_hearing(client, employee, True)
    mixer.set_hearing(employee, client, True)
    mixer.set_hearing(supervisor, client, True)
    mixer.set_hearing(supervisor, employee, True)
    mixer.set_hearing(employee, supervisor, mode is not SupervisorMode.LISTEN)
    mixer.set_hearing(client, supervisor, mode is SupervisorMode.BARGE)


def _ensure(mixer: Mixer, participants: Iterable[str]) -> None:
    for pid in participants:
        if pid not in mixer:
            mixer.add(pid)
