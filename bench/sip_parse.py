"""Time pomelo.sip.parse_message on a typical INVITE and 200 OK; print one JSON line.

Bounded: a fixed number of timed batches, well under 10 s on a 2-core machine. When the
``sipmessage`` package (a pure-Python SIP parser on PyPI) happens to be importable it is timed
on the same messages for comparison; it is not a project dependency, so "null" is printed
otherwise. Note it is lazier than Pomelo: it parses only the Request-URI eagerly, so a
"typed" variant that also parses Via/From/To/CSeq/Contact is reported too.

Pomelo checks the Request-URI while parsing but may build its SipUri on first access, so
``invite_with_uri_us_median`` also reads ``.uri``, which is what a UAS or proxy always does.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pomelo.sip.message import SipRequest, parse_message

SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.101\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.101\r\n"
    b"t=0 0\r\n"
    b"m=audio 49172 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    b"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY\r\n"
    b"Supported: replaces, timer\r\n"
    b"User-Agent: Pomelo-bench/1.0\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)

RESPONSE = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP server10.biloxi.example.com;branch=z9hG4bKnashds8;received=192.0.2.3\r\n"
    b"Via: SIP/2.0/UDP bigbox3.site3.atlanta.example.com;branch=z9hG4bK77ef4c2312983.1\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;received=192.0.2.1\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:bob@192.0.2.4>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)

BATCH = 2000
BATCHES = 20


def median_us(parse: Callable[[bytes], object], data: bytes) -> float:
    """Median over batches of the mean per-call time, which damps scheduler noise."""
    for _ in range(BATCH // 4):
        parse(data)
    samples = []
    for _ in range(BATCHES):
        start = time.perf_counter()
        for _ in range(BATCH):
            parse(data)
        samples.append((time.perf_counter() - start) / BATCH * 1e6)
    return round(statistics.median(samples), 2)


def parse_with_uri(data: bytes) -> object:
    message = parse_message(data)
    return message.uri if isinstance(message, SipRequest) else message


def sipmessage_parsers() -> tuple[Callable[[bytes], object], Callable[[bytes], object]] | None:
    try:
        import sipmessage  # type: ignore[import-not-found]
    except ImportError:
        return None

    def typed(data: bytes) -> object:
        message = sipmessage.Message.parse(data)
        headers = message.headers
        for via in headers.getlist("Via"):
            sipmessage.Via.parse(via)
        sipmessage.Address.parse(headers.get("From"))
        sipmessage.Address.parse(headers.get("To"))
        sipmessage.CSeq.parse(headers.get("CSeq"))
        contact = headers.get("Contact")
        if contact:
            sipmessage.Address.parse(contact)
        return message

    return sipmessage.Message.parse, typed


def main() -> None:
    result: dict[str, object] = {
        "bench": "sip_parse",
        "invite_us_median": median_us(parse_message, INVITE),
        "response_us_median": median_us(parse_message, RESPONSE),
        "invite_with_uri_us_median": median_us(parse_with_uri, INVITE),
        "invite_bytes": len(INVITE),
        "response_bytes": len(RESPONSE),
        "iterations": BATCH * BATCHES,
        "python": platform.python_version(),
    }
    other = sipmessage_parsers()
    result["sipmessage_invite_us_median"] = median_us(other[0], INVITE) if other else None
    result["sipmessage_response_us_median"] = median_us(other[0], RESPONSE) if other else None
    result["sipmessage_typed_invite_us_median"] = median_us(other[1], INVITE) if other else None
    result["sipmessage_typed_response_us_median"] = median_us(other[1], RESPONSE) if other else None
    print(json.dumps(result))


if __name__ == "__main__":
    main()
