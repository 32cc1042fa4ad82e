"""Media anchoring: every leg negotiates its media with the PBX, never with the other phone.

Where the B2BUA used to pass one leg's SDP to the other unchanged, it now *translates* it:
the body that reaches leg Y describes the PBX's own RTP socket for Y, and what it learned
from X configures the PBX's socket for X. Each leg therefore has its own codec (the relay
transcodes µ-law ↔ A-law when they differ), its own port, and a media path that always
crosses the PBX — which is what recording, IVR prompts, queues and supervision need.

The translation keeps the meaning of the exchange: an offer stays an offer (with the same
direction, so hold still means hold), an answer stays an answer (with the codec chosen from
what that leg offered, preferring the one the other leg uses, so transcoding is the
exception). Per leg we keep the last offer the leg made, to answer it, and our own o= line
(the version only grows when what we describe changes, RFC 3264 §8).
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

from pomelo.media.relay import Playback, Relay
from pomelo.media.session import CODECS, Codec, RtpSession
from pomelo.sip.errors import SdpParseError, SipParseError
from pomelo.sip.sdp import (
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
    parse_sdp,
)

if TYPE_CHECKING:
    from pomelo.media.engine import MediaEngine
    from pomelo.pbx.legs import CallLeg

__all__ = ["LegMedia", "MediaError", "answer_for", "learn_answer", "learn_offer", "offer_for"]

log = logging.getLogger(__name__)

TELEPHONE_EVENT_PT = 101
_OPPOSITE = {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


class MediaError(ValueError):
    """The leg's SDP has nothing we can use (no audio stream, no G.711): answer 488."""


class LegMedia:
    """The PBX's side of one leg's media: its RTP session and negotiation memory."""

    __slots__ = (
        "direction",
        "music",
        "offer",
        "origin_version",
        "relay",
        "sdp",
        "session",
        "session_id",
    )

    def __init__(self, session: RtpSession) -> None:
        self.session = session
        self.offer: SessionDescription | None = None
        self.session_id = str(secrets.randbelow(10**9) + 1)
        self.origin_version = 0
        self.sdp = b""
        self.direction = "sendrecv"
        self.relay: Relay | None = None
        self.music: Playback | None = None

    def describe(self, codecs: list[Codec], dtmf_pt: int | None, direction: str) -> bytes:
        """Our SDP for this leg; same bytes (same version) when nothing changed."""
        host, port = self.session.local_address
        formats = [str(c.payload_type) for c in codecs]
        attributes: list[tuple[str, str | None]] = [
            ("rtpmap", f"{c.payload_type} {c.name}/{c.clock_rate}") for c in codecs
        ]
        if dtmf_pt is not None:
            formats.append(str(dtmf_pt))
            attributes += [
                ("rtpmap", f"{dtmf_pt} telephone-event/8000"),
                ("fmtp", f"{dtmf_pt} 0-16"),
            ]
        attributes += [("ptime", "20"), (direction, None)]
        media = MediaDescription("audio", port, "RTP/AVP", formats, attributes=attributes)
        body = _render(self.session_id, self.origin_version, host, media)
        if body != self.sdp:
            if self.sdp:
                self.origin_version += 1
                body = _render(self.session_id, self.origin_version, host, media)
            self.sdp = body
        return self.sdp


def _render(session_id: str, version: int, host: str, media: MediaDescription) -> bytes:
    sdp = SessionDescription(
        origin=Origin("pomelo", session_id, str(version), "IN", "IP4", host),
        session_name="pomelo",
        connection=Connection(host),
        media=[media],
    )
    return sdp.serialize()


def _audio(body: bytes) -> tuple[SessionDescription, MediaDescription]:
    try:
        sdp = parse_sdp(body)
    except (SdpParseError, SipParseError, ValueError) as exc:
        raise MediaError(f"unreadable SDP: {exc}") from None
    for media in sdp.media:
        if media.media == "audio" and media.port != 0:
            return sdp, media
    raise MediaError("no audio stream in the SDP")


