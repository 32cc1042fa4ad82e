"""Parsing, header access, mutation, serialization and response building."""

from __future__ import annotations

import pytest

from pomelo.sip.errors import SipParseError
from pomelo.sip.message import (
    SipRequest,
    SipResponse,
    Via,
    canonical_header_name,
    make_response,
    parse_message,
)
from pomelo.sip.uri import NameAddr, SipUri


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


BODY = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"

INVITE = (
    crlf(
        "INVITE sip:bob@biloxi.example.com SIP/2.0\n"
        "Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\n"
        "Max-Forwards: 70\n"
        "To: Bob <sip:bob@biloxi.example.com>\n"
        'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\n'
        "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\n"
        "CSeq: 314159 INVITE\n"
        "Contact: <sip:alice@pc33.atlanta.example.com>\n"
        "Supported: replaces, timer\n"
        "Content-Type: application/sdp\n"
        f"Content-Length: {len(BODY)}\n\n"
    )
    + BODY
)

OK = crlf(
    "SIP/2.0 200 OK\n"
    "Via: SIP/2.0/UDP server10.biloxi.example.com;branch=z9hG4bKnashds8;received=192.0.2.3\n"
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;received=192.0.2.1\n"
    "To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\n"
    "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\n"
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\n"
    "CSeq: 314159 INVITE\n"
    "Contact: <sip:bob@192.0.2.4>\n"
    "Content-Length: 0\n\n"
)


def request(data: bytes) -> SipRequest:
    message = parse_message(data)
    assert isinstance(message, SipRequest)
    return message


def response(data: bytes) -> SipResponse:
    message = parse_message(data)
    assert isinstance(message, SipResponse)
    return message


