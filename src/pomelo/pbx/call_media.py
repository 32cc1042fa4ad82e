"""The media side of one call: sessions per leg, SDP translation, the relay, the watchdog.

:class:`CallMedia` is to media what :class:`~pomelo.pbx.midcall.MidCall` is to in-dialog
requests: a helper of its :class:`~pomelo.pbx.calls.Call`, running in the call's task. When
the PBX runs without a media engine (``media=None``, some protocol tests), every method is a
no-op and SDP passes unchanged, as before anchoring.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from pomelo.media.relay import Playback, Relay
from pomelo.pbx.anchor import (
    LegMedia,
    MediaError,
    answer_for,
    close_leg_media,
    learn_answer,
    learn_offer,
    media_of,
    offer_for,
    open_leg_media,
)
from pomelo.recordings.service import NewRecording

if TYPE_CHECKING:
    from pomelo.media.engine import MediaEngine
    from pomelo.media.recorder import RecordingResult, StereoRecorder
    from pomelo.pbx.calls import Call, CallService
    from pomelo.pbx.legs import CallLeg

__all__ = ["CallMedia", "MediaError"]

log = logging.getLogger(__name__)

_SENDING = ("sendrecv", "sendonly")
_HOLDING = ("sendonly", "inactive")


def catalogue_recording(
    service: CallService, done: Awaitable[RecordingResult], new: NewRecording
) -> None:
    """When the writer thread has finished the file, catalogue it (in the background: the
    call is over). ``new`` is completed with the file's real path, length and size."""
    catalog = service.recordings
    if catalog is None:
        return

    async def catalogue() -> None:
        result = await done
        if result.error is not None:
            log.error("recording %s incomplete: %s", new.call_id, result.error)
        if result.samples == 0:
            return
        await catalog.add(
            replace(
                new,
                path=result.path,
                duration_s=result.duration_s,
                size_bytes=result.size_bytes,
            )
        )

    service.background(catalogue())


