"""The gateway's pieces on their own: audio conversion, SDP, and digest from HA1."""

from __future__ import annotations

import asyncio
import fractions

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from pomelo.media.session import PCMA, PCMU
from pomelo.pbx.sipcache import AccountInfo
from pomelo.sip.digest import (
    DigestAlgorithm,
    DigestChallenger,
    DigestError,
    DigestOutcome,
    ha1,
)
from pomelo.sip.message import SipRequest, SipResponse, make_response
from pomelo.sip.sdp import parse_sdp
from pomelo.sip.uri import NameAddr, SipUri
from pomelo.webrtc.bridge import Downsampler, SipAudioTrack
from pomelo.webrtc.sipside import (
    MediaMismatch,
    answer_offer,
    authorization,
    build_offer,
    reachable_host,
    read_answer,
)
from tests.integration.webrtc.harness import dominant_frequency, rms, tone

# -- audio ------------------------------------------------------------------------------------


def opus_like_frame(freq: float, start: int) -> av.AudioFrame:
    """20 ms of 48 kHz interleaved stereo, what aiortc's Opus decoder hands out."""
    mono = tone(freq, start, 960, 48000)
    stereo = np.repeat(mono, 2).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
    frame.sample_rate = 48000
    return frame


def test_browser_audio_becomes_8khz_frames_of_160_samples_with_the_same_tone() -> None:
    down = Downsampler()
    frames = [f for i in range(50) for f in down.feed(opus_like_frame(440, i * 960))]
    assert all(len(f) == 160 and f.dtype == np.int16 for f in frames)
    assert len(frames) in (49, 50)  # the resampler holds back a few samples of look-ahead
    audio = np.concatenate(frames[5:])
    assert dominant_frequency(audio, 8000) == pytest.approx(440, abs=5)
    assert rms(audio) == pytest.approx(rms(tone(440, 0, 8000, 8000)), rel=0.05)


def test_planar_float_audio_is_scaled_and_mixed_down() -> None:
    left = tone(1000, 0, 480, 16000).astype(np.float32) / 32767
    planar = np.stack([left, left])
    frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout="stereo")
    frame.sample_rate = 16000
    frames = [f for _ in range(20) for f in Downsampler().feed(frame)]
    assert frames
    assert rms(np.concatenate(frames)) > 3000


async def test_sip_track_plays_queued_frames_then_silence_on_a_steady_clock() -> None:
    track = SipAudioTrack()
    track.push(tone(1000, 0, 160, 8000))
    track.push(np.zeros(100, dtype=np.int16))  # not a 20 ms frame: ignored
    first = await track.recv()
    second = await track.recv()
    assert (first.sample_rate, first.format.name, first.layout.name) == (8000, "s16", "mono")
    assert first.time_base == fractions.Fraction(1, 8000)
    assert (first.pts, second.pts) == (0, 160)
    assert rms(first.to_ndarray()[0]) > 1000
    assert rms(second.to_ndarray()[0]) == 0  # nothing arrived: silence, not a stall
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


async def test_sip_track_keeps_only_the_latest_audio_after_a_burst() -> None:
    track = SipAudioTrack()
    for i in range(30):
        track.push(np.full(160, i, dtype=np.int16))
    assert track.queued == 10
    frame = await asyncio.wait_for(track.recv(), 1)
    assert frame.to_ndarray()[0][0] == 20  # the 20 oldest frames were dropped


# -- SDP --------------------------------------------------------------------------------------


def test_our_offer_and_the_answer_we_read_back() -> None:
    offer = parse_sdp(build_offer("127.0.0.1", 20000, "42"))
    media = offer.media[0]
    assert (media.port, media.formats) == (20000, ["0", "8", "101"])
    answer = b"v=0\r\no=x 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    answer += b"m=audio 30000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    chosen = read_answer(answer)
    assert (chosen.remote, chosen.codec, chosen.dtmf_pt) == (("10.0.0.1", 30000), PCMA, 101)


def test_answering_the_pbx_offer_picks_g711_and_keeps_its_address() -> None:
    offer = build_offer("10.1.1.1", 24000, "7")
    body, media = answer_offer(offer, "127.0.0.1", 20002, "99", version=3)
    answer = parse_sdp(body)
    assert answer.origin.session_version == "3"
    assert answer.media[0].port == 20002
    assert (media.remote, media.codec, media.dtmf_pt) == (("10.1.1.1", 24000), PCMU, 101)


@pytest.mark.parametrize(
    "body",
    [
        b"garbage",
        b"v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 18\r\n",
        b"v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n"
        b"m=video 4000 RTP/AVP 96\r\n",
    ],
)
def test_sdp_without_usable_g711_audio_is_a_mismatch(body: bytes) -> None:
    with pytest.raises(MediaMismatch):
        read_answer(body)
    with pytest.raises(MediaMismatch):
        answer_offer(body, "127.0.0.1", 20000, "1")


def test_a_wildcard_bind_is_advertised_as_loopback() -> None:
    assert reachable_host("0.0.0.0") == "127.0.0.1"  # noqa: S104
    assert reachable_host("::") == "::1"
    assert reachable_host("192.0.2.7") == "192.0.2.7"


# -- digest from HA1 --------------------------------------------------------------------------

REALM = "acme.sip"


SIP_PASSWORD = "the-real-password"


def account(password: str = SIP_PASSWORD) -> AccountInfo:
    return AccountInfo(
        id="acc",
        tenant_id="t",
        extension="101",
        user_id="u",
        realm=REALM,
        ha1_md5=ha1("101", REALM, password, DigestAlgorithm.MD5),
        ha1_sha256=ha1("101", REALM, password, DigestAlgorithm.SHA256),
        enabled=True,
        allowed_networks=(),
        allowed_countries=frozenset(),
        max_contacts=5,
        caller_id_name=None,
    )


def challenged(challenger: DigestChallenger, status: int = 407) -> tuple[SipRequest, SipResponse]:
    request = SipRequest(
        "INVITE",
        SipUri(REALM, user="102"),
        from_=NameAddr(SipUri(REALM, user="101"), params={"tag": "a"}),
        to=NameAddr(SipUri(REALM, user="102")),
        call_id="c",
    )
    response = make_response(request, status)
    name = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
    for value in challenger.challenge():
        response.add_header(name, value)
    return request, response


@pytest.mark.parametrize("algorithm", [DigestAlgorithm.SHA256, DigestAlgorithm.MD5])
def test_the_gateway_authenticates_from_the_stored_ha1_alone(algorithm: DigestAlgorithm) -> None:
    challenger = DigestChallenger(REALM, b"k" * 32, algorithms=(algorithm,))
    request, response = challenged(challenger)
    value = authorization(response, "INVITE", str(request.uri), account())
    lookup = {DigestAlgorithm.MD5: account().ha1_md5, DigestAlgorithm.SHA256: account().ha1_sha256}
    assert (
        challenger.verify_header("INVITE", value, lambda _u, _r, family: lookup[family])
        is DigestOutcome.OK
    )
    wrong = account("another-password")
    other = challenger.verify_header(
        "INVITE",
        value,
        lambda _u, _r, family: wrong.ha1_md5 if family.value == "MD5" else wrong.ha1_sha256,
    )
    assert other is DigestOutcome.BAD_RESPONSE


def test_a_challenge_from_another_realm_is_not_answered() -> None:
    challenger = DigestChallenger("evil.example", b"k" * 32)
    request, response = challenged(challenger, 401)
    with pytest.raises(DigestError, match="realm"):
        authorization(response, "REGISTER", str(request.uri), account())
