"""The gateway's SIP-side vocabulary: G.711 SDP for its RTP socket, and digest from HA1.

Towards the B2BUA the gateway is an ordinary phone: it offers (or answers with) PCMU/PCMA
and telephone-event on one RTP port. It authenticates as the employee's SIP account without
knowing its password: the registrar stores HA1 = H(user:realm:password), and a digest
response is computed from HA1 alone, so the stored value is all the gateway needs.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Final

from pomelo.media.session import CODECS, Codec
from pomelo.pbx.sipcache import AccountInfo
from pomelo.sip.digest import (
    DigestAlgorithm,
    DigestChallenge,
    DigestCredentials,
    DigestError,
    digest_response,
    select_challenge,
)
from pomelo.sip.errors import SipError
from pomelo.sip.message import SipResponse
from pomelo.sip.sdp import (
    Codec as SdpCodec,
)
from pomelo.sip.sdp import (
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
    build_answer,
    parse_sdp,
)

__all__ = [
    "TELEPHONE_EVENT_PT",
    "MediaMismatch",
    "SipMedia",
    "answer_offer",
    "authorization",
    "build_offer",
    "reachable_host",
    "read_answer",
]

TELEPHONE_EVENT_PT: Final = 101
_ACCEPTED: Final = (
    SdpCodec("PCMU", 8000, 0),
    SdpCodec("PCMA", 8000, 8),
    SdpCodec("telephone-event", 8000, None, fmtp="0-16"),
)


class MediaMismatch(ValueError):
    """The other side's SDP has no audio stream in a codec we speak (answer 488)."""


@dataclass(frozen=True, slots=True)
class SipMedia:
    """What one SDP exchange decided for the gateway's RTP session."""

    remote: tuple[str, int] | None
    codec: Codec
    dtmf_pt: int | None


def build_offer(host: str, port: int, session_id: str, version: int = 1) -> bytes:
    addrtype = "IP6" if ":" in host else "IP4"
    media = MediaDescription("audio", port, "RTP/AVP", ["0", "8", str(TELEPHONE_EVENT_PT)])
    media.attributes = [
        ("rtpmap", "0 PCMU/8000"),
        ("rtpmap", "8 PCMA/8000"),
        ("rtpmap", f"{TELEPHONE_EVENT_PT} telephone-event/8000"),
        ("fmtp", f"{TELEPHONE_EVENT_PT} 0-16"),
        ("ptime", "20"),
        ("sendrecv", None),
    ]
    sdp = SessionDescription(
        origin=Origin("pomelo-webrtc", session_id, str(version), "IN", addrtype, host),
        connection=Connection(host, "IN", addrtype),
        media=[media],
    )
    return sdp.serialize()


def read_answer(body: bytes) -> SipMedia:
    """The codec and address the other side chose in its answer to our offer."""
    try:
        sdp = parse_sdp(body)
    except (SipError, ValueError) as exc:
        raise MediaMismatch(f"unparsable SDP: {exc}") from exc
    for media in sdp.media:
        if media.media != "audio" or media.port == 0:
            continue
        maps = media.rtpmaps
        codec: Codec | None = None
        dtmf: int | None = None
        for fmt in media.formats:
            rtpmap = maps.get(int(fmt)) if fmt.isdigit() else None
            if rtpmap is None:
                continue
            name = rtpmap.encoding.upper()
            if codec is None and name in CODECS and rtpmap.clock_rate == 8000:
                codec = CODECS[name]
            elif name == "TELEPHONE-EVENT" and dtmf is None:
                dtmf = rtpmap.payload_type
        if codec is not None:
            return SipMedia(_address(sdp, media), codec, dtmf)
    raise MediaMismatch("no G.711 audio stream")


def answer_offer(
    body: bytes, host: str, port: int, session_id: str, version: int = 1
) -> tuple[bytes, SipMedia]:
    """Our answer to the B2BUA's offer, and what it decided."""
    try:
        offer = parse_sdp(body)
        answer = build_answer(
            offer, address=host, ports=[port], codecs=_ACCEPTED, username="pomelo-webrtc"
        )
    except (SipError, ValueError) as exc:
        raise MediaMismatch(f"unusable offer: {exc}") from exc
    answer.origin.session_id = session_id
    answer.origin.session_version = str(version)
    chosen = read_answer(answer.serialize())
    for media in offer.media:
        if media.media == "audio" and media.port != 0:
            remote = _address(offer, media)
            return answer.serialize(), SipMedia(remote, chosen.codec, chosen.dtmf_pt)
    raise MediaMismatch("no audio stream offered")


def reachable_host(host: str) -> str:
    """Where this machine reaches a socket bound to ``host`` (a wildcard is not an address)."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - a wildcard bind is reached on loopback
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _address(sdp: SessionDescription, media: MediaDescription) -> tuple[str, int] | None:
    connection = sdp.connection_for(media)
    if connection is None or connection.address in ("0.0.0.0", "::"):  # noqa: S104 - old hold
        return None
    return (connection.address, media.port)


def authorization(response: SipResponse, method: str, uri: str, account: AccountInfo) -> str:
    """The Authorization/Proxy-Authorization value answering a 401/407, computed from the
    account's stored HA1. Raises :class:`DigestError` when no challenge can be answered,
    including one for another realm (our HA1 is only valid in the account's)."""
    asked = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
    challenge = DigestChallenge.parse(select_challenge(response.header_values(asked)))
    if challenge.realm != account.realm:
        raise DigestError(f"challenge for realm {challenge.realm!r}, not the account's")
    ha1 = (
        account.ha1_sha256
        if challenge.algorithm.base is DigestAlgorithm.SHA256
        else account.ha1_md5
    )
    qop = "auth" if challenge.qop else None
    cnonce = secrets.token_hex(12) if qop is not None or challenge.algorithm.session else None
    nc = "00000001" if qop is not None else None
    value = digest_response(challenge.algorithm, ha1, challenge.nonce, method, uri, qop, nc, cnonce)
    return DigestCredentials(
        username=account.extension,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=value,
        algorithm=challenge.algorithm,
        qop=qop,
        nc=nc,
        cnonce=cnonce,
        opaque=challenge.opaque,
    ).to_header()