class CallMedia:
    __slots__ = ("call", "engine", "recorder", "recording_started")

    def __init__(self, call: Call, engine: MediaEngine | None) -> None:
        self.call = call
        self.engine = engine
        self.recorder: StereoRecorder | None = None
        self.recording_started: datetime | None = None

    # -- recording ------------------------------------------------------------------------

    async def start_recording(self) -> None:
        """Record the client's leg from now on (both directions, stereo)."""
        call, engine = self.call, self.engine
        catalog = call.service.recordings
        if engine is None or catalog is None or self.recorder is not None:
            return
        try:
            path = await catalog.allocate_path(call.route.tenant_id, call.id, call.started_at)
        except (OSError, ValueError) as exc:
            log.error("call %s: not recorded: %s", call.id, exc)
            return
        if self.recorder is not None or not call.live:
            return
        self.recorder = engine.start_recording(path)
        self.recording_started = call.service.clock.now()
        for leg in call.legs:
            media = media_of(leg)
            if media is not None and media.relay is not None:
                self._attach(media.relay)
        if call.ivr is not None and call.ivr.playback is not None:
            call.ivr.playback.recorder = self.recorder
        client = self.client_leg()
        client_media = media_of(client) if client is not None else None
        if client_media is not None:
            recorder = self.recorder
            client_media.session.inbound_tap = lambda payload, codec, ts, ssrc, now: (
                recorder.add_g711(0, payload, codec, ts, ssrc, now)
            )

    def _attach(self, relay: Relay) -> None:
        client = self.client_leg()
        media = media_of(client) if client is not None else None
        if media is not None and media.session in (relay.a, relay.b):
            relay.client = media.session
            relay.recorder = self.recorder
        else:
            relay.recorder = None

    def _finish_recording(self) -> None:
        recorder, engine, started = self.recorder, self.engine, self.recording_started
        self.recorder = None
        if recorder is None or engine is None or started is None:
            return
        call = self.call
        service = call.service
        route = call.route
        winner = call.winner.account if call.winner is not None else None
        users = (
            route.caller.user_id if route.caller else None,
            winner.user_id if winner is not None else None,
            route.callee_user_id,
        )
        catalogue_recording(
            service,
            engine.finish_recording(recorder),
            NewRecording(
                tenant_id=route.tenant_id,
                call_id=call.id,
                path=recorder.path,
                started_at=started,
                ended_at=max(service.clock.now(), started),
                duration_s=0.0,
                size_bytes=0,
                sample_rate=8000,
                channels=2,
                from_number=route.from_number,
                to_number=route.to_number,
                group_id=route.group_id,
                user_ids=tuple(u for u in users if u),
            ),
        )

    @property
    def anchored(self) -> bool:
        return self.engine is not None

    async def open(self, leg: CallLeg) -> LegMedia | None:
        if self.engine is None:
            return None
        return await open_leg_media(self.engine, leg)

    def learn_offer(self, leg: CallLeg, body: bytes) -> None:
        media = media_of(leg)
        if media is not None and body:
            learn_offer(media, body)

    def offer(self, dst: CallLeg, like: bytes | None, direction: str | None = None) -> bytes:
        """Our offer to ``dst`` (``like``: the body the offer stands in for)."""
        media = media_of(dst)
        if media is None:
            return like or b""
        return offer_for(media, like, direction)

    def translate(self, src: CallLeg, dst: CallLeg, body: bytes, *, offer: bool) -> bytes:
        """The body ``src`` sent, as ``dst`` must receive it. An offer from ``src`` is
        remembered and becomes our offer to ``dst``; an answer from ``src`` configures
        ``src``'s session and becomes our answer to ``dst``'s remembered offer — and then
        the two legs' media are joined."""
        s, d = media_of(src), media_of(dst)
        if s is None or d is None or not body:
            return body
        if offer:
            learn_offer(s, body)
            return offer_for(d, body)
        direction = learn_answer(s, body)
        out = answer_for(d, prefer=s.session.codec, direction=direction)
        if d.direction in _HOLDING:  # dst put src on hold: src hears the PBX's music
            self.unlink(s)
            self._play_music(src, s)
        else:
            self._stop_music(s)
            self._stop_music(d)
            self.link(src, dst)
        if s.direction == "sendrecv" and d.direction == "sendrecv":
            self.watch(src)
            self.watch(dst)
        else:  # on hold somewhere: silence is expected
            self._unwatch(s)
            self._unwatch(d)
        return out

    def _play_music(self, leg: CallLeg, media: LegMedia) -> None:
        engine = self.engine
        music = self.call.service.music_on_hold
        if engine is None or music is None or media.music is not None:
            return
        recorder = self.recorder if leg is self.client_leg() else None
        media.music = Playback(
            media.session, engine.clock, music, loop=True, recorder=recorder
        ).start()

    def _stop_music(self, media: LegMedia) -> None:
        if media.music is not None:
            media.music.stop()
            media.music = None

    def unlink(self, media: LegMedia) -> None:
        """Stop the relay ``media`` is part of, on both of its legs."""
        relay = media.relay
        if relay is None:
            return
        relay.stop()
        for leg in self.call.legs:
            other = media_of(leg)
            if other is not None and other.relay is relay:
                other.relay = None

    def _unwatch(self, media: LegMedia) -> None:
        if self.engine is not None:
            self.engine.unwatch(media.session)

    def answer_locally(self, leg: CallLeg) -> bytes:
        """The PBX itself answers the leg's offer (IVR, queue): no other party yet."""
        media = media_of(leg)
        if media is None:
            raise MediaError("no media session for this leg")
        out = answer_for(media)
        self.watch(leg)
        return out

    def link(self, x: CallLeg, y: CallLeg) -> None:
        mx, my = media_of(x), media_of(y)
        if mx is None or my is None:
            return
        if mx.relay is not None and {mx.relay.a, mx.relay.b} == {mx.session, my.session}:
            return
        self.unlink(mx)
        self.unlink(my)
        relay = Relay(mx.session, my.session)
        self._attach(relay)
        relay.start()
        mx.relay = my.relay = relay

    def client_leg(self) -> CallLeg | None:
        """The leg of the outside party: the caller, or the callee of an outbound call."""
        call = self.call
        if call.route.direction == "outbound":
            return call.winner
        return call.a

    def watch(self, leg: CallLeg) -> None:
        engine, media = self.engine, media_of(leg)
        if engine is None or media is None:
            return
        if media.direction in _SENDING and media.session.remote is not None:
            call = self.call
            engine.watch(media.session, lambda: call.post(call.on_media_timeout, leg))
        else:
            engine.unwatch(media.session)  # on hold: silence is expected

    def close(self) -> None:
        engine = self.engine
        if engine is None:
            return
        self._finish_recording()
        for leg in self.call.legs:
            media = media_of(leg)
            if media is not None:
                self._stop_music(media)
            close_leg_media(engine, leg)
