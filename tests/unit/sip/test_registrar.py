"""Registrar rules of RFC 3261 §10.3."""

from __future__ import annotations

import pytest

from pomelo.sip.message import SipRequest, parse_message
from pomelo.sip.registrar import Binding, RegistrarPolicy, Source, process_register

NOW = 1_000_000.0
POLICY = RegistrarPolicy(min_expires=60, max_expires=3600, default_expires=1800, max_contacts=3)
SRC = Source("UDP", "127.0.0.1", 5062)


def register(
    contacts: list[str] | None = None,
    *,
    expires: str | None = None,
    call_id: str = "call-1",
    cseq: int = 1,
    wildcard: bool = False,
) -> SipRequest:
    lines = [
        "REGISTER sip:127.0.0.1 SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-1;rport",
        "From: <sip:101@127.0.0.1>;tag=a1",
        "To: <sip:101@127.0.0.1>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        "User-Agent: baresip",
    ]
    if wildcard:
        lines.append("Contact: *")
    for contact in contacts or []:
        lines.append(f"Contact: {contact}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    lines += ["Content-Length: 0", "", ""]
    message = parse_message("\r\n".join(lines).encode())
    assert isinstance(message, SipRequest)
    return message


def run(request: SipRequest, current: list[Binding] | None = None, now: float = NOW):
    return process_register(request, current or [], now=now, policy=POLICY, source=SRC)


def test_new_binding_uses_header_then_default_expiry() -> None:
    out = run(register(["<sip:101@127.0.0.1:5062>"], expires="600"))
    assert out.status == 200
    assert [b.contact for b in out.bindings] == ["sip:101@127.0.0.1:5062"]
    assert out.bindings[0].expires_at == NOW + 600
    assert out.headers == [("Contact", "<sip:101@127.0.0.1:5062>;expires=600")]
    assert run(register(["<sip:101@127.0.0.1:5062>"])).bindings[0].expires_at == NOW + 1800


def test_contact_param_wins_and_long_expiry_is_clamped() -> None:
    out = run(
        register(["<sip:101@127.0.0.1:5062>;expires=120", "<sip:101@10.0.0.1>"], expires="999999")
    )
    assert sorted(b.expires_at - NOW for b in out.bindings) == [120, 3600]


def test_too_brief_interval_is_refused_with_min_expires() -> None:
    out = run(register(["<sip:101@127.0.0.1:5062>"], expires="10"))
    assert (out.status, out.headers) == (423, [("Min-Expires", "60")])


def test_query_returns_current_bindings_without_changing_them() -> None:
    first = run(register(["<sip:101@127.0.0.1:5062>"], expires="600")).bindings
    out = run(register(cseq=2), first, now=NOW + 100)
    assert out.status == 200
    assert out.changed is False
    assert out.headers == [("Contact", "<sip:101@127.0.0.1:5062>;expires=500")]


def test_refresh_replaces_and_zero_removes() -> None:
    first = run(register(["<sip:101@127.0.0.1:5062>"], expires="600")).bindings
    refreshed = run(
        register(["<sip:101@127.0.0.1:5062;transport=udp>"], expires="900", cseq=2),
        first,
        now=NOW + 10,
    ).bindings
    assert len(refreshed) == 2  # different URI (transport param) is a different binding
    same = run(register(["<sip:101@127.0.0.1:5062>"], expires="900", cseq=2), first).bindings
    assert [(b.contact, b.expires_at) for b in same] == [("sip:101@127.0.0.1:5062", NOW + 900)]
    gone = run(register(["<sip:101@127.0.0.1:5062>"], expires="0", cseq=3), same)
    assert (gone.status, gone.bindings) == (200, [])


def test_out_of_order_request_is_refused() -> None:
    first = run(register(["<sip:101@127.0.0.1:5062>"], cseq=5)).bindings
    stale = run(register(["<sip:101@127.0.0.1:5062>"], expires="0", cseq=4), first)
    assert stale.status == 500
    assert stale.bindings == first
    other_call = run(
        register(["<sip:101@127.0.0.1:5062>"], expires="0", cseq=1, call_id="call-2"), first
    )
    assert (other_call.status, other_call.bindings) == (200, [])


def test_wildcard_removes_everything_but_only_with_expires_zero() -> None:
    first = run(register(["<sip:101@127.0.0.1:5062>", "<sip:101@10.0.0.2>"])).bindings
    assert run(register(wildcard=True, expires="0", cseq=2), first).bindings == []
    assert run(register(wildcard=True, expires="60", cseq=2), first).status == 400
    assert run(register(wildcard=True, cseq=2), first).status == 400


def test_expired_bindings_vanish_and_the_limit_keeps_the_newest() -> None:
    first = run(register(["<sip:101@10.0.0.1>"], expires="60")).bindings
    assert run(register(cseq=2), first, now=NOW + 61).bindings == []
    many = [f"<sip:101@10.0.0.{i}>;expires={100 + i}" for i in range(1, 6)]
    kept = run(register(many)).bindings
    assert sorted(b.contact for b in kept) == [
        "sip:101@10.0.0.3",
        "sip:101@10.0.0.4",
        "sip:101@10.0.0.5",
    ]


@pytest.mark.parametrize(
    "bad", ["<sip:101@10.0.0.1>;expires=soon", "<sip:101@10.0.0.1>;expires=-5"]
)
def test_bad_expires_values_are_400(bad: str) -> None:
    assert run(register([bad])).status == 400
    assert run(register(["<sip:101@10.0.0.1>"], expires="tomorrow")).status == 400


def test_instance_params_are_kept_and_echoed() -> None:
    out = run(register(['<sip:101@10.0.0.1>;+sip.instance="<urn:uuid:1>";q=0.7']))
    assert out.bindings[0].q == "0.7"
    assert '+sip.instance="<urn:uuid:1>"' in out.headers[0][1]
