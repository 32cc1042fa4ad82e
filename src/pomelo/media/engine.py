"""The media plane of one process: the RTP port pool, the 20 ms clock, and the watchdog.

Everything that *generates* audio (prompts, music on hold, conference mixes) runs on one
shared 20 ms clock rather than a timer per stream: with 2,000 IVR streams a timer each would
mean 100,000 timer callbacks a second, while one clock walks a list. The clock schedules its
next tick from the ideal deadline, not from "now", so it does not drift when the loop is busy;
if it falls more than a few ticks behind it skips ahead instead of bursting.

The watchdog hangs up calls whose peer stopped sending (dead phone, lost network): a session
that expects media and heard nothing for ``rtp_timeout`` seconds is reported once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from pomelo.media.recorder import RecordingResult, RecordingWriter, StereoRecorder
from pomelo.media.session import PortPool, RtpSession

__all__ = ["TICK", "MediaClock", "MediaEngine"]

log = logging.getLogger(__name__)

TICK: Final = 0.02
_MAX_LAG_TICKS: Final = 5

Tick = Callable[[float], None]


class MediaClock:
    """Calls every subscriber once per 20 ms tick with the tick's nominal time."""

    __slots__ = ("_handle", "_loop", "_next", "_subscribers", "late_ticks", "ticks")

    def __init__(self) -> None:
        self._subscribers: dict[int, Tick] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next = 0.0
        self.ticks = 0
        self.late_ticks = 0

    def subscribe(self, callback: Tick) -> int:
        token = id(callback)
        self._subscribers[token] = callback
        if self._handle is None:
            self._loop = asyncio.get_running_loop()
            self._next = self._loop.time() + TICK
            self._handle = self._loop.call_at(self._next, self._tick)
        return token

    def unsubscribe(self, token: int) -> None:
        self._subscribers.pop(token, None)

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        self.ticks += 1
        if now - self._next > _MAX_LAG_TICKS * TICK:
            self.late_ticks += 1
            self._next = now  # too far behind: skip ahead rather than burst
        for callback in list(self._subscribers.values()):
            try:
                callback(self._next)
            except Exception:
                log.exception("media clock subscriber failed; dropping it")
                self._subscribers = {
                    k: v for k, v in self._subscribers.items() if v is not callback
                }
        if not self._subscribers:
            self._handle = None
            return
        self._next += TICK
        self._handle = loop.call_at(self._next, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._subscribers.clear()


def raise_open_file_limit() -> None:
    """Every call holds two RTP sockets and, when recorded, a file: the default soft limit of
    1,024 descriptors would stop a busy node near 300 calls. Raise it to the hard limit."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1_048_576 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d: %s", soft, exc)


class MediaTotals:
    """Counters of sessions that have closed, so metrics survive the sessions."""

    __slots__ = ("counts", "jitter_ms", "streams")

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(
            (
                "received",
                "sent",
                "malformed",
                "foreign_source",
                "foreign_ssrc",
                "unknown_payload",
                "lost",
                "duplicates",
            ),
            0,
        )
        self.jitter_ms: list[float] = []
        """Interarrival jitter of closed streams (bounded: the newest 10,000)."""
        self.streams = 0

    def add(self, session: RtpSession) -> None:
        c = session.counters
        counts = self.counts
        counts["received"] += c.received
        counts["sent"] += c.sent
        counts["malformed"] += c.malformed
        counts["foreign_source"] += c.foreign_source
        counts["foreign_ssrc"] += c.foreign_ssrc
        counts["unknown_payload"] += c.unknown_payload
        stats = session.stats
        if stats is not None and c.received:
            counts["lost"] += max(stats.lost, 0)
            counts["duplicates"] += stats.duplicates
            self.jitter_ms.append(stats.jitter_ms)
            if len(self.jitter_ms) > 10_000:
                del self.jitter_ms[:1000]
        self.streams += 1


class MediaEngine:
    """Opens sessions, runs the clock, and watches for silent peers."""

    __slots__ = (
        "_flusher",
        "_recorders",
        "_watch",
        "_watchdog",
        "_writer",
        "clock",
        "host",
        "pool",
        "rtp_timeout",
        "sessions",
        "totals",
    )

    def __init__(
        self, host: str, port_min: int, port_max: int, *, rtp_timeout: float = 60.0
    ) -> None:
        self.host = host
        self.pool = PortPool(port_min, port_max)
        self.clock = MediaClock()
        self.rtp_timeout = rtp_timeout
        self.sessions: set[RtpSession] = set()
        self.totals = MediaTotals()
        self._watch: dict[RtpSession, tuple[Callable[[], None], float]] = {}
        """Per session: the callback and when the watch began."""
        self._watchdog: asyncio.Task[None] | None = None
        self._writer: RecordingWriter | None = None
        self._recorders: set[StereoRecorder] = set()
        self._flusher: asyncio.Task[None] | None = None
        raise_open_file_limit()

    # -- recordings -----------------------------------------------------------------------

    def start_recording(self, path: Path) -> StereoRecorder:
        """A stereo recorder writing to ``path`` through the process's one writer thread;
        flushed twice a second so memory stays bounded however long the call."""
        if self._writer is None:
            self._writer = RecordingWriter()
        recorder = StereoRecorder(path, self._writer, start=time.monotonic())
        self._recorders.add(recorder)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_recorders())
        return recorder

    def finish_recording(self, recorder: StereoRecorder) -> asyncio.Future[RecordingResult]:
        self._recorders.discard(recorder)
        return asyncio.wrap_future(recorder.close())

    @property
    def recording_count(self) -> int:
        return len(self._recorders)

    async def _flush_recorders(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            for recorder in list(self._recorders):
                try:
                    recorder.flush(now)
                except Exception:
                    log.exception("recorder flush failed; dropping the recorder")
                    self._recorders.discard(recorder)

    async def open_session(self) -> RtpSession:
        session = await RtpSession.open(self.pool, self.host)
        self.sessions.add(session)
        session.on_close = self._closed
        return session

    def _closed(self, session: RtpSession) -> None:
        if session in self.sessions:
            self.sessions.discard(session)
            self.totals.add(session)

    def watch(self, session: RtpSession, on_timeout: Callable[[], None]) -> None:
        """Report (once) when ``session`` has received nothing for ``rtp_timeout`` seconds.
        The count starts now, so a peer that never sends at all is caught too, and a call
        resuming after a long hold (unwatched meanwhile) is not hung up for that silence.
        Watching a watched session again keeps its count going."""
        if self.rtp_timeout <= 0:
            return
        previous = self._watch.get(session)
        since = previous[1] if previous is not None else time.monotonic()
        self._watch[session] = (on_timeout, since)
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(self._run_watchdog())

    def unwatch(self, session: RtpSession) -> None:
        self._watch.pop(session, None)

    async def _run_watchdog(self) -> None:
        interval = max(0.05, min(1.0, self.rtp_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            self.check_timeouts(time.monotonic())

    def check_timeouts(self, now: float) -> None:
        deadline = now - self.rtp_timeout
        expired = [
            s
            for s, (_, since) in self._watch.items()
            if max(s.last_received, since) < deadline or s.closed
        ]
        for session in expired:
            callback, _ = self._watch.pop(session)
            if not session.closed:
                callback()

    async def stop(self) -> None:
        self.clock.stop()
        for task in (self._watchdog, self._flusher):
            if task is not None:
                task.cancel()
        self._watchdog = self._flusher = None
        self._watch.clear()
        for recorder in list(self._recorders):
            self.finish_recording(recorder)
        if self._writer is not None:
            await asyncio.to_thread(self._writer.stop)
            self._writer = None
