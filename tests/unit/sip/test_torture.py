"""Torture cases modelled on RFC 4475 §3.1.1 (valid) and §3.1.2 (invalid) descriptions.

The messages are written for this suite, following what each RFC case exercises. Valid ones
must parse; invalid ones must raise SipParseError and nothing else.
"""

from __future__ import annotations

import pytest

from pomelo.sip.errors import SipParseError
from pomelo.sip.message import SipRequest, SipResponse, parse_message
from pomelo.sip.uri import AbsoluteUri, SipUri


def msg(text: str, body: bytes = b"") -> bytes:
    return text.replace("\n", "\r\n").encode() + body


COMMON = (
    "Via: SIP/2.0/UDP host1.example.net;branch=z9hG4bKkdjuw2\n"
    "From: <sip:caller@example.net>;tag=2234923\n"
    "To: <sip:callee@example.com>\n"
    "Call-ID: torture.{name}@192.0.2.4\n"
    "Max-Forwards: 70\n"
)


def simple(start: str, cseq: str, name: str, extra: str = "", length: int = 0) -> bytes:
    return msg(
        f"{start}\n{COMMON.format(name=name)}CSeq: {cseq}\n{extra}Content-Length: {length}\n\n"
    )


# -- §3.1.1 valid ------------------------------------------------------------------------


