"""Adaptive jitter buffer for constant-frame-duration audio (G.711, Opus at a fixed ptime).

Frames are keyed by RTP sequence number, so the buffer needs no knowledge of the codec's
timestamp clock to reorder, deduplicate and detect loss. Timestamps and arrival times
only feed the jitter estimate that sizes the playout delay.

Delay adaptation is deliberately simple and audible-glitch-averse:

* it grows by stalling: an empty buffer, or a missing frame while the queue is shallower
  than the target, returns None *without* consuming a sequence number, so the stream is
  shifted one frame later and a merely late frame still gets played;
* it shrinks by skipping: when more frames are queued than the target calls for, the
  oldest one is dropped (at most one per ``pop``), so catching up is gradual.
"""

from __future__ import annotations

import math
from typing import Final, Generic, TypeVar

__all__ = ["JitterBuffer", "JitterStats"]

T = TypeVar("T")

_SEQ_MOD: Final = 1 << 16
_RESYNC_DISTANCE: Final = 3000  # same threshold as RFC 3550 A.1 MAX_DROPOUT
_SKIP_HYSTERESIS: Final = 2  # frames above target tolerated before skipping


class JitterStats:
    __slots__ = (
        "duplicates",
        "late",
        "lost",
        "overflow",
        "played",
        "skipped",
        "stalls",
        "underruns",
    )

    def __init__(self) -> None:
        self.played = 0
        self.lost = 0
        """Sequence numbers that reached playout time with no frame (concealed by caller)."""
        self.late = 0
        """Frames that arrived after their playout time (includes repeats of played ones)."""
        self.duplicates = 0
        self.underruns = 0
        """pop() calls that found the buffer empty (each one adds a frame of delay)."""
        self.stalls = 0
        """pop() calls that waited on a missing frame to grow the delay towards target."""
        self.skipped = 0
        """Frames dropped to reduce the delay."""
        self.overflow = 0
        """Frames dropped because the buffer exceeded its maximum depth."""


