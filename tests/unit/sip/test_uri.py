"""Behaviour of SIP/SIPS/tel URIs and name-addr values."""

from __future__ import annotations

import pytest

from pomelo.sip.errors import SipParseError
from pomelo.sip.uri import (
    AbsoluteUri,
    NameAddr,
    SipUri,
    TelUri,
    parse_name_addr,
    parse_name_addr_list,
    parse_uri,
)


def sip(text: str) -> SipUri:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    return uri


def test_full_sip_uri_components() -> None:
    uri = sip(
        "sips:alice:secret@Atlanta.Example.com:5061;transport=TCP;lr?subject=hi&priority=urgent"
    )
    assert uri.scheme == "sips"
    assert uri.secure
    assert (uri.user, uri.password) == ("alice", "secret")
    assert uri.host == "Atlanta.Example.com"
    assert uri.port == 5061
    assert uri.params == {"transport": "TCP", "lr": None}
    assert uri.transport == "tcp"
    assert uri.lr
    assert uri.headers == {"subject": "hi", "priority": "urgent"}


@pytest.mark.parametrize(
    "text",
    [
        "sip:bob@biloxi.example.com",
        "sips:bob:pw@[2001:db8::1]:5061;maddr=239.255.255.1;ttl=15",
        "sip:+1-212-555-1212:1234@gateway.com;user=phone",
        "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:user;par=u%40example.net@example.com",
        "sip:example.com;lr",
        "tel:+1-201-555-0123;phone-context=example.com",
        "urn:service:sos",
    ],
)
def test_round_trip(text: str) -> None:
    assert str(parse_uri(text)) == text


def test_ipv6_host_has_no_brackets_but_prints_them() -> None:
    uri = sip("sip:[2001:db8::10]:5070")
    assert uri.host == "2001:db8::10"
    assert uri.port == 5070
    assert uri.host_port == "[2001:db8::10]:5070"


def test_semicolon_in_user_part() -> None:
    uri = sip("sip:user;par=u%40example.net@example.com")
    assert uri.user == "user;par=u%40example.net"
    assert uri.host == "example.com"
    assert uri.params == {}


def test_tel_and_unknown_schemes() -> None:
    tel = parse_uri("tel:+1-201-555-0123;ext=12")
    assert isinstance(tel, TelUri)
    assert tel.is_global
    assert tel.params == {"ext": "12"}
    assert tel == parse_uri("tel:+1.201.555.0123;EXT=12")
    other = parse_uri("Im:alice@example.com")
    assert isinstance(other, AbsoluteUri)
    assert other.scheme == "im"


@pytest.mark.parametrize(
    "text",
    [
        "sip:",
        "sip:user@",
        "sip:user@host:99999",
        "sip:user@host:",
        "sip:user@exa mple.com",
        "<sip:user@example.com>",
        "sip:user@[::1",
        "sip:user@[zz::1]",
        "tel:",
        "nocolon",
        "sip:user@host;;lr",
    ],
)
def test_malformed_uris_raise(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


# RFC 3261 §19.1.4 examples.
@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;newparam=5"),
        (
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
        ),
        (
            "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
        ),
    ],
)
def test_equivalent_uris(left: str, right: str) -> None:
    assert parse_uri(left) == parse_uri(right)
    assert hash(parse_uri(left)) == hash(parse_uri(right))


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        ("sip:bob@biloxi.com", "sips:bob@biloxi.com"),
    ],
)
def test_different_uris(left: str, right: str) -> None:
    assert parse_uri(left) != parse_uri(right)


def test_uri_mutation_and_copy() -> None:
    uri = sip("sip:alice@example.com;transport=udp")
    clone = uri.copy()
    clone.params["lr"] = None
    clone.port = 5080
    assert str(uri) == "sip:alice@example.com;transport=udp"
    assert str(clone) == "sip:alice@example.com:5080;transport=udp;lr"
    built = SipUri("example.org", user="bob", params={"lr": None})
    assert str(built) == "sip:bob@example.org;lr"


class TestNameAddr:
    def test_quoted_display_name_with_escapes(self) -> None:
        value = parse_name_addr(r'"J Rosenberg \\\"" <sip:jdrosen@example.com>;tag=98asjd8')
        assert value.display_name == 'J Rosenberg \\"'
        assert value.tag == "98asjd8"
        assert str(value.uri) == "sip:jdrosen@example.com"
        assert parse_name_addr(str(value)) == value

    def test_token_display_name_without_space_before_bracket(self) -> None:
        value = parse_name_addr("caller<sip:caller@example.com>;tag=323")
        assert value.display_name == "caller"
        assert value.tag == "323"

    def test_addr_spec_params_belong_to_header(self) -> None:
        value = parse_name_addr("sip:alice@example.com;tag=88sja8x")
        assert str(value.uri) == "sip:alice@example.com"
        assert value.tag == "88sja8x"
        assert str(value) == "<sip:alice@example.com>;tag=88sja8x"

    def test_params_with_whitespace_and_quoted_values(self) -> None:
        value = parse_name_addr('<sip:a@b> ; expires = 60 ;+sip.instance="<urn:uuid:1>";q=0.5')
        assert value.params == {"expires": "60", "+sip.instance": '"<urn:uuid:1>"', "q": "0.5"}
        assert str(value) == '<sip:a@b>;expires=60;+sip.instance="<urn:uuid:1>";q=0.5'

    def test_tag_mutation(self) -> None:
        value = parse_name_addr("<sip:bob@example.com>")
        assert value.tag is None
        value.tag = "abc"
        assert str(value) == "<sip:bob@example.com>;tag=abc"
        value.tag = None
        assert str(value) == "<sip:bob@example.com>"

    def test_list_splits_outside_quotes_and_brackets(self) -> None:
        items = parse_name_addr_list(
            '"Doe, John" <sip:j,k@a.com;x=1>;q=0.1, <sip:k@b.com>,sip:l@c.com;expires=5'
        )
        assert [i.display_name for i in items] == ["Doe, John", None, None]
        assert [str(i.uri) for i in items] == ["sip:j,k@a.com;x=1", "sip:k@b.com", "sip:l@c.com"]
        assert items[2].params == {"expires": "5"}

    def test_uri_is_validated_lazily(self) -> None:
        value = parse_name_addr("<sip:bob@host:99999>")
        with pytest.raises(SipParseError, match="port"):
            _ = value.uri

    @pytest.mark.parametrize(
        ("value", "reason"),
        [
            ('"unterminated <sip:a@b>', "unterminated"),
            ("Bell, Alexander <sip:a@b>", "single value|malformed"),
            ("< sip:a@b >", "malformed"),
            ("<sip:a@b", "unbalanced"),
            ("<sip:a@b>;;tag=1", "malformed"),
            ("", "empty"),
            ("sip:user@example.com?Route=%3Csip:x%3E", "malformed"),
        ],
    )
    def test_malformed(self, value: str, reason: str) -> None:
        with pytest.raises(SipParseError, match=reason):
            parse_name_addr(value)

    def test_route_requires_brackets(self) -> None:
        with pytest.raises(SipParseError, match="<>"):
            parse_name_addr_list("sip:p1.example.com;lr", "Route", bracket_only=True)

    def test_build_and_copy_are_independent(self) -> None:
        original = NameAddr("sip:alice@example.com", "Alice", {"tag": "1"})
        clone = original.copy()
        clone.tag = "2"
        assert original.tag == "1"
        assert str(original) == '"Alice" <sip:alice@example.com>;tag=1'
