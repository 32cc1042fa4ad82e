"""Property tests: hostile input only ever yields SipParseError; generated messages round trip."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pomelo.sip.errors import SdpParseError, SipFramingError, SipParseError
from pomelo.sip.framing import StreamFramer
from pomelo.sip.message import SipMessage, SipRequest, SipResponse, Via, parse_message
from pomelo.sip.sdp import build_answer, parse_sdp
from pomelo.sip.uri import NameAddr, SipUri, parse_uri

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SEED = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport\r\n"
    b"v: SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bKx;received=10.0.0.1\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob \\"B\\"" <sip:bob@biloxi.example.com>\r\n'
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com>;expires=60, sip:x@y;q=0.1\r\n"
    b"Route: <sip:p1.example.com;lr>\r\n"
    b"Subject: folded\r\n  value\r\n"
    b'Warning: 399 host "text"\r\n'
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n\r\nv=0\r\n"
)


def touch_everything(message: SipMessage) -> None:
    """Lazily parsed parts must fail the same way as the eager ones."""
    for via in message.vias:
        _ = (via.params, via.branch, via.rport, via.received, str(via))
    for item in [message.from_, message.to, *message.contacts, *message.routes]:
        _ = (item.params, item.tag, str(item))
        with contextlib.suppress(SipParseError):
            _ = str(item.uri)
    message.serialize()


def parse_only_parse_errors(data: bytes) -> None:
    try:
        message = parse_message(data)
    except SipParseError as error:
        reason = error.reason
    else:
        touch_everything(message)
        return
    assert isinstance(reason, str)
    assert reason


@FAST
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    parse_only_parse_errors(data)


@FAST
@given(st.binary(max_size=300))
def test_random_bytes_after_valid_start_line(data: bytes) -> None:
    parse_only_parse_errors(b"INVITE sip:a@b SIP/2.0\r\n" + data + b"\r\n\r\n")


_INTERESTING = st.sampled_from(
    [
        b"\r\n",
        b" ",
        b"\t",
        b":",
        b";",
        b",",
        b"<",
        b">",
        b'"',
        b"\\",
        b"@",
        b"=",
        b"%",
        b"\x00",
        b"\xff",
        b"[",
        b"]",
        b"9" * 30,
        b"-1",
        b"\r",
        b"\n",
        b"sip:",
        b"\r\n ",
        b"\r\n\r\n",
    ]
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(SEED)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        if action == "delete":
            del data[position : position + draw(st.integers(1, 20))]
        else:
            chunk = draw(st.one_of(_INTERESTING, st.binary(min_size=1, max_size=8)))
            end = position if action == "insert" else position + len(chunk)
            data[position:end] = chunk
    return bytes(data)


@FAST
@given(mutated())
def test_mutated_valid_message(data: bytes) -> None:
    parse_only_parse_errors(data)


@FAST
@given(st.text(max_size=80))
def test_random_uri_text(text: str) -> None:
    with contextlib.suppress(SipParseError):
        str(parse_uri(text))


TOKEN = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
    min_size=1,
    max_size=12,
)
HOST = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8),
    min_size=1,
    max_size=3,
).map(".".join)
USER = st.text(alphabet="ABCxyz019-_.!~*'()&=+$,;?/", min_size=1, max_size=12)
PORT = st.one_of(st.none(), st.integers(1, 65535))
DISPLAY = st.one_of(
    st.none(),
    st.text(
        alphabet=st.characters(min_codepoint=32, max_codepoint=0x24F, exclude_characters="\x7f"),
        min_size=1,
        max_size=12,
    ),
)


PCHAR = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()",
    min_size=1,
    max_size=10,
)


@st.composite
def sip_uris(draw: st.DrawFn) -> SipUri:
    params = draw(st.dictionaries(PCHAR.map(str.lower), st.one_of(st.none(), PCHAR), max_size=3))
    return SipUri(
        draw(HOST),
        user=draw(st.one_of(st.none(), USER)),
        port=draw(PORT),
        scheme=draw(st.sampled_from(["sip", "sips"])),
        params=params,
    )


@st.composite
def name_addrs(draw: st.DrawFn) -> NameAddr:
    params = draw(st.dictionaries(TOKEN.map(str.lower), st.one_of(st.none(), TOKEN), max_size=3))
    return NameAddr(draw(sip_uris()), draw(DISPLAY), params)


@st.composite
def vias(draw: st.DrawFn) -> Via:
    params = {"branch": "z9hG4bK" + draw(TOKEN)}
    if draw(st.booleans()):
        params["rport"] = None  # type: ignore[assignment]
    return Via(draw(st.sampled_from(["UDP", "TCP", "TLS", "WS"])), draw(HOST), draw(PORT), params)


@st.composite
def messages(draw: st.DrawFn) -> SipRequest | SipResponse:
    common = {
        "from_": draw(name_addrs()),
        "to": draw(name_addrs()),
        "call_id": draw(TOKEN) + "@" + draw(HOST),
        "cseq": draw(st.integers(0, 2**31 - 1)),
        "vias": draw(st.lists(vias(), min_size=1, max_size=3)),
        "contacts": draw(st.lists(name_addrs(), max_size=2)),
        "body": draw(st.binary(max_size=40)),
        "headers": draw(
            st.lists(
                st.tuples(st.sampled_from(["X-A", "Subject", "Allow", "k"]), TOKEN), max_size=3
            )
        ),
    }
    if draw(st.booleans()):
        method = draw(TOKEN)
        return SipRequest(
            method, draw(sip_uris()), max_forwards=draw(st.integers(0, 255)), **common
        )  # type: ignore[arg-type]
    status = draw(st.integers(100, 699))
    return SipResponse(
        status, draw(st.text(alphabet="abc XYZ-é", max_size=12)), cseq_method=draw(TOKEN), **common
    )  # type: ignore[arg-type]


@FAST
@given(messages())
def test_generated_messages_round_trip(message: SipRequest | SipResponse) -> None:
    wire = message.serialize()
    parsed = parse_message(wire)
    assert type(parsed) is type(message)
    assert parsed.serialize() == wire
    assert parsed.vias == message.vias
    assert parsed.from_ == message.from_
    assert parsed.to == message.to
    assert parsed.contacts == message.contacts
    assert parsed.body == message.body
    assert parsed.header_items() == message.header_items()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages(), min_size=1, max_size=3), st.lists(st.integers(1, 80), max_size=20))
def test_framer_reassembles_any_chunking(batch: list[SipMessage], cuts: list[int]) -> None:
    stream = b"".join(m.serialize() for m in batch)
    framer = StreamFramer()
    frames: list[bytes] = []
    position = 0
    for size in [*cuts, len(stream)]:
        frames += framer.feed(stream[position : position + size])
        position += size
    assert frames == [m.serialize() for m in batch]


@FAST
@given(st.binary(max_size=400))
def test_framer_random_bytes(data: bytes) -> None:
    try:
        for frame in StreamFramer(max_header_size=256, max_body_size=64).feed(data):
            with contextlib.suppress(SipParseError):
                parse_message(frame)
    except SipFramingError:
        pass


_SDP_LINES = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "o=- 1 1 IN IP4 h",
                "s=-",
                "t=0 0",
                "c=IN IP4 192.0.2.1",
                "m=audio 4000 RTP/AVP 0 8",
                "a=rtpmap:8 PCMA/8000",
                "a=ptime:20",
                "a=sendonly",
                "a=rtcp:4001",
                "b=AS:64",
            ]
        ),
        st.text(alphabet="vosctmab=:/ 0123456789x\r", max_size=30),
    ),
    max_size=10,
)


@FAST
@given(_SDP_LINES)
def test_sdp_garbage_only_raises_sdp_errors(lines: list[str]) -> None:
    try:
        sdp = parse_sdp("v=0\r\n" + "\r\n".join(lines) + "\r\n")
    except SdpParseError:
        return
    for media in sdp.media:
        _ = (media.rtpmaps, media.fmtp, media.ptime, media.direction, media.rtcp)
    parse_sdp(sdp.serialize())
    with contextlib.suppress(ValueError):
        build_answer(sdp, address="192.0.2.9", ports=[5000, 5002, 5004])