class JitterBuffer(Generic[T]):
    """Reorders frames by sequence number and releases one per ``pop()`` at playout time.

    ``pop()`` must be called every ``frame_ms`` by the playout clock. A None result means
    "nothing to play now": the caller conceals (PLC, comfort noise, repeat).
    """

    __slots__ = (
        "_frames",
        "_jitter_ms",
        "_max_frames",
        "_min_frames",
        "_newest",
        "_next",
        "_started",
        "_target_frames",
        "_transit",
        "clock_rate",
        "frame_ms",
        "stats",
    )

    def __init__(
        self,
        *,
        frame_ms: int = 20,
        min_delay_ms: int = 20,
        max_delay_ms: int = 200,
        clock_rate: int = 8000,
    ) -> None:
        if not 0 < frame_ms <= min_delay_ms <= max_delay_ms:
            raise ValueError("need 0 < frame_ms <= min_delay_ms <= max_delay_ms")
        self.frame_ms = frame_ms
        self.clock_rate = clock_rate
        self._min_frames = max(1, min_delay_ms // frame_ms)
        self._max_frames = max(self._min_frames, max_delay_ms // frame_ms)
        self._target_frames = self._min_frames
        self._frames: dict[int, T] = {}
        self._next = 0  # extended sequence number of the next frame to play
        self._newest = 0  # highest extended sequence number seen
        self._started = False
        self._transit: tuple[int, float] | None = None
        self._jitter_ms = 0.0
        self.stats = JitterStats()

    # ------------------------------------------------------------------ properties

    @property
    def jitter_ms(self) -> float:
        """RFC 3550-style smoothed interarrival jitter."""
        return self._jitter_ms

    @property
    def target_delay_ms(self) -> int:
        return self._target_frames * self.frame_ms

    @property
    def depth(self) -> int:
        """Frames from the playout point to the newest received, gaps included."""
        if not self._frames:
            return 0
        return self._newest - self._next + 1

    def __len__(self) -> int:
        return len(self._frames)

    # ------------------------------------------------------------------------ input

    def push(self, seq: int, timestamp: int, frame: T, arrival: float) -> bool:
        """Offer one received frame (``arrival`` in seconds, monotonic). Returns whether it
        was queued; late and duplicate frames are counted and dropped."""
        if not self._frames and not self._started:
            self._next = self._newest = seq
        ext = self._extend(seq)
        if not self._started and ext < self._next:
            self._next = ext  # nothing played yet: an earlier frame simply moves the start
        if ext < self._next:
            self.stats.late += 1
            return False
        if ext in self._frames:
            self.stats.duplicates += 1
            return False
        if ext - self._next >= _RESYNC_DISTANCE:
            self._resync(ext)
        self._frames[ext] = frame
        if ext > self._newest:
            self._newest = ext
        self._update_jitter(timestamp, arrival)
        self._enforce_max()
        return True

    def _extend(self, seq: int) -> int:
        reference = self._newest
        delta = (seq - reference) & 0xFFFF
        if delta >= _SEQ_MOD // 2:
            delta -= _SEQ_MOD
        return reference + delta

    def _resync(self, ext: int) -> None:
        """A jump too large to be reordering (new talk spurt after a long mute, SSRC reuse)."""
        self._frames.clear()
        self._next = self._newest = ext
        self._started = False
        self._transit = None  # the timestamp base usually jumps too

    def _update_jitter(self, timestamp: int, arrival: float) -> None:
        previous = self._transit
        self._transit = (timestamp, arrival)
        if previous is None:
            return
        # Difference of transit times (RFC 3550 A.8), with the timestamp delta taken
        # modulo 2^32 so a timestamp wrap is not mistaken for a 149-hour delay jump.
        ts_delta = (timestamp - previous[0]) & 0xFFFFFFFF
        if ts_delta >= 0x80000000:
            ts_delta -= 0x100000000
        d = (arrival - previous[1]) * 1000.0 - ts_delta * 1000.0 / self.clock_rate
        self._jitter_ms += (abs(d) - self._jitter_ms) / 16.0
        # Cover ~4 mean deviations of delay plus one frame of packetisation slack.
        wanted = math.ceil(4.0 * self._jitter_ms / self.frame_ms - 0.01) + 1
        self._target_frames = min(self._max_frames, max(self._min_frames, wanted))

    def _enforce_max(self) -> None:
        while self._newest - self._next + 1 > self._max_frames:
            if self._frames.pop(self._next, None) is not None:
                self.stats.overflow += 1
            self._next += 1

    # ----------------------------------------------------------------------- output

    def pop(self) -> T | None:
        """The frame to play now, or None (not started yet, lost, or underrun)."""
        frames = self._frames
        if not self._started:
            if not frames or self._newest - self._next + 1 < self._target_frames:
                return None
            self._started = True
            self._next = min(frames)
        if not frames:
            self.stats.underruns += 1
            return None  # stall: the next arrival is played one frame later than planned
        depth = self._newest - self._next + 1
        if depth > self._target_frames + _SKIP_HYSTERESIS:
            if frames.pop(self._next, None) is not None:
                self.stats.skipped += 1
            self._next += 1
            depth -= 1
        frame = frames.pop(self._next, None)
        if frame is None:
            if depth < self._target_frames:
                # Gap at the playout point while below target: wait a frame instead of
                # declaring loss. This is also how the delay grows when jitter rises,
                # and it costs nothing audible since the caller conceals either way.
                self.stats.stalls += 1
                return None
            self.stats.lost += 1
        else:
            self.stats.played += 1
        self._next += 1
        return frame

    def reset(self) -> None:
        """Forget everything (new SSRC / re-INVITE); the jitter estimate is kept."""
        self._frames.clear()
        self._started = False
        self._transit = None
