"""The browser's end of a call: one aiortc peer connection, always the answerer.

The page makes the WebRTC offer in both directions of a call (for an incoming call it does so
after the employee accepts), so the gateway never has to offer, and ICE is non-trickle: the
page sends its offer once it has gathered, and aiortc's answer carries all our candidates.
Media is DTLS-SRTP as WebRTC requires; aiortc encodes and decodes Opus (or G.711 if that is
all the page offers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from pomelo.webrtc.bridge import PcmSink, SipAudioTrack, pump_browser_audio

__all__ = ["BadOffer", "BrowserPeer"]

log = logging.getLogger(__name__)

_MAX_SDP = 64 * 1024


class BadOffer(ValueError):
    """The page's SDP cannot be used (unparsable, no audio, too large)."""


class BrowserPeer:
    """Answers the page's offer and bridges its audio to and from 8 kHz PCM."""

    __slots__ = ("_closed", "_pump", "on_failed", "outbound", "pc", "sink")

    def __init__(
        self,
        sink: PcmSink,
        *,
        ice_servers: Sequence[RTCIceServer] = (),
        on_failed: Callable[[], None] | None = None,
    ) -> None:
        # No STUN unless configured: aiortc's default would query a public server per call.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=list(ice_servers)))
        self.outbound = SipAudioTrack()
        self.sink = sink
        self.on_failed = on_failed
        self._pump: asyncio.Task[None] | None = None
        self._closed = False
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    async def answer(self, offer_sdp: str) -> str:
        """Apply the page's offer; returns our answer with its ICE candidates."""
        if not offer_sdp or len(offer_sdp) > _MAX_SDP or "m=audio" not in offer_sdp:
            raise BadOffer("the offer must be SDP with an audio stream")
        pc = self.pc
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
            if not any(t.kind == "audio" for t in pc.getTransceivers()):
                raise BadOffer("the offer has no audio stream")
            pc.addTrack(self.outbound)
            await pc.setLocalDescription(await pc.createAnswer())
        except BadOffer:
            raise
        except Exception as exc:  # aiortc raises assorted errors for malformed SDP
            raise BadOffer(f"unusable offer: {exc}") from exc
        return pc.localDescription.sdp

    def play(self, pcm: npt.NDArray[np.int16]) -> None:
        """Audio from the SIP side, for the browser."""
        self.outbound.push(pcm)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.outbound.stop()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        await self.pc.close()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(
                pump_browser_audio(track, self.sink)
            )

    def _on_state(self) -> None:
        state = self.pc.connectionState
        log.debug("browser peer connection %s", state)
        if state == "failed" and not self._closed and self.on_failed is not None:
            self.on_failed()
