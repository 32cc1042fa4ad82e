"""The media plane of one process: the RTP port pool, the 20 ms clock, and the watchdog.

Everything that *generates* audio (prompts, music on hold, conference mixes) runs on one
shared 20 ms clock rather than a timer per stream: with 2,000 IVR streams a timer each would
mean 100,000 timer callbacks a second, while one clock walks a list. The clock schedules its
next tick from the ideal deadline, not from "now", so it does not drift when the loop is busy;
if it falls more than a few ticks behind it skips ahead instead of bursting.

The watchdog hangs up calls whose peer stopped sending (dead phone, lost network): a session
that expects media and heard nothing for ``rtp_timeout`` seconds is reported once.

RTCP reports go out the same way as the clock's work: one task ticking every second, each
tick sending for one of five groups of sessions, so every session reports every five seconds
and a tick walks about a fifth of them (RFC 3550 §6.2's minimum interval is five seconds; with
one sender and one receiver per session, sharing the RTCP bandwidth plays no part).
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

__all__ = ["RTCP_INTERVAL", "TICK", "MediaClock", "MediaEngine"]

log = logging.getLogger(__name__)

TICK: Final = 0.02
_MAX_LAG_TICKS: Final = 5
RTCP_INTERVAL: Final = 5.0
"""Seconds between two RTCP reports of one session."""
_RTCP_GROUPS: Final = 5

Tick = Callable[[float], None]


class _Phase:
    """One timer chain of the clock: its own subscribers, ticking every 20 ms at its offset."""

    __slots__ = ("clock", "handle", "next", "offset", "subscribers")

    def __init__(self, clock: MediaClock, offset: float) -> None:
        self.clock = clock
        self.offset = offset
        self.subscribers: dict[int, Tick] = {}
        self.handle: asyncio.TimerHandle | None = None
        self.next = 0.0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.handle is None:
            self.next = loop.time() + TICK + self.offset
            self.handle = loop.call_at(self.next, self.tick, loop)

    def tick(self, loop: asyncio.AbstractEventLoop) -> None:
        clock = self.clock
        now = loop.time()
        clock.ticks += 1
        if now - self.next > _MAX_LAG_TICKS * TICK:
            clock.late_ticks += 1
            self.next = now  # too far behind: skip ahead rather than burst
        for token, callback in list(self.subscribers.items()):
            try:
                callback(self.next)
            except Exception:
                log.exception("media clock subscriber failed; dropping it")
                self.subscribers.pop(token, None)
                clock._owner.pop(token, None)
        if not self.subscribers:
            self.handle = None
            return
        self.next += TICK
        self.handle = loop.call_at(self.next, self.tick, loop)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.subscribers.clear()


class MediaClock:
    """Calls every subscriber once per 20 ms with the tick's nominal time.

    Subscribers are spread over :data:`PHASES` timer chains started 5 ms apart: walking
    1,000 prompt streams costs ~10 ms, and doing that in one go every 20 ms would hold the
    loop for half of each period, delaying every relayed packet behind it. Four smaller
    walks keep the loop's longest stall a quarter of that.
    """

    __slots__ = ("_owner", "_phases", "late_ticks", "ticks")

    def __init__(self, phases: int = 4) -> None:
        self._phases = [_Phase(self, i * TICK / phases) for i in range(phases)]
        self._owner: dict[int, _Phase] = {}
        self.ticks = 0
        self.late_ticks = 0

    def subscribe(self, callback: Tick) -> int:
        token = id(callback)
        phase = min(self._phases, key=lambda p: len(p.subscribers))
        phase.subscribers[token] = callback
        self._owner[token] = phase
        phase.start(asyncio.get_running_loop())
        return token

    def unsubscribe(self, token: int) -> None:
        phase = self._owner.pop(token, None)
        if phase is not None:
            phase.subscribers.pop(token, None)

    @property
    def subscribers(self) -> int:
        return len(self._owner)

    def stop(self) -> None:
        for phase in self._phases:
            phase.stop()
        self._owner.clear()


def raise_open_file_limit() -> None:
    """Every call holds four sockets (RTP and RTCP of two legs) and, when recorded, a file:
    the default soft limit of 1,024 descriptors would stop a busy node near 200 calls. Raise it
    to the hard limit."""
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
                "rtcp_received",
                "rtcp_sent",
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
        counts["rtcp_received"] += c.rtcp_received
        counts["rtcp_sent"] += c.rtcp_sent
        stats = session.stats
        if stats is not None and c.received:
            counts["lost"] += max(stats.lost, 0)
            counts["duplicates"] += stats.duplicates
            self.jitter_ms.append(stats.jitter_ms)
            if len(self.jitter_ms) > 10_000:
                del self.jitter_ms[:1000]
        self.streams += 1


class MediaEngine:
    """Opens sessions, runs the clock, sends RTCP reports, and watches for silent peers."""

    __slots__ = (
        "_flusher",
        "_recorders",
        "_rtcp",
        "_rtcp_groups",
        "_rtcp_turn",
        "_watch",
        "_watchdog",
        "_writer",
        "clock",
        "host",
        "pool",
        "rtcp_interval",
        "rtp_timeout",
        "sessions",
        "totals",
    )

    def __init__(
        self,
        host: str,
        port_min: int,
        port_max: int,
        *,
        rtp_timeout: float = 60.0,
        rtcp_interval: float = RTCP_INTERVAL,
    ) -> None:
        """``rtcp_interval`` 0 sends no RTCP reports (a BYE still goes out on close)."""
        self.host = host
        self.pool = PortPool(port_min, port_max)
        self.clock = MediaClock()
        self.rtp_timeout = rtp_timeout
        self.rtcp_interval = rtcp_interval
        self._rtcp_groups: list[set[RtpSession]] = [set() for _ in range(_RTCP_GROUPS)]
        self._rtcp_turn = 0
        self._rtcp: asyncio.Task[None] | None = None
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
        """Every recorder is flushed once per half second, a slice of them every 20 ms: one
        pass over 500 recorders at once (~25 ms) would stall the relay behind it."""
        slices = round(0.5 / TICK)
        turn = 0
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            recorders = list(self._recorders)
            for recorder in recorders[turn % slices :: slices]:
                try:
                    recorder.flush(now)
                except Exception:
                    log.exception("recorder flush failed; dropping the recorder")
                    self._recorders.discard(recorder)
            turn += 1

    async def open_session(self) -> RtpSession:
        session = await RtpSession.open(self.pool, self.host)
        self.sessions.add(session)
        session.on_close = self._closed
        if self.rtcp_interval > 0:
            min(self._rtcp_groups, key=len).add(session)
            if self._rtcp is None:
                self._rtcp = asyncio.get_running_loop().create_task(self._run_rtcp())
        return session

    def _closed(self, session: RtpSession) -> None:
        if session in self.sessions:
            self.sessions.discard(session)
            self.totals.add(session)
        for group in self._rtcp_groups:
            group.discard(session)

    # -- RTCP -----------------------------------------------------------------------------

    async def _run_rtcp(self) -> None:
        while True:
            await asyncio.sleep(self.rtcp_interval / _RTCP_GROUPS)
            self.send_reports()

    def send_reports(self) -> int:
        """One tick: every session of the next group that knows its peer sends a report.
        Returns how many were sent."""
        group = self._rtcp_groups[self._rtcp_turn % _RTCP_GROUPS]
        self._rtcp_turn += 1
        sent = 0
        for session in list(group):
            if session.closed:
                group.discard(session)
                continue
            try:
                sent += session.send_report()
            except Exception:
                log.exception("RTCP report of %s failed", session.local_address)
        return sent

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
        for task in (self._watchdog, self._flusher, self._rtcp):
            if task is not None:
                task.cancel()
        self._watchdog = self._flusher = self._rtcp = None
        self._watch.clear()
        for recorder in list(self._recorders):
            self.finish_recording(recorder)
        if self._writer is not None:
            await asyncio.to_thread(self._writer.stop)
            self._writer = None