def test_short_tortuous_invite() -> None:
    """3.1.1.1: odd whitespace, folding, compact and mixed-case names, escaped quotes."""
    body = (
        b"v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.3\r\ns=-\r\nc=IN IP4 192.0.2.4\r\n"
        b"t=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\nm=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n"
    )
    data = msg(
        "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\n"
        "TO :\n"
        " sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\n"
        'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>\n'
        "  ;\n"
        "  tag = 98asjd8\n"
        "MaX-fOrWaRdS: 0068\n"
        "Call-ID: wsinv.ndaksdj@192.0.2.1\n"
        "Content-Length   : " + str(len(body)) + "\n"
        "cseq: 0009\n"
        "  INVITE\n"
        "Via  : SIP  /   2.0\n"
        " /UDP\n"
        "    192.0.2.2;branch=390skdjuw\n"
        "s :\n"
        "NewFangledHeader:   newfangled value\n"
        " continued newfangled value\n"
        "UnknownHeaderWithUnusualValue: ;;,,;;,;\n"
        "Content-Type: application/sdp\n"
        "Route:\n"
        " <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\n"
        "v:  SIP  / 2.0  / TCP     spindle.example.com   ;\n"
        "  branch  =   z9hG4bK9ikj8  ,\n"
        " SIP  /    2.0   / UDP  192.168.255.111   ; branch=\n"
        " z9hG4bK30239\n"
        'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =\n'
        "      newvalue ;\n"
        "  secondparam ; q = 0.33\n\n",
        body,
    )
    message = parse_message(data)
    assert isinstance(message, SipRequest)
    assert message.to.tag == "1918181833n"
    assert message.from_.display_name == 'J Rosenberg \\"'
    assert message.from_.tag == "98asjd8"
    assert message.max_forwards == 68
    assert (message.cseq, message.cseq_method) == (9, "INVITE")
    assert [v.branch for v in message.vias] == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    assert [v.transport for v in message.vias] == ["UDP", "TCP", "UDP"]
    assert message.header("subject") == ""
    assert message.header("newfangledheader") == "newfangled value continued newfangled value"
    assert message.header("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert message.contacts[0].display_name == 'Quoted string ""'
    assert message.contacts[0].params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert message.body == body
    assert parse_message(message.serialize()).serialize() == message.serialize()


def test_wide_range_of_valid_characters() -> None:
    """3.1.1.2: token characters in method and header names, UTF-8 in quoted strings."""
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    user = "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    utf8_param = "\xd1\x80\xd0\xb0\xd0\xb1\xd0\xbe\xd1\x82\xd0\xb0\xd1\x8e\xd1\x89\xd0\xb8\xd0\xb9"
    data = msg(
        f"{method} sip:{user}:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0\n"
        "Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~\n"
        f'To: "BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:{user}@example.com>\n'
        "From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;"
        f"fromParam''~+*_!.-%=\"{utf8_param}\";tag=_token~1'+`*%!-.\n"
        "Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{\n"
        f"CSeq: 139122385 {method}\n"
        "Max-Forwards: 255\n"
        "extensionHeader-!.%*+_`'~: \xef\xbb\xbf\xe5\xa4\xa7\xe5\x81\x9c\xe9\x9b\xbb\n"
        "Content-Length: 0\n\n"
    )
    # The literal above is text; bytes >= 0x80 were written as latin-1 code points.
    data = data.decode("utf-8").encode("latin-1")
    message = parse_message(data)
    assert isinstance(message, SipRequest)
    assert message.method == method
    assert message.cseq_method == method
    assert message.max_forwards == 255
    assert isinstance(message.uri, SipUri)
    assert message.uri.user is not None and message.uri.user.startswith("1_unusual.URI~")
    assert message.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert message.from_.tag == "_token~1'+`*%!-."
    assert message.from_.params["fromparam''~+*_!.-%"] == '"работающий"'
    assert message.header("extensionheader-!.%*+_`'~") == "\ufeff大停電"


def test_valid_use_of_percent_escaping() -> None:
    """3.1.1.3 and 3.1.1.4: escaped characters and escaped NULs inside URIs."""
    data = simple(
        "INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0",
        "1 INVITE",
        "esc01",
        extra="Contact: <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>\n",
    )
    message = parse_message(data)
    assert isinstance(message.uri, SipUri)
    assert message.uri.user == "sips%3Auser%40example.com"
    assert parse_message(
        simple(
            "REGISTER sip:example.com SIP/2.0",
            "1 REGISTER",
            "escnull",
            extra="Contact: <sip:%00@host4.example.com>\n",
        )
    ).contacts
    contact = message.contacts[0].uri
    assert contact == SipUri(
        "host5.example.net", user="caller", params={"lr": None, "name": "value%41"}
    )


def test_percent_that_is_not_an_escape() -> None:
    """3.1.1.5: '%' in a method token and in quoted display names is just a character."""
    data = simple(
        "RE%47IST%45R sip:registrar.example.com SIP/2.0",
        "1 RE%47IST%45R",
        "esc02",
        extra='Contact: "%Z%45" <sip:resource@example.com>\n',
    ).replace(b"To: <sip:callee@example.com>", b'To: "%Z%45" <sip:resource@example.com>')
    message = parse_message(data)
    assert isinstance(message, SipRequest)
    assert message.method == "RE%47IST%45R"
    assert message.to.display_name == "%Z%45"


def test_no_lws_between_display_name_and_bracket() -> None:
    """3.1.1.6."""
    data = simple("OPTIONS sip:user@example.com SIP/2.0", "1 OPTIONS", "lwsdisp").replace(
        b"From: <sip:caller@example.net>", b"From: caller<sip:caller@example.com>"
    )
    assert parse_message(data).from_.display_name == "caller"


def test_long_values_in_header_fields() -> None:
    """3.1.1.7: very long tokens, many Vias, long header values."""
    long_tag = "a" * 900
    vias = "".join(f"Via: SIP/2.0/TCP sip{i}.example.com;branch=z9hG4bK{i}\n" for i in range(40))
    data = msg(
        "INVITE sip:user@example.com SIP/2.0\n"
        f"{vias}"
        f"From: <sip:{'x' * 500}@example.net>;tag={long_tag}\n"
        "To: <sip:user@example.com>\n"
        f"Call-ID: {'longreq' * 60}\n"
        "CSeq: 1 INVITE\n"
        f"X-Long: {'word ' * 400}\n"
        "Content-Length: 0\n\n"
    )
    message = parse_message(data)
    assert len(message.vias) == 40
    assert message.from_.tag == long_tag


def test_extra_trailing_octets_in_udp_datagram() -> None:
    """3.1.1.8: octets past Content-Length (here a whole second request) are ignored."""
    first = simple("REGISTER sip:example.com SIP/2.0", "1 REGISTER", "dblreq")
    second = simple("INVITE sip:joe@example.com SIP/2.0", "1 INVITE", "dblreq2")
    message = parse_message(first + second)
    assert isinstance(message, SipRequest)
    assert message.method == "REGISTER"
    assert message.body == b""


def test_semicolons_in_uri_user_part() -> None:
    """3.1.1.9."""
    data = simple("OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0", "1 OPTIONS", "semi")
    uri = parse_message(data)
    assert isinstance(uri, SipRequest)
    assert isinstance(uri.uri, SipUri)
    assert (uri.uri.user, uri.uri.host) == ("user;par=u%40example.net", "example.com")


def test_varied_and_unknown_transports() -> None:
    """3.1.1.10."""
    vias = (
        "Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw\n"
        "Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf\n"
        "Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj\n"
        "Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en\n"
        "Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee\n"
    )
    data = simple("OPTIONS sip:user@example.com SIP/2.0", "1 OPTIONS", "transports").replace(
        b"Via: SIP/2.0/UDP host1.example.net;branch=z9hG4bKkdjuw2\r\n",
        vias.replace("\n", "\r\n").encode(),
    )
    message = parse_message(data)
    assert [v.transport for v in message.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_multipart_mime_body_is_opaque() -> None:
    """3.1.1.11: the body is returned byte for byte, whatever it contains."""
    body = (
        b"--boundary42\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n"
        b"--boundary42\r\nContent-Type: application/octet-stream\r\n\r\n\x00\x01\xfe\xff\r\n"
        b"--boundary42--\r\n"
    )
    data = (
        simple(
            "MESSAGE sip:kumiko@example.org SIP/2.0",
            "1 MESSAGE",
            "mpart",
            extra='Content-Type: multipart/mixed;boundary="boundary42"\n',
            length=len(body),
        )
        + body
    )
    assert parse_message(data).body == body


def test_unusual_reason_phrase() -> None:
    """3.1.1.12: UTF-8 and reserved characters in the reason phrase."""
    reason = "= 2**3 * 5**2 но сто девяносто девять - простое"
    data = simple(f"SIP/2.0 200 {reason}", "1 INVITE", "unreason")
    message = parse_message(data)
    assert isinstance(message, SipResponse)
    assert message.reason == reason
    assert message.serialize().startswith(f"SIP/2.0 200 {reason}\r\n".encode())


def test_empty_reason_phrase() -> None:
    """3.1.1.13."""
    message = parse_message(simple("SIP/2.0 100 ", "1 INVITE", "noreason"))
    assert isinstance(message, SipResponse)
    assert (message.status, message.reason) == (100, "")


def test_unknown_scheme_request_uri_parses() -> None:
    """RFC 4475 §3.3.7-style: unknown schemes parse; the UAS answers 416 later."""
    message = parse_message(simple("OPTIONS nobody:user@example.com SIP/2.0", "1 OPTIONS", "unk"))
    assert isinstance(message, SipRequest)
    assert isinstance(message.uri, AbsoluteUri)


def test_max_forwards_zero_is_valid() -> None:
    data = simple("OPTIONS sip:user@example.com SIP/2.0", "1 OPTIONS", "zeromf")
    assert parse_message(data.replace(b"Max-Forwards: 70", b"Max-Forwards: 0")).max_forwards == 0


# -- §3.1.2 invalid ------------------------------------------------------------------------

VALID = simple("INVITE sip:user@example.com SIP/2.0", "1 INVITE", "base")


def replace(old: str, new: str) -> bytes:
    assert old.encode() in VALID
    return VALID.replace(old.encode(), new.encode())


INVALID: dict[str, bytes] = {
    # 3.1.2.1: empty parameters and list elements.
    "extraneous separators in Via": replace("z9hG4bKkdjuw2", "z9hG4bKkdjuw2;;,;,,"),
    "extraneous separators in Contact": replace(
        "Max-Forwards: 70", 'Contact: "Joe" <sip:joe@example.org>;;;;\r\nMax-Forwards: 70'
    ),
    # 3.1.2.2
    "content length larger than message": replace("Content-Length: 0", "Content-Length: 9999")
    + b"short body",
    # 3.1.2.3
    "negative content length": replace("Content-Length: 0", "Content-Length: -999"),
    # 3.1.2.4 / 3.1.2.5
    "overlarge CSeq": replace("CSeq: 1 INVITE", "CSeq: 36893488147419103232 INVITE"),
    "overlarge Max-Forwards": replace("Max-Forwards: 70", "Max-Forwards: 300"),
    "overlarge Via port": replace("host1.example.net;", "host1.example.net:1234567;"),
    "overlarge Content-Length": replace(
        "Content-Length: 0", "Content-Length: 99999999999999999999999999999"
    ),
    "overlarge Retry-After": replace(
        "Max-Forwards: 70", "Retry-After: 949302838503028349304023988\r\nMax-Forwards: 70"
    ),
    "four-digit warning code": replace(
        "Max-Forwards: 70", 'Warning: 1812 overture "In Progress"\r\nMax-Forwards: 70'
    ),
    # 3.1.2.6
    "unterminated quoted display name": replace(
        "From: <sip:caller@example.net>", 'From: "Bell, Alexander <sip:a.g.bell@bell-tel.com>'
    ),
    # 3.1.2.7
    "<> enclosing Request-URI": replace(
        "INVITE sip:user@example.com", "INVITE <sip:user@example.com>"
    ),
    # 3.1.2.8
    "LWS inside Request-URI": replace("sip:user@example.com SIP", "sip:user@example.com; lr SIP"),
    # 3.1.2.9
    "multiple SP in request line": replace(
        "INVITE sip:user@example.com SIP/2.0", "INVITE  sip:user@example.com  SIP/2.0"
    ),
    # 3.1.2.10
    "trailing SP in request line": replace("SIP/2.0\r\nVia", "SIP/2.0  \r\nVia"),
    # 3.1.2.11
    "escaped headers in Request-URI": replace(
        "INVITE sip:user@example.com", "INVITE sip:user@example.com?Route=%3Csip:example.com%3E"
    ),
    # 3.1.2.13
    "addr-spec with headers outside <>": replace(
        "Max-Forwards: 70",
        "Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E\r\nMax-Forwards: 70",
    ),
    # 3.1.2.14
    "spaces within addr-spec": replace(
        "To: <sip:callee@example.com>", 'To: "Watson, Thomas" < sip:t.watson@example.org >'
    ),
    # 3.1.2.15
    "non-token characters in display name": replace(
        "From: <sip:caller@example.net>", "From: Bell, Alexander <sip:a.g.bell@bell-tel.com>"
    ),
    # 3.1.2.16
    "unknown protocol version": replace("example.com SIP/2.0", "example.com SIP/7.0"),
    # 3.1.2.17
    "CSeq method mismatch": replace("CSeq: 1 INVITE", "CSeq: 1 ACK"),
    # 3.1.2.18
    "unknown method with CSeq mismatch": replace("INVITE sip:", "NEWMETHOD sip:"),
    # 3.1.2.19
    "overlarge response code": simple(
        "SIP/2.0 4294967301 better not break the receiver", "1 INVITE", "bigcode"
    ),
    # RFC 4475 §3.3.1-style missing mandatory headers.
    "missing Call-ID": VALID.replace(b"Call-ID: torture.base@192.0.2.4\r\n", b""),
    "missing CSeq": replace("CSeq: 1 INVITE\r\n", ""),
    "missing From": replace("From: <sip:caller@example.net>;tag=2234923\r\n", ""),
    "missing To": replace("To: <sip:callee@example.com>\r\n", ""),
    "missing Via": replace("Via: SIP/2.0/UDP host1.example.net;branch=z9hG4bKkdjuw2\r\n", ""),
    # RFC 4475 §3.3.9/§3.3.10-style: single-valued headers given twice.
    "duplicate Call-ID": replace("Max-Forwards: 70", "Call-ID: other@x\r\nMax-Forwards: 70"),
    "duplicate Content-Length": replace("Content-Length: 0", "Content-Length: 0\r\nl: 0"),
    "duplicate Max-Forwards": replace("Max-Forwards: 70", "Max-Forwards: 70\r\nMax-Forwards: 69"),
    "duplicate From": replace("Max-Forwards: 70", "f: <sip:x@y>;tag=2\r\nMax-Forwards: 70"),
    "response with missing CSeq": simple("SIP/2.0 200 OK", "1 INVITE", "r").replace(
        b"CSeq: 1 INVITE\r\n", b""
    ),
    "response with malformed SIP version": simple("SIP/2 200 OK", "1 INVITE", "r"),
    "request without version": replace(" SIP/2.0\r\nVia", "\r\nVia"),
    "empty start line": b"\r\n" + VALID.split(b"\r\n", 1)[1].replace(b"Via", b"X: y\r\n\r\nVia"),
}


@pytest.mark.parametrize("data", list(INVALID.values()), ids=list(INVALID))
def test_invalid_messages_raise_parse_error(data: bytes) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.reason


def test_base_of_invalid_cases_is_valid() -> None:
    assert isinstance(parse_message(VALID), SipRequest)