class TestParse:
    def test_invite_fields(self) -> None:
        msg = request(INVITE)
        assert msg.method == "INVITE"
        assert isinstance(msg.uri, SipUri)
        assert msg.uri.user == "bob"
        assert msg.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
        assert (msg.cseq, msg.cseq_method) == (314159, "INVITE")
        assert msg.max_forwards == 70
        assert msg.from_.display_name == "Alice"
        assert msg.from_.tag == "1928301774"
        assert msg.to.tag is None
        assert str(msg.contacts[0].uri) == "sip:alice@pc33.atlanta.example.com"
        assert msg.body == BODY
        assert msg.content_type == "application/sdp"

    def test_top_via_params(self) -> None:
        via = request(INVITE).top_via
        assert via is not None
        assert via.transport == "UDP"
        assert (via.host, via.port) == ("pc33.atlanta.example.com", 5060)
        assert via.branch == "z9hG4bK776asdhds"
        assert via.has_magic_cookie
        assert via.rport_requested
        assert via.rport is None
        assert via.received is None

    def test_response_fields(self) -> None:
        msg = response(OK)
        assert (msg.status, msg.reason) == (200, "OK")
        assert msg.is_final and not msg.is_provisional
        assert [v.received for v in msg.vias] == ["192.0.2.3", "192.0.2.1"]
        assert msg.branch == "z9hG4bKnashds8"
        assert msg.to.tag == "a6c85cf"
        assert msg.body == b""

    def test_compact_forms_and_case_insensitivity(self) -> None:
        msg = request(
            crlf(
                "OPTIONS sip:x@example.com SIP/2.0\n"
                "v: SIP/2.0/TCP h.example.com;branch=z9hG4bK1\n"
                "f: <sip:a@example.com>;tag=1\n"
                "t: <sip:x@example.com>\n"
                "i: abc\n"
                "cseq: 1 OPTIONS\n"
                "m: <sip:a@10.0.0.1>\n"
                "k: path\n"
                "c: text/plain\n"
                "s: hello\n"
                "o: presence\n"
                "u: dialog\n"
                "x: 1800\n"
                "e: gzip\n"
                "r: <sip:c@example.com>\n"
                "b: <sip:d@example.com>\n"
                "l: 0\n\n"
            )
        )
        assert msg.call_id == "abc"
        assert msg.header("CALL-ID") == "abc"
        assert msg.header("supported") == msg.header("K") == "path"
        assert msg.header("Content-Type") == "text/plain"
        assert msg.header("subject") == "hello"
        assert msg.header("event") == "presence"
        assert msg.header("allow-events") == "dialog"
        assert msg.header("session-expires") == "1800"
        assert msg.header("content-encoding") == "gzip"
        assert msg.header("refer-to") == "<sip:c@example.com>"
        assert msg.header("referred-by") == "<sip:d@example.com>"
        assert msg.header("l") == "0"
        text = msg.serialize().decode()
        for long_name in (
            "Via:",
            "From:",
            "To:",
            "Call-ID:",
            "CSeq:",
            "Contact:",
            "Supported:",
            "Content-Type:",
            "Subject:",
            "Event:",
            "Allow-Events:",
            "Session-Expires:",
            "Content-Encoding:",
            "Refer-To:",
            "Referred-By:",
            "Content-Length:",
        ):
            assert f"\r\n{long_name} " in text

    def test_multi_values_are_split_and_ordered(self) -> None:
        msg = request(
            crlf(
                "INVITE sip:x@example.com SIP/2.0\n"
                "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/TCP b.example.com;"
                'branch=z9hG4bK2;x="a,b"\n'
                "Via: SIP/2.0/UDP c.example.com:5070;branch=z9hG4bK3\n"
                "Route: <sip:p1.example.com;lr>,<sip:p2.example.com;lr>\n"
                "Route: <sip:p3.example.com;lr>\n"
                "Record-Route: <sip:rr1.example.com;lr>, <sip:rr2.example.com;lr>\n"
                'Contact: "Doe, J" <sip:j@a.com>;q=0.5, <sip:k@b.com>;q=0.1\n'
                "From: <sip:a@example.com>;tag=1\n"
                "To: <sip:x@example.com>\n"
                "Call-ID: multi\n"
                "CSeq: 2 INVITE\n"
                "Allow: INVITE, ACK\n"
                "Allow: BYE\n"
                "Content-Length: 0\n\n"
            )
        )
        assert [v.branch for v in msg.vias] == ["z9hG4bK1", "z9hG4bK2", "z9hG4bK3"]
        assert msg.vias[1].params["x"] == '"a,b"'
        assert [r.uri.host for r in msg.routes if isinstance(r.uri, SipUri)] == [
            "p1.example.com",
            "p2.example.com",
            "p3.example.com",
        ]
        assert len(msg.record_routes) == 2
        assert [c.display_name for c in msg.contacts] == ["Doe, J", None]
        assert msg.header_values("Allow") == ["INVITE, ACK", "BYE"]
        assert msg.header_values("via")[2] == "SIP/2.0/UDP c.example.com:5070;branch=z9hG4bK3"

    def test_line_folding(self) -> None:
        msg = request(
            crlf(
                "INVITE sip:x@example.com SIP/2.0\n"
                "Via: SIP/2.0/UDP a.example.com\n"
                "  ;branch=z9hG4bK1\n"
                "From: <sip:a@example.com>\n"
                "\t;tag=1\n"
                "To: <sip:x@example.com>\n"
                "Call-ID: fold\n"
                "CSeq: 1 INVITE\n"
                "Subject: I know you're there,\n"
                "         pick up the phone\n"
                "Content-Length: 0\n\n"
            )
        )
        assert msg.branch == "z9hG4bK1"
        assert msg.from_.tag == "1"
        assert msg.header("subject") == "I know you're there, pick up the phone"

    def test_udp_without_content_length_takes_rest_of_datagram(self) -> None:
        data = INVITE.replace(f"Content-Length: {len(BODY)}\r\n".encode(), b"")
        assert request(data).body == BODY

    def test_leading_crlf_is_ignored(self) -> None:
        assert request(b"\r\n\r\n" + INVITE).method == "INVITE"

    def test_stream_requires_content_length(self) -> None:
        data = INVITE.replace(f"Content-Length: {len(BODY)}\r\n".encode(), b"")
        with pytest.raises(SipParseError, match="Content-Length is required"):
            parse_message(data, require_content_length=True)

    def test_contact_wildcard(self) -> None:
        msg = request(
            crlf(
                "REGISTER sip:example.com SIP/2.0\n"
                "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\n"
                "From: <sip:a@example.com>;tag=1\n"
                "To: <sip:a@example.com>\n"
                "Call-ID: reg\n"
                "CSeq: 1 REGISTER\n"
                "Contact: *\n"
                "Expires: 0\n"
                "Content-Length: 0\n\n"
            )
        )
        assert msg.contact_wildcard
        assert msg.contacts == []
        assert msg.header("contact") == "*"
        assert b"\r\nContact: *\r\n" in msg.serialize()


