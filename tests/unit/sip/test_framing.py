"""Stream framing: Content-Length delimiting, keep-alives and the buffer bounds."""

from __future__ import annotations

import pytest

from pomelo.sip.errors import SipFramingError
from pomelo.sip.framing import KEEPALIVE_PING, StreamFramer
from pomelo.sip.message import parse_message


def message(body: bytes = b"", *, compact: bool = False, n: int = 1) -> bytes:
    length = f"l: {len(body)}" if compact else f"Content-Length: {len(body)}"
    return (
        "OPTIONS sip:bob@example.com SIP/2.0\r\n"
        "Via: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK" + str(n) + "\r\n"
        "From: <sip:alice@example.com>;tag=1\r\n"
        "To: <sip:bob@example.com>\r\n"
        f"Call-ID: frame{n}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        f"{length}\r\n\r\n"
    ).encode() + body


def test_whole_messages_in_one_chunk() -> None:
    framer = StreamFramer()
    data = message(b"hello", n=1) + message(n=2) + message(b"x", compact=True, n=3)
    frames = framer.feed(data)
    assert [parse_message(f, require_content_length=True).call_id for f in frames] == [
        "frame1",
        "frame2",
        "frame3",
    ]
    assert framer.buffered == 0


def test_byte_by_byte_feeding() -> None:
    framer = StreamFramer()
    data = message(b"body\r\n\r\nwith blank lines", n=1) + message(n=2)
    frames: list[bytes] = []
    for index in range(len(data)):
        frames += framer.feed(data[index : index + 1])
    assert frames == [message(b"body\r\n\r\nwith blank lines", n=1), message(n=2)]


def test_keepalives_between_messages() -> None:
    framer = StreamFramer()
    assert framer.feed(KEEPALIVE_PING) == [KEEPALIVE_PING]
    assert framer.feed(b"\r\n") == []  # a pong, or the start of another ping
    assert framer.feed(message()) == [message()]
    assert framer.feed(b"\r\n\r") == []
    assert framer.feed(b"\n" + message(n=2)) == [KEEPALIVE_PING, message(n=2)]


def test_missing_content_length_is_fatal() -> None:
    data = message().replace(b"Content-Length: 0\r\n", b"")
    with pytest.raises(SipFramingError, match="missing Content-Length"):
        StreamFramer().feed(data)


@pytest.mark.parametrize("value", [b"-1", b"abc", b"1 2", b"99999999999999"])
def test_invalid_content_length_is_fatal(value: bytes) -> None:
    with pytest.raises(SipFramingError):
        StreamFramer().feed(message().replace(b"Content-Length: 0", b"Content-Length: " + value))


def test_conflicting_content_lengths() -> None:
    data = message().replace(b"Content-Length: 0", b"Content-Length: 0\r\nl: 4")
    with pytest.raises(SipFramingError, match="conflicting"):
        StreamFramer().feed(data)


def test_header_section_bound() -> None:
    framer = StreamFramer(max_header_size=1024)
    framer.feed(b"OPTIONS sip:x SIP/2.0\r\n" + b"X-Junk: " + b"a" * 900)
    with pytest.raises(SipFramingError, match="header section"):
        framer.feed(b"a" * 200)


def test_body_bound() -> None:
    framer = StreamFramer(max_body_size=10)
    with pytest.raises(SipFramingError, match="exceeds"):
        framer.feed(message(b"x" * 11))


def test_partial_body_waits() -> None:
    framer = StreamFramer()
    data = message(b"0123456789")
    assert framer.feed(data[:-3]) == []
    assert framer.buffered == len(data) - 3
    assert framer.feed(data[-3:]) == [data]