def _codecs_of(media: MediaDescription) -> tuple[list[Codec], int | None]:
    """The G.711 codecs the description lists, in its order, and its telephone-event PT."""
    rtpmaps = media.rtpmaps
    codecs: list[Codec] = []
    dtmf: int | None = None
    for fmt in media.formats:
        if not fmt.isdigit():
            continue
        pt = int(fmt)
        rtpmap = rtpmaps.get(pt)
        name = rtpmap.encoding.upper() if rtpmap else {0: "PCMU", 8: "PCMA"}.get(pt, "")
        if name in CODECS and (rtpmap is None or rtpmap.clock_rate == 8000):
            codecs.append(Codec(name, pt))
        elif name == "TELEPHONE-EVENT" and dtmf is None:
            dtmf = pt
    return codecs, dtmf


def _remote(sdp: SessionDescription, media: MediaDescription) -> tuple[str, int] | None:
    connection = sdp.connection_for(media)
    if connection is None or connection.address in ("0.0.0.0", "::"):  # noqa: S104
        return None  # RFC 2543 hold: no address to send to
    return (connection.address, media.port)


def learn_offer(leg: LegMedia, body: bytes) -> None:
    """Remember an offer the leg made (we answer it later, when the other side has)."""
    sdp, media = _audio(body)
    codecs, _dtmf = _codecs_of(media)
    if not codecs:
        raise MediaError("no G.711 codec offered (PCMU or PCMA needed)")
    leg.offer = sdp


def learn_answer(leg: LegMedia, body: bytes) -> str:
    """Configure the leg's session from its answer to our offer; returns its direction."""
    sdp, media = _audio(body)
    codecs, dtmf = _codecs_of(media)
    if not codecs:
        raise MediaError("no G.711 codec in the answer")
    leg.session.configure(_remote(sdp, media), codecs[0], dtmf)
    leg.direction = media.direction
    return leg.direction


def offer_for(leg: LegMedia, like: bytes | None, direction: str | None = None) -> bytes:
    """Our offer to ``leg``: both G.711 laws (in the order of ``like``, the other leg's
    offer, when there is one) and telephone-event; the direction copied from ``like``."""
    order = [CODECS["PCMU"], CODECS["PCMA"]]
    if like:
        try:
            _sdp, media = _audio(like)
        except MediaError:
            pass
        else:
            preferred = [CODECS[c.name] for c in _codecs_of(media)[0]]
            order = preferred + [c for c in order if c not in preferred]
            direction = direction or media.direction
    return leg.describe(order, TELEPHONE_EVENT_PT, direction or "sendrecv")


def answer_for(leg: LegMedia, prefer: Codec | None = None, direction: str | None = None) -> bytes:
    """Answer the leg's remembered offer: its first G.711 codec (or ``prefer`` when it
    offered that one too), its telephone-event PT, the direction that complements its own
    (or ``direction`` when the other leg decided it)."""
    if leg.offer is None:
        raise MediaError("no offer to answer")
    sdp = leg.offer
    media = next(m for m in sdp.media if m.media == "audio" and m.port != 0)
    codecs, dtmf = _codecs_of(media)
    chosen = codecs[0]
    if prefer is not None:
        chosen = next((c for c in codecs if c.name == prefer.name), chosen)
    leg.session.configure(_remote(sdp, media), chosen, dtmf)
    their = media.direction
    ours = direction or _OPPOSITE.get(their, "sendrecv")
    leg.direction = their
    return leg.describe([Codec(chosen.name, chosen.payload_type)], dtmf, ours)


def media_of(leg: CallLeg) -> LegMedia | None:
    media: Any = leg.media
    return media if isinstance(media, LegMedia) else None


async def open_leg_media(engine: MediaEngine, leg: CallLeg) -> LegMedia:
    existing = media_of(leg)
    if existing is not None:
        return existing
    media = LegMedia(await engine.open_session())
    leg.media = media
    return media


def close_leg_media(engine: MediaEngine, leg: CallLeg) -> None:
    media = media_of(leg)
    if media is None:
        return
    if media.relay is not None:
        media.relay.stop()
        media.relay = None
    engine.unwatch(media.session)
    media.session.close()