class TestLimits:
    def test_max_size(self) -> None:
        with pytest.raises(SipParseError, match="larger than"):
            parse_message(INVITE, max_size=100)

    def test_max_headers(self) -> None:
        many = INVITE.replace(b"Supported:", b"X-A: 1\r\n" * 300 + b"Supported:")
        with pytest.raises(SipParseError, match="header lines"):
            parse_message(many)
        assert parse_message(many, max_headers=400).header("x-a") == "1"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not terminated"),
        (INVITE.replace(b"\r\n\r\n", b"\r\n"), "not terminated"),
        (INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\n"), "bare CR or LF"),
        (INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards 70"), "without colon"),
        (INVITE.replace(b"Max-Forwards: 70", b"Max Forwards: 70"), "invalid header name"),
        (INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 256"), "too large"),
        (INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: seventy"), "not a number"),
        (INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: INVITE"), "CSeq"),
        (INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 4294967296 INVITE"), "too large"),
        (INVITE.replace(b"Call-ID: a84b", b"Call-ID: a 84b"), "Call-ID"),
        (INVITE.replace(b"SIP/2.0/UDP", b"SIP/3.0/UDP"), "Via protocol"),
        (INVITE.replace(b":5060;", b":65536;"), "port"),
        (INVITE.replace(b"Max-Forwards", b"To: <sip:x@y>\r\nMax-Forwards"), "duplicate To"),
        (INVITE.replace(b"Alice", b"Al\xffce"), "UTF-8"),
        (INVITE.replace(b"INVITE sip", b"INV@ITE sip"), "method"),
        (INVITE.replace(b"CSeq: 314159", b"CSeq: 1\r\nCSeq: 2"), "CSeq"),
        (INVITE.replace(b"Contact: <", b"Contact: *, <"), "Contact"),
        (OK.replace(b"200 OK", b"2000 OK"), "status code"),
        (OK.replace(b"200 OK", b"099 OK"), "status code"),
        (OK.replace(b"SIP/2.0 200", b"SIP/2.1 200"), "version"),
        (OK.replace(b"Content-Length: 0", b"Content-Length: 5"), "larger than"),
    ],
)
def test_malformed_messages(data: bytes, reason: str) -> None:
    with pytest.raises(SipParseError, match=reason):
        parse_message(data)


class TestSerialize:
    @pytest.mark.parametrize("data", [INVITE, OK])
    def test_round_trip_is_stable(self, data: bytes) -> None:
        once = parse_message(data).serialize()
        assert parse_message(once).serialize() == once

    def test_canonical_output(self) -> None:
        text = request(INVITE).serialize().decode()
        assert text.startswith("INVITE sip:bob@biloxi.example.com SIP/2.0\r\nVia: SIP/2.0/UDP ")
        assert '\r\nTo: "Bob" <sip:bob@biloxi.example.com>\r\n' in text
        assert text.endswith(f"Content-Length: {len(BODY)}\r\n\r\n" + BODY.decode())

    def test_content_length_follows_body(self) -> None:
        msg = request(INVITE)
        msg.body = b"hello"
        assert b"\r\nContent-Length: 5\r\n\r\nhello" in msg.serialize()

    def test_canonical_names(self) -> None:
        assert canonical_header_name("i") == "Call-ID"
        assert canonical_header_name("www-authenticate") == "WWW-Authenticate"
        assert canonical_header_name("X-Custom") == "X-Custom"


class TestMutation:
    def test_set_add_remove_lazy_headers(self) -> None:
        msg = request(INVITE)
        msg.add_header("X-Tenant", "acme")
        msg.add_header("x-tenant", "beta")
        assert msg.header_values("X-TENANT") == ["acme", "beta"]
        msg.set_header("X-Tenant", "gamma")
        assert msg.header_values("x-tenant") == ["gamma"]
        msg.remove_header("x-tenant")
        assert not msg.has_header("X-Tenant")

    def test_set_eager_headers_parses_them(self) -> None:
        msg = request(INVITE)
        msg.set_header("t", "<sip:carol@example.com>;tag=9")
        assert msg.to.tag == "9"
        msg.add_header("Via", "SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp")
        assert msg.vias[-1].transport == "TCP"
        msg.set_header("Max-Forwards", "10")
        assert msg.max_forwards == 10
        with pytest.raises(SipParseError):
            msg.set_header("CSeq", "x")
        with pytest.raises(ValueError, match="mandatory"):
            msg.remove_header("Call-ID")

    def test_stamp_received_and_rport(self) -> None:
        via = request(INVITE).vias[0]
        via.stamp_source("198.51.100.7", 40123)
        assert via.received == "198.51.100.7"
        assert via.rport == 40123
        assert str(via).endswith(";branch=z9hG4bK776asdhds;rport=40123;received=198.51.100.7")
        assert via.response_target() == ("198.51.100.7", 40123)

    def test_received_only_added_when_source_differs(self) -> None:
        via = Via("UDP", "192.0.2.1", 5060, {"branch": "z9hG4bKx"})
        via.stamp_source("192.0.2.1", 5060)
        assert via.received is None
        via.stamp_source("192.0.2.9", 5060)
        assert via.received == "192.0.2.9"
        assert via.response_target() == ("192.0.2.9", 5060)

    def test_build_request_from_scratch(self) -> None:
        msg = SipRequest(
            "OPTIONS",
            "sip:bob@example.com",
            from_=NameAddr("sip:alice@example.com", params={"tag": "x"}),
            to=NameAddr("sip:bob@example.com"),
            call_id="c1",
            vias=[Via("UDP", "192.0.2.1", 5060, {"branch": "z9hG4bK1", "rport": None})],
            headers=[("Accept", "application/sdp")],
        )
        parsed = request(msg.serialize())
        assert parsed.cseq_method == "OPTIONS"
        assert parsed.max_forwards == 70
        assert parsed.header("accept") == "application/sdp"
        assert parsed.vias[0].rport_requested

    def test_copy_is_deep(self) -> None:
        msg = request(INVITE)
        clone = msg.copy()
        clone.vias[0].branch = "z9hG4bKother"
        clone.to.tag = "t"
        assert msg.branch == "z9hG4bK776asdhds"
        assert msg.to.tag is None


class TestMakeResponse:
    def test_copies_mandatory_headers(self) -> None:
        req = request(INVITE)
        resp = make_response(req, 180, to_tag="as83kd9bs")
        assert resp.reason == "Ringing"
        assert [str(v) for v in resp.vias] == [str(v) for v in req.vias]
        assert resp.from_ == req.from_
        assert resp.to.tag == "as83kd9bs"
        assert req.to.tag is None
        assert (resp.call_id, resp.cseq, resp.cseq_method) == (req.call_id, 314159, "INVITE")
        parsed = response(resp.serialize())
        assert parsed.status == 180
        assert parsed.to.tag == "as83kd9bs"

    def test_existing_to_tag_is_kept(self) -> None:
        req = request(INVITE)
        req.to.tag = "dialog"
        assert make_response(req, 200, to_tag="new").to.tag == "dialog"

    def test_trying_echoes_timestamp(self) -> None:
        req = request(INVITE)
        req.add_header("Timestamp", "54")
        resp = make_response(req, 100)
        assert resp.header("timestamp") == "54"
        assert resp.to.tag is None
        assert make_response(req, 486, "Busy", copy_record_route=True).reason == "Busy"

    def test_rejects_bad_status(self) -> None:
        with pytest.raises(ValueError, match="status"):
            make_response(request(INVITE), 99)


# -- fast paths ------------------------------------------------------------------------------
# The parser takes shortcuts for the common shapes of the Request-URI, Via, From, To, Contact,
# Route, CSeq and friends. Each shortcut must give exactly what the general grammar gives, and
# anything just outside it must still be decided by the general grammar.


def with_header(line: str, start: str = "INVITE sip:bob@biloxi.example.com SIP/2.0") -> bytes:
    return crlf(
        f"{start}\n"
        "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\n"
        "From: <sip:alice@atlanta.example.com>;tag=1\n"
        "To: <sip:bob@biloxi.example.com>\n"
        "Call-ID: fast@path\n"
        "CSeq: 1 INVITE\n"
        f"{line}\n"
        "Content-Length: 0\n\n"
    )


NAME_ADDRS = [
    "Alice <sip:alice@atlanta.example.com>;tag=1928301774",
    "Bob Smith <sip:bob@biloxi.example.com>",
    "Bob<sip:bob@biloxi.example.com>",
    '"Alice" <sip:a@example.com>;tag=1;foo',
    '"A \\"B\\"" <sip:a@example.com>',
    '"" <sip:a@example.com>',
    "<sips:a@example.com:5061;transport=tls>;expires=60;q=0.5",
    "<tel:+1-555-0100>",
    "<mailto:a@example.com>",
    "<sip:a@example.com>;tag=x; foo=bar",
    '<sip:a@example.com>;+sip.instance="<urn:uuid:1>"',
    "<sip:a@[2001:db8::1]:5060>;received=[2001:db8::2]",
    "sip:a@example.com;tag=bare",
    '"\u00c9mile" <sip:e@example.com>',
]


@pytest.mark.parametrize("value", NAME_ADDRS)
def test_name_addr_fast_path_matches_general_grammar(value: str) -> None:
    from pomelo.sip.uri import parse_name_addr, parse_name_addr_list

    msg = request(with_header(f"Contact: {value}"))
    general = parse_name_addr_list(value, "Contact")
    assert len(msg.contacts) == len(general) == 1
    parsed, expected = msg.contacts[0], general[0]
    assert (parsed.display_name, parsed._uri_raw, parsed.params, str(parsed)) == (
        expected.display_name,
        expected._uri_raw,
        expected.params,
        str(expected),
    )
    data = with_header("X: y").replace(b"<sip:alice@atlanta.example.com>;tag=1", value.encode())
    from_ = request(data)
    assert str(from_.from_) == str(parse_name_addr(value, "From"))


@pytest.mark.parametrize(
    ("value", "host", "port", "transport"),
    [
        ("SIP/2.0/UDP h.example.com:5060;branch=z9hG4bKa;rport", "h.example.com", 5060, "UDP"),
        ("SIP/2.0/udp h.example.com;branch=z9hG4bKa", "h.example.com", None, "UDP"),
        ("SIP/2.0/TLS h:65535;branch=z9hG4bKa", "h", 65535, "TLS"),
        ("SIP/2.0/TCP h:05060;branch=z9hG4bKa", "h", 5060, "TCP"),
        ("SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKa", "2001:db8::1", 5060, "UDP"),
        ("SIP/2.0/UDP h ; branch = z9hG4bKa", "h", None, "UDP"),
        ('SIP/2.0/UDP h;branch=z9hG4bKa;x="q"', "h", None, "UDP"),
    ],
)
def test_via_fast_path_matches_general_grammar(
    value: str, host: str, port: int | None, transport: str
) -> None:
    from pomelo.sip.message import parse_via_list

    msg = request(with_header(f"Via: {value}"))
    via, general = msg.vias[1], parse_via_list(value)[0]
    assert (via.transport, via.host, via.port) == (transport, host, port)
    assert (via.params, str(via)) == (general.params, str(general))


@pytest.mark.parametrize(
    "line",
    [
        "Via: SIP/2.0/UDP h:65536;branch=z9hG4bKa",
        "Via: SIP/2.0/UDP h:123456;branch=z9hG4bKa",
        "Contact: <sip:a@example.com>;tag=x,",
        "Route: sip:p.example.com;lr",
        "Max-Forwards: 0256",
        "CSeq: 2147483648 INVITE",
    ],
)
def test_fast_path_misses_are_still_rejected(line: str) -> None:
    with pytest.raises(SipParseError):
        parse_message(with_header(line))


def test_leading_zeros_in_scalars_are_accepted() -> None:
    msg = request(with_header("Max-Forwards: 0068").replace(b"CSeq: 1 ", b"CSeq: 007 "))
    assert (msg.max_forwards, msg.cseq) == (68, 7)


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        ("INVITE sip:bob@biloxi.example.com SIP/2.0", "sip:bob@biloxi.example.com"),
        ("INVITE sip:bob@192.0.2.4:5060;transport=tcp SIP/2.0", None),
        ("INVITE sips:biloxi.example.com;lr SIP/2.0", None),
        ("INVITE SIP:bob@biloxi.example.com SIP/2.0", "sip:bob@biloxi.example.com"),
        ("INVITE sip:bob@192.0.2.4:05060 SIP/2.0", "sip:bob@192.0.2.4:5060"),
        ("INVITE sip:bob:pw@[2001:db8::1]:5060 SIP/2.0", "sip:bob:pw@[2001:db8::1]:5060"),
        ("INVITE tel:+1-555-0100 SIP/2.0", None),
    ],
)
def test_request_uri_is_the_general_parse(start: str, expected: str | None) -> None:
    from pomelo.sip.uri import parse_uri

    target = start.split(" ")[1]
    data = with_header("X: y", start)
    untouched = request(data)
    # Serializing before anybody looked at the URI prints what the general parser would.
    assert untouched.start_line() == f"INVITE {expected or target} SIP/2.0"
    assert untouched.copy().start_line() == untouched.start_line()
    msg = request(data)
    assert msg.uri == parse_uri(target)
    assert str(msg.uri) == (expected or target)
    assert msg.uri is msg.uri


@pytest.mark.parametrize(
    "target",
    ["sip:bob@h:65536", "sip:bob@h:0123456", "sip:bob@h?Subject=x", "sip:bob@[zz::1]", "sip:@h"],
)
def test_bad_request_uris_are_rejected_by_the_parser(target: str) -> None:
    with pytest.raises(SipParseError):
        parse_message(with_header("X: y", f"INVITE {target} SIP/2.0"))


def test_request_uri_can_be_replaced_before_first_access() -> None:
    msg = request(INVITE)
    msg.uri = SipUri("example.org", user="carol")
    assert msg.start_line() == "INVITE sip:carol@example.org SIP/2.0"
    assert isinstance(msg.copy().uri, SipUri)
