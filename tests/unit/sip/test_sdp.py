"""SDP parsing/serialization and the RFC 3264 answerer."""

from __future__ import annotations

import pytest

from pomelo.sip.errors import SdpParseError
from pomelo.sip.sdp import (
    Codec,
    RtpMap,
    build_answer,
    parse_sdp,
)

OFFER = (
    "v=0\r\n"
    "o=alice 2890844526 2890844527 IN IP4 192.0.2.10\r\n"
    "s=call\r\n"
    "i=a session\r\n"
    "c=IN IP4 192.0.2.10\r\n"
    "b=AS:64\r\n"
    "t=0 0\r\n"
    "a=tool:test\r\n"
    "m=audio 49170 RTP/AVP 18 8 0 101\r\n"
    "a=rtpmap:18 G729/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=ptime:20\r\n"
    "a=rtcp:49171 IN IP4 192.0.2.10\r\n"
    "a=sendonly\r\n"
    "m=video 51372 RTP/AVP 31\r\n"
    "a=rtpmap:31 H261/90000\r\n"
    "m=audio 49180 RTP/AVP 96\r\n"
    "c=IN IP4 192.0.2.11\r\n"
    "a=rtpmap:96 opus/48000/2\r\n"
)


def test_parse_fields() -> None:
    sdp = parse_sdp(OFFER.encode())
    assert sdp.origin.username == "alice"
    assert sdp.origin.session_version == "2890844527"
    assert sdp.session_name == "call"
    assert sdp.connection is not None and sdp.connection.address == "192.0.2.10"
    assert sdp.timing == ["0 0"]
    assert sdp.attribute("tool") == "test"
    audio, video, opus = sdp.media
    assert (audio.media, audio.port, audio.proto) == ("audio", 49170, "RTP/AVP")
    assert audio.formats == ["18", "8", "0", "101"]
    assert audio.rtpmaps[0] == RtpMap(0, "PCMU", 8000)
    assert audio.rtpmaps[101] == RtpMap(101, "telephone-event", 8000)
    assert audio.fmtp == {101: "0-15"}
    assert audio.ptime == 20
    assert audio.direction == "sendonly"
    assert audio.rtcp is not None and audio.rtcp[0] == 49171
    assert video.direction == "sendrecv"
    assert opus.rtpmaps[96].channels == 2
    assert sdp.connection_for(opus).address == "192.0.2.11"  # type: ignore[union-attr]


def test_round_trip() -> None:
    sdp = parse_sdp(OFFER)
    assert sdp.serialize().decode() == OFFER
    assert str(parse_sdp(sdp.serialize())) == OFFER


def test_lf_only_line_endings() -> None:
    sdp = parse_sdp(OFFER.replace("\r\n", "\n"))
    assert len(sdp.media) == 3


@pytest.mark.parametrize(
    "text",
    [
        "",
        "v=1\r\n",
        "v=0\r\ns=-\r\nt=0 0\r\n",
        "v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\n",
        "v=0\r\no=a 1 IN IP4 h\r\ns=-\r\nt=0 0\r\n",
        "v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio x RTP/AVP 0\r\n",
        "v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP\r\n",
        "v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nbogus\r\n",
        "v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nc=IN IP4\r\n",
        "v=0\r\no=a 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\nt=0 0\r\n",
    ],
)
def test_malformed(text: str) -> None:
    with pytest.raises(SdpParseError):
        parse_sdp(text)


def test_answer_keeps_order_rejects_and_mirrors() -> None:
    offer = parse_sdp(OFFER)
    answer = build_answer(offer, address="198.51.100.5", ports=[40000, 40002], session_id=7)
    assert answer.origin.address == "198.51.100.5"
    assert answer.origin.session_id == "7"
    assert answer.timing == offer.timing
    audio, video, opus = answer.media
    assert (audio.port, audio.formats) == (40000, ["8", "0", "101"])
    assert audio.direction == "recvonly"
    assert audio.fmtp == {101: "0-15"}
    assert audio.ptime == 20
    assert (video.media, video.port, video.formats) == ("video", 0, ["31"])
    assert (opus.media, opus.port) == ("audio", 0)
    assert parse_sdp(answer.serialize()).media[0].formats == ["8", "0", "101"]


def test_answer_keeps_offered_dynamic_payload_type() -> None:
    offer = parse_sdp(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        "m=audio 5000 RTP/AVP 0 96\r\na=rtpmap:96 telephone-event/8000\r\na=recvonly\r\n"
    )
    answer = build_answer(offer, address="2001:db8::1", ports=[6000])
    media = answer.media[0]
    assert media.formats == ["0", "96"]
    assert media.rtpmaps[96].encoding == "telephone-event"
    assert media.fmtp == {96: "0-16"}  # no fmtp offered: our default applies
    assert media.direction == "sendonly"
    assert answer.connection is not None and answer.connection.addrtype == "IP6"


@pytest.mark.parametrize(
    ("offered", "wanted", "expected"),
    [
        ("sendrecv", None, "sendrecv"),
        ("inactive", None, "inactive"),
        ("sendrecv", "sendonly", "sendonly"),
        ("sendonly", "sendonly", "inactive"),
        ("recvonly", "sendrecv", "sendonly"),
    ],
)
def test_direction_combination(offered: str, wanted: str | None, expected: str) -> None:
    offer = parse_sdp(
        f"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        f"m=audio 5000 RTP/AVP 0\r\na={offered}\r\n"
    )
    answer = build_answer(offer, address="192.0.2.2", ports=[6000], direction=wanted)
    assert answer.media[0].direction == expected


def test_only_telephone_event_is_rejected() -> None:
    offer = parse_sdp(
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        "m=audio 5000 RTP/AVP 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
    answer = build_answer(offer, address="192.0.2.2", ports=[6000])
    assert answer.media[0].port == 0


def test_custom_codecs_and_port_exhaustion() -> None:
    offer = parse_sdp(OFFER)
    answer = build_answer(
        offer, address="192.0.2.2", ports=[6000, 6002], codecs=[Codec("opus", 48000, None, 2)]
    )
    assert [m.port for m in answer.media] == [0, 0, 6000]
    with pytest.raises(ValueError, match="ports"):
        build_answer(offer, address="192.0.2.2", ports=[])
