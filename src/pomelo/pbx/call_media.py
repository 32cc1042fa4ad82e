"""The media side of one call: sessions per leg, SDP translation, the relay, the watchdog.

:class:`CallMedia` is to media what :class:`~pomelo.pbx.midcall.MidCall` is to in-dialog
requests: a helper of its :class:`~pomelo.pbx.calls.Call`, running in the call's task. When
the PBX runs without a media engine (``media=None``, some protocol tests), every method is a
no-op and SDP passes unchanged, as before anchoring.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pomelo.media.relay import Relay
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

if TYPE_CHECKING:
    from pomelo.media.engine import MediaEngine
    from pomelo.pbx.calls import Call
    from pomelo.pbx.legs import CallLeg

__all__ = ["CallMedia", "MediaError"]

log = logging.getLogger(__name__)

_SENDING = ("sendrecv", "sendonly")


class CallMedia:
    __slots__ = ("call", "engine", "recorder")

    def __init__(self, call: Call, engine: MediaEngine | None) -> None:
        self.call = call
        self.engine = engine
        self.recorder: Any = None

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
        self.link(src, dst)
        self.watch(src)
        self.watch(dst)
        return out

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
        for media in (mx, my):
            if media.relay is not None:
                media.relay.stop()
                other = media.relay.b if media.relay.a is media.session else media.relay.a
                for leg in self.call.legs:
                    lm = media_of(leg)
                    if lm is not None and lm.session is other:
                        lm.relay = None
                media.relay = None
        relay = Relay(mx.session, my.session)
        client = self.client_leg()
        if client is y:
            relay.client = my.session
        relay.recorder = self.recorder if client in (x, y) else None
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
        for leg in self.call.legs:
            close_leg_media(engine, leg)
