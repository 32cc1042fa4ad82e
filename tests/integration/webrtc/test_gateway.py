"""Browser phones through the WebRTC gateway, against the running platform.

The page is played by aiortc (`FakeBrowser`: a 440 Hz microphone) and the far end by a
registered SIP phone (`SipPhone`: a 1000 Hz tone over G.711), with the B2BUA and its media
anchoring in between, so every test crosses the real path: WebSocket, aiortc, the gateway's
SIP UA and RTP socket, Pomelo's SIP server, registrar and B2BUA.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from pomelo.auth.access import Actor
from pomelo.pbx.cdr_models import CallRecord
from pomelo.pbx.schemas import SipAccountCreate
from pomelo.sip.endpoint import SipEndpoint
from pomelo.sip.message import SipRequest
from pomelo.sip.transaction import ServerTransaction, new_tag
from pomelo.sip.transport import Target
from pomelo.sip.uri import NameAddr, SipUri
from tests.conftest import Server, TenantFixture
from tests.integration.webrtc.harness import FakeBrowser, SipPhone, dominant_frequency

PHONE_PASSWORD = "long-sip-password-102"


@pytest.fixture
async def phone(server: Server, tenant: TenantFixture) -> AsyncIterator[SipPhone]:
    """Extension 102 on a desk phone (the group head's), registered."""
    platform = server.platform
    await platform.pbx.create_account(
        Actor.system(tenant.id),
        SipAccountCreate(extension="102", password=PHONE_PASSWORD, user_id=tenant["group_head"].id),
    )
    await platform.sip_cache.reload()
    sip = SipPhone(f"{tenant.slug}.sip", "102", PHONE_PASSWORD, platform.sip_server.port)
    await sip.start()
    yield sip
    await sip.stop()


@pytest.fixture
async def browser(server: Server, tenant: TenantFixture) -> AsyncIterator[FakeBrowser]:
    """The operator's page (his account is 101, created without a password he knows)."""
    await server.platform.sip_cache.reload()
    page = FakeBrowser(server.base_url)
    registered = await page.register(tenant["operator"].api_key)
    assert registered == {"type": "registered", "extension": "101", "domain": f"{tenant.slug}.sip"}
    yield page
    await page.close()


async def test_browser_calls_a_desk_phone_and_both_hear_each_other(
    server: Server, tenant: TenantFixture, browser: FakeBrowser, phone: SipPhone
) -> None:
    call = await browser.place_call("102")
    assert (await browser.expect("ringing"))["call"] == call
    await browser.expect("answered")
    await phone.ear.wait_for_sound()
    await browser.ear.wait_for_sound()
    assert dominant_frequency(phone.ear.recent(), 8000) == pytest.approx(440, abs=15)
    assert dominant_frequency(browser.ear.recent(), browser.ear.rate) == pytest.approx(1000, abs=15)

    await browser.send({"type": "hangup"})
    assert (await browser.expect("ended"))["reason"] == "hangup"
    await asyncio.wait_for(phone.bye.wait(), 10)

    # The B2BUA saw an ordinary, authenticated call from the operator's extension.
    await server.platform.call_recorder.drain()
    async with server.platform.db.session() as session:
        records = list(
            await session.scalars(select(CallRecord).where(CallRecord.tenant_id == tenant.id))
        )
    assert [(r.from_number, r.to_number, r.disposition) for r in records] == [
        ("101", "102", "answered")
    ]
    assert records[0].caller_account_id == tenant.account_id
    assert records[0].hangup_side == "caller"


async def test_desk_phone_calls_the_browser_which_answers(
    browser: FakeBrowser, phone: SipPhone
) -> None:
    dialling = asyncio.create_task(phone.call("101"))
    incoming = await browser.expect("incoming")
    assert incoming["from"] == "102"
    await browser.answer_call()
    await browser.expect("answered")
    assert (await dialling).status == 200
    await phone.ear.wait_for_sound()
    await browser.ear.wait_for_sound()
    assert dominant_frequency(phone.ear.recent(), 8000) == pytest.approx(440, abs=15)
    assert dominant_frequency(browser.ear.recent(), browser.ear.rate) == pytest.approx(1000, abs=15)

    assert (await phone.hangup()).status == 200
    ended = await browser.expect("ended")
    assert (ended["call"], ended["reason"]) == (incoming["call"], "remote-hangup")


async def test_hold_and_resume_from_the_phone_keep_the_browser_call(
    browser: FakeBrowser, phone: SipPhone
) -> None:
    await browser.place_call("102")
    await browser.expect("answered")
    await browser.ear.wait_for_sound(frames=5)
    held = await phone.reinvite("sendonly", 2)
    assert held.status == 200
    assert b"a=recvonly" in held.body  # the gateway (through the B2BUA) accepts the hold
    resumed = await phone.reinvite("sendrecv", 3)
    assert resumed.status == 200
    browser.ear.chunks.clear()
    await browser.ear.wait_for_sound()
    assert dominant_frequency(browser.ear.recent(), browser.ear.rate) == pytest.approx(1000, abs=15)
    assert not [m for m in browser.messages if m["type"] == "ended"]
    await browser.send({"type": "hangup"})
    await browser.expect("ended")


async def test_key_presses_travel_both_ways(browser: FakeBrowser, phone: SipPhone) -> None:
    await browser.place_call("102")
    await browser.expect("answered")
    await phone.ear.wait_for_sound(frames=5)
    await browser.send({"type": "dtmf", "digit": "5"})
    async with asyncio.timeout(10):
        while phone.digits != ["5"]:
            await asyncio.sleep(0.05)
    phone.send_dtmf("#")
    assert (await browser.expect("dtmf"))["digit"] == "#"
    await browser.send({"type": "hangup"})
    await browser.expect("ended")


async def test_browser_declines_and_the_caller_hears_busy(
    browser: FakeBrowser, phone: SipPhone
) -> None:
    dialling = asyncio.create_task(phone.call("101"))
    await browser.expect("incoming")
    await browser.send({"type": "decline"})
    assert (await browser.expect("ended"))["reason"] == "declined"
    assert (await dialling).status == 486


async def test_caller_giving_up_stops_the_browser_ringing(
    browser: FakeBrowser, phone: SipPhone
) -> None:
    dialling = asyncio.create_task(phone.call("101"))
    await browser.expect("incoming")
    dialling.cancel()
    assert (await browser.expect("ended"))["reason"] == "cancelled"
    # The page can answer nothing any more.
    await browser.send({"type": "answer"})
    assert (await browser.expect("error"))["error_id"] == "no-call"


async def test_browser_hanging_up_while_it_rings_cancels_the_phone(
    browser: FakeBrowser, phone: SipPhone
) -> None:
    phone.mode = "ring"
    await browser.place_call("102")
    await browser.expect("ringing")
    await browser.send({"type": "hangup"})
    assert (await browser.expect("ended"))["reason"] == "hangup"
    await asyncio.wait_for(phone.cancelled.wait(), 10)


async def test_busy_phone_and_unknown_number_end_the_call_with_a_reason(
    browser: FakeBrowser, phone: SipPhone
) -> None:
    phone.mode = "busy"
    await browser.place_call("102")
    ended = await browser.expect("ended")
    assert (ended["reason"], ended["status"]) == ("busy", 486)

    await browser.place_call("999")
    ended = await browser.expect("ended")
    assert (ended["reason"], ended["status"]) == ("not-found", 404)


async def test_closing_the_page_hangs_up_and_unregisters(
    server: Server, tenant: TenantFixture, phone: SipPhone
) -> None:
    registrar = server.platform.registrar
    await server.platform.sip_cache.reload()
    page = FakeBrowser(server.base_url)
    try:
        assert (await page.register(tenant["operator"].api_key))["type"] == "registered"
        contacts = registrar.contacts(tenant.account_id)
        assert len(contacts) == 1
        assert contacts[0].source == server.platform.webrtc.address
        await page.place_call("102")
        await page.expect("answered")
        await page.ws.close()
        await asyncio.wait_for(phone.bye.wait(), 10)
    finally:
        await page.close()
    async with asyncio.timeout(10):
        while registrar.contacts(tenant.account_id):
            await asyncio.sleep(0.05)
    assert not server.platform.webrtc.sessions


async def test_bad_messages_get_errors_and_the_phone_keeps_working(
    browser: FakeBrowser, phone: SipPhone
) -> None:
    cases: list[tuple[str | bytes | dict[str, object], str]] = [
        ("not json", "malformed-json"),
        ("[1, 2]", "malformed-json"),
        (b"\x00\x01", "malformed-json"),
        ({"type": "dance"}, "unknown-message"),
        ({"no": "type"}, "unknown-message"),
        ({"type": "call"}, "bad-message"),
        ({"type": "call", "to": 102}, "bad-message"),
        ({"type": "call", "to": "sip:evil@example.com"}, "bad-number"),
        ({"type": "hangup"}, "no-call"),
        ({"type": "offer", "sdp": "v=0"}, "no-call"),
        ({"type": "dtmf", "digit": "5"}, "no-call"),
        ({"type": "answer"}, "no-call"),
        ({"type": "register"}, "unknown-message"),
    ]
    for payload, error_id in cases:
        await browser.send(payload)
        error = await browser.expect("error")
        assert error["error_id"] == error_id, payload

    # An offer that is not SDP ends that call, and says why.
    await browser.send({"type": "call", "to": "102", "sdp": "this is not sdp m=audio"})
    assert (await browser.expect("error"))["error_id"] == "bad-offer"
    assert (await browser.expect("ended"))["reason"] == "bad-offer"

    # A second call while one is up is refused; a bad digit too.
    await browser.place_call("102")
    await browser.expect("answered")
    await browser.send({"type": "call", "to": "102"})
    assert (await browser.expect("error"))["error_id"] == "busy"
    await browser.send({"type": "dtmf", "digit": "x"})
    assert (await browser.expect("error"))["error_id"] == "bad-digit"
    await browser.send({"type": "offer", "sdp": "v=0"})
    assert (await browser.expect("error"))["error_id"] == "unexpected-offer"
    await phone.ear.wait_for_sound(frames=5)
    await browser.send({"type": "hangup"})
    assert (await browser.expect("ended"))["reason"] == "hangup"
    await browser.send({"type": "ping"})
    await browser.expect("pong")


@pytest.mark.parametrize(
    ("first", "code", "error_id"),
    [
        ({"type": "register"}, 4401, "not-authenticated"),
        ({"type": "register", "api_key": "pk_nope.nope"}, 4401, None),
        ({"type": "call", "to": "102"}, 4400, None),
        ("garbage", 4400, None),
    ],
)
async def test_unauthenticated_sockets_are_refused(
    server: Server,
    tenant: TenantFixture,
    first: dict[str, str] | str,
    code: int,
    error_id: str | None,
) -> None:
    page = FakeBrowser(server.base_url)
    try:
        await page.connect()
        await page.send(first)
        assert await page.close_code() == code
        errors = [m for m in page.messages if m["type"] == "error"]
        if error_id is not None:
            assert [e["error_id"] for e in errors] == [error_id]
        assert not any(m["type"] == "registered" for m in page.messages)
    finally:
        await page.close()
    assert not server.platform.registrar.contacts(tenant.account_id)


async def test_employee_without_a_sip_account_gets_no_phone(
    server: Server, tenant: TenantFixture
) -> None:
    page = FakeBrowser(server.base_url)
    try:
        reply = await page.register(tenant["marketer"].api_key)
        assert reply["error_id"] == "no-sip-account"
        assert await page.close_code() == 4404
    finally:
        await page.close()


async def test_the_gateway_ua_answers_only_the_pbx(server: Server, browser: FakeBrowser) -> None:
    """A local process that learned the UA's port cannot ring a page or probe it."""
    gateway = server.platform.webrtc
    assert gateway.address is not None

    def answer(tx: ServerTransaction) -> None:
        tx.reply(200)

    stranger = SipEndpoint(answer)
    transport = await stranger.listen("UDP", "127.0.0.1", 0)
    try:
        token = next(iter(gateway.sessions))
        for method in ("OPTIONS", "INVITE"):
            request = SipRequest(
                method,
                SipUri(gateway.address[0], user=token, port=gateway.address[1]),
                from_=NameAddr(SipUri("evil.example", user="x"), params={"tag": new_tag()}),
                to=NameAddr(SipUri(gateway.address[0], user=token)),
                call_id=f"stranger-{new_tag()}",
                contacts=[NameAddr(SipUri("127.0.0.1", port=transport.local_address[1]))],
            )
            response = await stranger.request(request, target=Target(transport, gateway.address))
            assert response.status == 403
    finally:
        await stranger.close()
    assert not [m for m in browser.messages if m["type"] == "incoming"]
