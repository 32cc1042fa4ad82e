"""Stereo call recording: client on the left, everything the client hears on the right.

Placement. Packets are put on a sample timeline that starts at ``start`` (an event-loop
clock reading). Each source — a (channel, SSRC) pair — is anchored once: its first packet
lands where its arrival time says, and every later packet lands at the anchor plus its RTP
timestamp distance. Jitter therefore never smears audio, reordered packets fall into their
slots and a repeated packet overwrites itself. The arrival clock stays the referee: when a
*newer* packet's RTP position and its arrival disagree by more than a second (the peer
restarted, reused its SSRC, held with a frozen clock, or drifted), the source re-anchors;
an *older* packet that far off, while the stream is flowing, is a straggler and is dropped
(after a second of quiet it can only be a restart, so it re-anchors too).

Each source writes into its own lane, and lanes of one channel are summed with saturation
when emitted, so two simultaneous streams on a channel mix while a duplicate still only
overwrites. Audio older than ``now - 0.5 s`` is final: ``flush`` interleaves it and hands it
to the writer, then the lanes shift down, so memory is bounded by the open window (under
two seconds per active source) whatever the call length.

Writing. A process-wide :class:`RecordingWriter` owns one thread that does all the file I/O
for every recording (a thousand calls must not mean a thousand threads), fed by a
``SimpleQueue``. The event loop only slices arrays and enqueues bytes. Disk errors are
logged and reported in the :class:`RecordingResult`, never raised into the loop.
"""

from __future__ import annotations

import logging
import os
import queue
import struct
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np
import numpy.typing as npt

from pomelo.media.g711 import ALAW_DECODE_TABLE, ULAW_DECODE_TABLE
from pomelo.media.wav import WAV_HEADER_SIZE, wav_header

__all__ = [
    "CLIENT",
    "EMPLOYEE",
    "FINAL_DELAY_S",
    "REANCHOR_S",
    "RecorderStats",
    "RecordingFile",
    "RecordingResult",
    "RecordingWriter",
    "StereoRecorder",
]

CLIENT: Final = 0
"""Channel of audio received from the client (left)."""
EMPLOYEE: Final = 1
"""Channel of audio sent to the client: the employee, prompts, music (right)."""

FINAL_DELAY_S: Final = 0.5
REANCHOR_S: Final = 1.0
_SLACK_S: Final = 0.25  # room for one long packet beyond the re-anchor bound
_MAX_SOURCES: Final = 8  # a peer spraying SSRCs cannot grow a recorder without bound
_IDLE_FREE_S: Final = 2.0  # a quiet source gives its lane memory back after this long
_TS_MOD: Final = 1 << 32
_TS_HALF: Final = 1 << 31
_ZERO_CHUNK_FRAMES: Final = 8000

logger = logging.getLogger(__name__)

Pcm = npt.NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class RecordingResult:
    path: Path
    duration_s: float
    size_bytes: int
    samples: int
    """Sample frames per channel in the file."""
    error: str | None = None
    """Why the file is incomplete (disk full, permission…), or None when it is whole."""


class RecordingFile:
    """The writer's handle on one WAV file; state is owned by the writer thread."""

    __slots__ = (
        "channels",
        "data_bytes",
        "dropped_bytes",
        "error",
        "file",
        "future",
        "path",
        "rate",
        "result",
        "submitted",
    )

    def __init__(self, path: Path, rate: int, channels: int) -> None:
        self.path = path
        self.rate = rate
        self.channels = channels
        self.file: BinaryIO | None = None
        self.data_bytes = 0
        self.dropped_bytes = 0
        self.error: str | None = None
        self.submitted = False
        self.future: Future[RecordingResult] | None = None
        self.result: RecordingResult | None = None

    def _result(self) -> RecordingResult:
        frames = self.data_bytes // (2 * self.channels)
        size = WAV_HEADER_SIZE + self.data_bytes if self.file is not None else 0
        return RecordingResult(self.path, frames / self.rate, size, frames, self.error)


_Command = tuple[RecordingFile, bytes | None]


class RecordingWriter:
    """One background thread writing every recording of the process.

    Call :meth:`stop` on shutdown (from a thread, e.g. ``asyncio.to_thread``): it drains the
    queue and finalises every file still open, so a restart never leaves a WAV whose header
    says zero length.
    """

    def __init__(self, *, name: str = "pomelo-recording-writer") -> None:
        self._name = name
        self._queue: queue.SimpleQueue[_Command | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._open: dict[int, RecordingFile] = {}  # writer thread only

    def open(self, path: Path, *, rate: int, channels: int) -> RecordingFile:
        """A handle for a new file; nothing touches the disk until the first write."""
        return RecordingFile(path, rate, channels)

    def write(self, target: RecordingFile, data: bytes) -> None:
        with self._lock:
            if self._stopped:
                target.dropped_bytes += len(data)
                return
            self._submit(target, data)

    def close(self, target: RecordingFile) -> Future[RecordingResult]:
        """Finalise the header; the future resolves (never raises) once the file is done."""
        future: Future[RecordingResult] = Future()
        with self._lock:
            if target.result is not None:
                future.set_result(target.result)
            elif not self._stopped:
                target.future = future
                self._submit(target, None)
            elif target.submitted:
                target.future = future  # the draining thread finalises it
            else:
                error = "recording writer stopped before the recording started"
                future.set_result(RecordingResult(target.path, 0.0, 0, 0, error))
        return future

    def stop(self, timeout: float | None = None) -> None:
        """Drain the queue, finalise open files and join the thread. Blocking."""
        with self._lock:
            if self._stopped:
                thread = self._thread
            else:
                self._stopped = True
                thread = self._thread
                if thread is not None:
                    self._queue.put(None)
        if thread is not None:
            thread.join(timeout)

    def _submit(self, target: RecordingFile, data: bytes | None) -> None:
        """Enqueue under the lock, so nothing can land behind the stop sentinel."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        target.submitted = True
        self._queue.put((target, data))

    # ------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        while (command := self._queue.get()) is not None:
            target, data = command
            self._open[id(target)] = target  # finalised by stop() if never closed
            try:
                if data is None:
                    self._finish(target)
                else:
                    self._append(target, data)
            except Exception as exc:  # a bug must not kill the thread serving every call
                logger.exception("recording writer failed on %s", target.path)
                self._fail(target, exc)
        for target in list(self._open.values()):
            self._finish(target)

    def _append(self, target: RecordingFile, data: bytes) -> None:
        if target.error is not None:
            target.dropped_bytes += len(data)
            return
        try:
            if target.file is None:
                self._create(target)
            assert target.file is not None
            _write_all(target.file, data)
            target.data_bytes += len(data)
        except OSError as exc:
            target.dropped_bytes += len(data)
            self._fail(target, exc)

    def _create(self, target: RecordingFile) -> None:
        target.path.parent.mkdir(parents=True, exist_ok=True)
        # Unbuffered: every error (ENOSPC) surfaces on the write it belongs to.
        target.file = open(target.path, "wb", buffering=0)  # noqa: SIM115 - kept open
        _write_all(target.file, wav_header(0, rate=target.rate, channels=target.channels))

    def _finish(self, target: RecordingFile) -> None:
        try:
            if target.error is None:
                if target.file is None:
                    self._create(target)  # an empty call still leaves a valid, empty WAV
                assert target.file is not None
                _patch_sizes(target.file, target.data_bytes)
        except Exception as exc:  # whatever happens, the caller's future must resolve
            self._fail(target, exc)
        self._close_file(target)
        self._open.pop(id(target), None)
        result = target._result()
        with self._lock:
            target.result = result
            future = target.future
        if future is not None:
            future.set_result(result)

    def _fail(self, target: RecordingFile, exc: BaseException) -> None:
        if target.error is None:
            reason = str(exc)
            if isinstance(exc, OSError) and exc.strerror:
                reason = exc.strerror if exc.filename is None else f"{exc.strerror}: {exc.filename}"
            target.error = f"{type(exc).__name__}: {reason}"
            logger.error("recording %s failed: %s", target.path, target.error)
        self._close_file(target)

    def _close_file(self, target: RecordingFile) -> None:
        if target.file is not None and not target.file.closed:
            try:
                target.file.close()
            except OSError as exc:
                self._fail(target, exc)


def _write_all(file: BinaryIO, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = file.write(view)
        if not written:
            raise OSError("short write")
        view = view[written:]


def _patch_sizes(file: BinaryIO, data_bytes: int) -> None:
    file.seek(4)
    _write_all(file, struct.pack("<I", min(36 + data_bytes, 0xFFFFFFFF)))
    file.seek(40)
    _write_all(file, struct.pack("<I", min(data_bytes, 0xFFFFFFFF)))
    os.fsync(file.fileno())


# ---------------------------------------------------------------------------- recorder


class RecorderStats:
    __slots__ = ("late_samples", "overflow_samples", "packets", "reanchors")

    def __init__(self) -> None:
        self.packets = 0
        self.late_samples = 0
        """Samples that arrived after their place had been written out (or >1 s late)."""
        self.overflow_samples = 0
        """Samples beyond the open window (a single packet longer than the slack)."""
        self.reanchors = 0


class _Source:
    """Timeline anchor and lane of one (channel, SSRC) stream.

    A G.711 stream's lane holds its codes rather than samples: storing a packet is then a
    plain copy, and decoding happens once per flush over the whole block instead of once
    per packet (the per-packet table lookup was most of the cost). Codes are widened to
    uint16 so the gap marker (256) is not a real code: unlike µ-law, A-law has no code for
    zero, and gaps must decode to exact silence.
    """

    __slots__ = ("channel", "high", "lane", "last_arrival", "ref_pos", "ref_ts", "table")

    def __init__(self, channel: int, timestamp: int, position: int, arrival: float) -> None:
        self.channel = channel
        self.ref_ts = timestamp  # newest packet seen: the reference for signed distances
        self.ref_pos = position
        self.last_arrival = arrival
        self.lane: npt.NDArray[np.int16] | npt.NDArray[np.uint16] | None = None
        """Samples or codes from the recorder's base position on."""
        self.table: Pcm | None = None  # decode table of a code lane; None for samples
        self.high = 0  # lane length in use

    def allocate(self, capacity: int, table: Pcm | None) -> None:
        if table is None:
            self.lane = np.zeros(capacity, dtype=np.int16)
        else:
            self.lane = np.full(capacity, _GAP_CODE, dtype=np.uint16)
        self.table = table

    def samples(self, count: int) -> Pcm:
        assert self.lane is not None
        if self.table is None:
            samples: Pcm = self.lane[:count].view(np.int16)
            return samples
        decoded: Pcm = self.table[self.lane[:count]]
        return decoded

    def to_samples(self) -> None:
        """The stream switched codec mid-call: keep what is buffered, as samples from now on."""
        if self.lane is not None and self.table is not None:
            self.lane = self.table[self.lane]
        self.table = None

    def shift(self, count: int) -> None:
        """Drop the first ``count`` entries: the rest moves down to the new base."""
        lane = self.lane
        assert lane is not None
        fill = 0 if self.table is None else _GAP_CODE
        high = self.high
        if high > count:
            lane[: high - count] = lane[count:high]
            lane[high - count : high] = fill
            self.high = high - count
        else:
            lane[:high] = fill
            self.high = 0


def _lane_table(decode: Pcm) -> Pcm:
    table = np.append(decode, np.int16(0))  # index 256: the gap marker decodes to silence
    table.setflags(write=False)
    return table


_GAP_CODE: Final = 256
_CODEC_TABLES: Final[dict[str, Pcm]] = {
    "PCMU": _lane_table(ULAW_DECODE_TABLE),
    "PCMA": _lane_table(ALAW_DECODE_TABLE),
}


class StereoRecorder:
    """Records one call as a stereo 16-bit WAV; see the module docstring for the rules."""

    __slots__ = (
        "_base",
        "_capacity",
        "_closed",
        "_final_delay",
        "_future",
        "_rate",
        "_reanchor",
        "_sources",
        "_start",
        "_target",
        "_writer",
        "stats",
    )

    def __init__(
        self, path: Path, writer: RecordingWriter, *, start: float, rate: int = 8000
    ) -> None:
        self._writer = writer
        self._target = writer.open(path, rate=rate, channels=2)
        self._start = start
        self._rate = rate
        self._final_delay = round(FINAL_DELAY_S * rate)
        self._reanchor = round(REANCHOR_S * rate)
        self._capacity = round((FINAL_DELAY_S + REANCHOR_S + _SLACK_S) * rate)
        self._base = 0  # timeline position of lane[0]; everything before it is written
        self._sources: dict[int, _Source] = {}
        self._closed = False
        self._future: Future[RecordingResult] | None = None
        self.stats = RecorderStats()

    @property
    def path(self) -> Path:
        return self._target.path

    @property
    def written_samples(self) -> int:
        """Sample frames handed to the writer so far (the final part of the timeline)."""
        return self._base

    def add(self, channel: int, pcm: Pcm, timestamp: int, ssrc: int, arrival: float) -> None:
        """Place one packet's samples (at the recorder's rate) on the timeline."""
        located = self._locate(channel, len(pcm), timestamp, ssrc, arrival)
        if located is not None:
            self._place(located[0], pcm, located[1], arrival, None)

    def add_g711(
        self,
        channel: int,
        payload: bytes,
        codec: str,
        timestamp: int,
        ssrc: int,
        arrival: float,
    ) -> None:
        """Place one G.711 payload (8 kHz recorders only: one code is one sample)."""
        table = _CODEC_TABLES.get(codec)
        if table is None:
            raise ValueError(f"recorder takes PCMU or PCMA, not {codec!r}")
        if self._rate != 8000:
            raise ValueError(f"G.711 is 8 kHz; this recorder runs at {self._rate} Hz")
        located = self._locate(channel, len(payload), timestamp, ssrc, arrival)
        if located is not None:
            codes = np.frombuffer(payload, dtype=np.uint8)
            self._place(located[0], codes, located[1], arrival, table)

    def _locate(
        self, channel: int, count: int, timestamp: int, ssrc: int, arrival: float
    ) -> tuple[_Source, int] | None:
        """The packet's source and timeline position, or None when it is to be dropped."""
        if channel != CLIENT and channel != EMPLOYEE:
            raise ValueError(f"channel must be 0 (client) or 1 (employee), got {channel}")
        if self._closed or count == 0:
            return None
        self.stats.packets += 1
        heard = round((arrival - self._start) * self._rate)
        key = (channel << 32) | ssrc
        source = self._sources.get(key)
        if source is None:
            return self._new_source(key, channel, timestamp, heard, arrival), heard
        delta = (timestamp - source.ref_ts) % _TS_MOD
        if delta >= _TS_HALF:
            delta -= _TS_MOD
        position = source.ref_pos + delta
        if abs(position - heard) > self._reanchor:
            if -2 * self._reanchor <= delta <= 0 and arrival - source.last_arrival < REANCHOR_S:
                self.stats.late_samples += count  # a straggler from a flowing stream
                return None
            self.stats.reanchors += 1
            position = heard
            source.ref_ts, source.ref_pos = timestamp, position
        elif delta > 0:
            source.ref_ts, source.ref_pos = timestamp, position
        source.last_arrival = arrival
        return source, position

    def _new_source(
        self, key: int, channel: int, timestamp: int, position: int, arrival: float
    ) -> _Source:
        if len(self._sources) >= _MAX_SOURCES:
            stalest = min(
                self._sources,
                key=lambda k: (self._sources[k].high > 0, self._sources[k].last_arrival),
            )
            del self._sources[stalest]
        source = _Source(channel, timestamp, position, arrival)
        self._sources[key] = source
        return source

    def _place(
        self,
        source: _Source,
        data: npt.NDArray[np.int16] | npt.NDArray[np.uint8],
        position: int,
        arrival: float,
        table: Pcm | None,
    ) -> None:
        offset = position - self._base
        end = offset + len(data)
        if end > self._capacity:
            self.flush(arrival)  # the owner is late flushing: make room for this packet
            offset = position - self._base
            end = offset + len(data)
        if offset < 0:
            if end <= 0:
                self.stats.late_samples += len(data)
                return
            self.stats.late_samples += -offset
            data = data[-offset:]
            offset = 0
        if end > self._capacity:
            self.stats.overflow_samples += end - self._capacity
            data = data[: self._capacity - offset]
            end = self._capacity
        if source.lane is None:
            source.allocate(self._capacity, table)
        elif source.table is not table:
            source.to_samples()
            if table is not None:
                data = table[data]
        assert source.lane is not None
        source.lane[offset:end] = data
        if end > source.high:
            source.high = end

    def flush(self, now: float) -> None:
        """Write out everything older than ``now - 0.5 s``; call it every few hundred ms."""
        if self._closed:
            return
        final = round((now - self._start) * self._rate) - self._final_delay
        if final > self._base:
            self._emit(final - self._base)
        for source in self._sources.values():
            if source.high == 0 and now - source.last_arrival > _IDLE_FREE_S:
                source.lane = None

    def close(self) -> Future[RecordingResult]:
        """Write out all remaining audio and finalise the WAV; idempotent."""
        if self._future is None:
            pending = max((s.high for s in self._sources.values()), default=0)
            if pending > 0:
                self._emit(pending)
            self._closed = True
            self._sources.clear()
            self._future = self._writer.close(self._target)
        return self._future

    def _emit(self, count: int) -> None:
        span = min(count, self._capacity)
        stereo = np.zeros((span, 2), dtype=np.int16)
        for channel in (CLIENT, EMPLOYEE):
            self._mix_into(stereo[:, channel], channel, span)
        self._writer.write(self._target, stereo.tobytes())
        silence = count - span  # nothing can be pending this far out: it was never heard
        while silence > 0:
            frames = min(silence, _ZERO_CHUNK_FRAMES)
            self._writer.write(self._target, bytes(4 * frames))
            silence -= frames
        self._base += count

    def _mix_into(self, column: Pcm, channel: int, span: int) -> None:
        lanes = [s for s in self._sources.values() if s.channel == channel and s.high > 0]
        if len(lanes) == 1:
            source = lanes[0]
            take = min(span, source.high)
            column[:take] = source.samples(take)
            source.shift(span)
        elif lanes:
            total = np.zeros(span, dtype=np.int32)
            for source in lanes:
                take = min(span, source.high)
                total[:take] += source.samples(take)
                source.shift(span)
            np.clip(total, -32768, 32767, out=total)
            column[:] = total
