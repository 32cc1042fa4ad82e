"""Bad media on real calls: a phone that stops sending RTP is hung up (and the CDR says why),
a call on hold is not, and garbage sprayed on a call's RTP ports changes nothing the two
people on the call would notice.

The server here is a second, small platform whose RTP timeout is one second, so the tests
wait seconds rather than minutes. The phones are in-test SIP user agents (Pomelo's own SIP
stack) with a loopback RTP socket each (:mod:`tests.support.rtp`): they register with their
password, call through the B2BUA with digest, and send a tone of their own, so each
direction of the call is told apart by its frequency.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import secrets
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from pomelo.auth.access import Actor
from pomelo.media.g711 import ulaw_decode
from pomelo.media.rtp import build_rtp
from pomelo.media.session import RtpSession
from pomelo.pbx.anchor import media_of
from pomelo.pbx.cdr_models import CallRecord
from pomelo.pbx.schemas import SipAccountCreate
from pomelo.sip.dialog import Dialog
from pomelo.sip.digest import answer_challenge, select_challenge
from pomelo.sip.endpoint import SipEndpoint
from pomelo.sip.message import SipRequest, SipResponse
from pomelo.sip.sdp import parse_sdp
from pomelo.sip.transaction import ServerTransaction, new_tag
from pomelo.sip.transport import Target
from pomelo.sip.uri import NameAddr, SipUri
from tests.conftest import (
    Server,
    ShiftedClock,
    TenantFixture,
    build_tenant,
    make_settings,
    start_server,
    stop_server,
)
from tests.support.rtp import Address, RtpPeer, garbage, wait_until

TIMEOUT = 1.0
"""The server's ``rtp_timeout_seconds``."""
_PASSWORD = "long-enough-sip-password-"
_extensions = itertools.count(501)


@pytest.fixture(scope="module")
async def short(
    fresh_database: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    """A platform that hangs up after one second without RTP. Its RTP ports are its own (the
    session server uses 30000-31999), still below the kernel's ephemeral range."""
    settings = make_settings(
        await fresh_database(),
        tmp_path_factory.mktemp("rtp-timeout"),
        rtp_timeout_seconds=TIMEOUT,
        rtp_port_min=32000,
        rtp_port_max=32767,
        recordings_enabled=False,
    )
    srv, handle = await start_server(settings, ShiftedClock())
    yield srv
    await stop_server(handle)


@pytest.fixture(scope="module")
async def company(short: Server) -> TenantFixture:
    return await build_tenant(short.platform)


# -- a phone --------------------------------------------------------------------------------


class Phone:
    """A registered desk phone: answers every call, mirrors the hold direction it is
    offered, and sends RTP only while the test lets it talk."""

    def __init__(self, server: Server, domain: str, extension: str, tone_hz: float) -> None:
        self.domain = domain
        self.extension = extension
        self.password = _PASSWORD + extension
        self.pbx = ("127.0.0.1", server.platform.sip_server.port)
        self.tone_hz = tone_hz
        self.endpoint = SipEndpoint(self._on_request, on_ack=lambda *_: None)
        self.target: Target | None = None
        self.port = 0
        self.rtp: RtpPeer | None = None
        self.pbx_media: Address | None = None
        """Where the PBX wants our RTP (from the SDP it sent us)."""
        self.dialog: Dialog | None = None
        self.invite: SipRequest | None = None
        self.byes: list[SipRequest] = []
        self.version = 1

    async def start(self) -> Phone:
        transport = await self.endpoint.listen("UDP", "127.0.0.1", 0)
        self.port = transport.local_address[1]
        self.target = Target(transport, self.pbx)
        self.rtp = await RtpPeer.open(self.tone_hz)
        aor = SipUri(self.domain, user=self.extension)
        register = SipRequest(
            "REGISTER",
            SipUri(self.domain),
            from_=NameAddr(aor, params={"tag": new_tag()}),
            to=NameAddr(aor.copy()),
            call_id=f"reg-{secrets.token_hex(8)}",
            contacts=[self.contact],
            headers=[("Expires", "300")],
        )
        response = await self.authorized(register)
        assert response.status == 200, response
        return self

    async def stop(self) -> None:
        if self.rtp is not None:
            self.rtp.close()
        await self.endpoint.close()

    @property
    def contact(self) -> NameAddr:
        return NameAddr(SipUri("127.0.0.1", user=self.extension, port=self.port))

    @property
    def media(self) -> RtpPeer:
        assert self.rtp is not None
        return self.rtp

    def sdp(self, direction: str = "sendrecv") -> bytes:
        self.version += 1
        return (
            f"v=0\r\no=phone 1 {self.version} IN IP4 127.0.0.1\r\ns=-\r\n"
            "c=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {self.media.address[1]} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            f"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na={direction}\r\n"
        ).encode()

    def _learn(self, body: bytes) -> str:
        sdp = parse_sdp(body)
        media = sdp.media[0]
        connection = sdp.connection_for(media)
        assert connection is not None
        self.pbx_media = (connection.address, media.port)
        return media.direction

    async def authorized(self, request: SipRequest) -> SipResponse:
        """Send ``request``; answer a 401/407 challenge with our password once."""
        response = await self.endpoint.request(request, target=self.target)
        if response.status in (401, 407):
            asked, header = (
                ("WWW-Authenticate", "Authorization")
                if response.status == 401
                else ("Proxy-Authenticate", "Proxy-Authorization")
            )
            request = request.copy()
            request.vias, request.cseq = [], request.cseq + 1
            challenge = select_challenge(response.header_values(asked))
            credentials = answer_challenge(
                challenge, request.method, str(request.uri), self.extension, self.password
            )
            request.set_header(header, credentials)
            response = await self.endpoint.request(request, target=self.target)
        self.invite = request
        return response

    # -- calls ----------------------------------------------------------------------------

    async def call(self, to: Phone) -> SipResponse:
        invite = SipRequest(
            "INVITE",
            SipUri(self.domain, user=to.extension),
            from_=NameAddr(SipUri(self.domain, user=self.extension), params={"tag": new_tag()}),
            to=NameAddr(SipUri(self.domain, user=to.extension)),
            call_id=f"call-{secrets.token_hex(8)}",
            contacts=[self.contact],
            body=self.sdp(),
            headers=[("Content-Type", "application/sdp")],
        )
        response = await self.authorized(invite)
        if 200 <= response.status < 300:
            assert self.invite is not None
            self.dialog = Dialog.from_uac(self.invite, response)
            await self.endpoint.send_ack(
                self.dialog.create_ack(self.invite.cseq), target=self.target
            )
            self._learn(response.body)
        return response

    async def reinvite(self, direction: str) -> SipResponse:
        """Hold ("sendonly") or resume ("sendrecv") the call from this phone."""
        assert self.dialog is not None
        request = self.dialog.create_request(
            "INVITE", body=self.sdp(direction), headers=[("Content-Type", "application/sdp")]
        )
        response = await self.endpoint.request(request, target=self.target)
        if 200 <= response.status < 300:
            await self.endpoint.send_ack(self.dialog.create_ack(request.cseq), target=self.target)
            self._learn(response.body)
        return response

    async def hangup(self) -> SipResponse:
        assert self.dialog is not None
        return await self.endpoint.request(self.dialog.create_request("BYE"), target=self.target)

    def _on_request(self, tx: ServerTransaction) -> None:
        request = tx.request
        if request.method == "INVITE" and not request.to.tag:
            tx.reply(180, contact=self.contact)
            self._learn(request.body)
            sent = tx.reply(
                200,
                body=self.sdp(),
                headers=[("Content-Type", "application/sdp")],
                contact=self.contact,
            )
            assert sent is not None
            self.dialog = Dialog.from_uas(request, sent)
        elif request.method == "INVITE":
            offered = self._learn(request.body)
            mirror = {"sendonly": "recvonly", "recvonly": "sendonly"}.get(offered, offered)
            tx.reply(
                200,
                body=self.sdp(mirror),
                headers=[("Content-Type", "application/sdp")],
                contact=self.contact,
            )
        else:
            if request.method == "BYE":
                self.byes.append(request)
            tx.reply(200)

    # -- media ----------------------------------------------------------------------------

    def talk(self) -> None:
        assert self.pbx_media is not None, "no call"
        self.media.stream(self.pbx_media)

    def mute(self) -> None:
        self.media.silence()

    def heard(self) -> int:
        """Packets the PBX sent us."""
        return sum(1 for d in self.media.received if d.source == self.pbx_media)

    def dominant_hz(self, last: int = 25) -> float:
        packets = [d.packet for d in self.media.received if d.source == self.pbx_media]
        audio = np.concatenate([ulaw_decode(p.payload) for p in packets[-last:] if p])
        spectrum = np.abs(np.fft.rfft(audio.astype(np.float64) * np.hanning(len(audio))))
        return float(np.argmax(spectrum) * 8000 / len(audio))


Pair = tuple[Phone, Phone]


@pytest.fixture
async def pair(short: Server, company: TenantFixture) -> AsyncIterator[Pair]:
    """Two phones of the company, on fresh extensions (no binding left from another test)."""
    platform = short.platform
    system = Actor.system(company.id)
    phones = []
    for tone_hz in (440.0, 1000.0):
        extension = str(next(_extensions))
        await platform.pbx.create_account(
            system, SipAccountCreate(extension=extension, password=_PASSWORD + extension)
        )
        phones.append(Phone(short, f"{company.slug}.sip", extension, tone_hz))
    await platform.sip_cache.reload()
    for phone in phones:
        await phone.start()
    try:
        yield phones[0], phones[1]
    finally:
        for phone in phones:
            await phone.stop()


async def connected(a: Phone, b: Phone) -> None:
    """``a`` calls ``b``; both talk until each hears the other through the PBX."""
    response = await a.call(b)
    assert response.status == 200, response
    await wait_until(lambda: b.dialog is not None and b.pbx_media is not None, what="b's call")
    a.talk()
    b.talk()
    await hear_each_other(a, b)


async def hear_each_other(a: Phone, b: Phone, packets: int = 25) -> None:
    a_heard, b_heard = a.heard(), b.heard()
    await wait_until(
        lambda: (
            (a.heard() >= a_heard + packets and b.heard() >= b_heard + packets)
            or bool(a.byes or b.byes)
        ),
        what="audio both ways",
    )
    assert not a.byes and not b.byes, "the PBX hung up the call"
    assert a.dominant_hz() == pytest.approx(b.tone_hz, abs=30)
    assert b.dominant_hz() == pytest.approx(a.tone_hz, abs=30)


async def record_of(server: Server, caller: Phone) -> CallRecord:
    platform = server.platform
    for _ in range(200):
        await platform.call_recorder.drain()
        async with platform.db.session() as session:
            record = await session.scalar(
                select(CallRecord).where(CallRecord.from_number == caller.extension)
            )
        if record is not None:
            return record
        await asyncio.sleep(0.05)
    raise AssertionError(f"no call record for {caller.extension}")


def pbx_session(server: Server, port: int) -> RtpSession:
    """The PBX's RTP session on ``port`` (one leg of a live call)."""
    for call in server.platform.calls.calls.values():
        for leg in call.legs:
            media = media_of(leg)
            if media is not None and media.session.local_address[1] == port:
                return media.session
    raise AssertionError(f"no live call has RTP port {port}")


# -- the tests ------------------------------------------------------------------------------


async def test_a_phone_that_stops_sending_is_hung_up(short: Server, pair: Pair) -> None:
    a, b = pair
    await connected(a, b)
    a.mute()  # a's network died: nothing from a any more, b still talks
    await wait_until(lambda: bool(a.byes) and bool(b.byes), timeout=15, what="BYE to both")
    record = await record_of(short, a)
    assert record.disposition == "answered"
    assert (record.hangup_side, record.hangup_reason) == ("system", "rtp-timeout")


async def test_a_phone_that_never_sends_is_hung_up(short: Server, pair: Pair) -> None:
    a, b = pair
    response = await a.call(b)
    assert response.status == 200
    a.talk()  # b answered but its audio never comes
    await wait_until(lambda: bool(a.byes) and bool(b.byes), timeout=15, what="BYE to both")
    record = await record_of(short, a)
    assert (record.hangup_side, record.hangup_reason) == ("system", "rtp-timeout")


async def test_a_call_on_hold_is_not_hung_up_for_its_silence(short: Server, pair: Pair) -> None:
    """Hold (a=sendonly) with neither phone sending, for three times the RTP timeout; then
    the call resumes, the phones take a moment to start their audio, and the call goes on."""
    a, b = pair
    await connected(a, b)
    held = await a.reinvite("sendonly")
    assert held.status == 200
    a.mute()  # no music on hold from this phone
    b.mute()  # b answered recvonly: it must not send
    await asyncio.sleep(3 * TIMEOUT)
    assert not a.byes and not b.byes, "the PBX hung up a held call"
    resumed = await a.reinvite("sendrecv")
    assert resumed.status == 200
    await asyncio.sleep(0.3 * TIMEOUT)  # a phone is not instant to resume its audio
    a.talk()
    b.talk()
    await hear_each_other(a, b)
    await asyncio.sleep(2 * TIMEOUT)
    assert not a.byes and not b.byes, "the PBX hung up the resumed call"
    assert (await a.hangup()).status == 200
    await wait_until(lambda: bool(b.byes), what="the BYE relayed to b")
    record = await record_of(short, a)
    assert (record.hangup_side, record.hangup_reason) == ("caller", "bye")


async def test_garbage_on_the_rtp_ports_does_not_disturb_the_call(
    short: Server, pair: Pair
) -> None:
    """Malformed datagrams, and well-formed RTP from a stranger's address or with a
    stranger's SSRC from the phone's own, hit both of the call's PBX ports: each is counted,
    none reaches the other phone, the audio goes on both ways."""
    a, b = pair
    await connected(a, b)
    sprayer = await RtpPeer.open()
    intruder = b"\x00" * 160  # loudest µ-law code: unmistakable if it got through
    try:
        bad = [d for batch in garbage(random.Random(3550)).values() for d in batch]
        targets = [(a, pbx_session(short, port(a))), (b, pbx_session(short, port(b)))]
        for phone, _session in targets:
            to = port_address(phone)
            for i, data in enumerate(bad):
                sprayer.send(data, to)
                phone.media.send(data, to)
                sprayer.send(build_rtp(0, i, 160 * i, 0xBAD, intruder), to)
                phone.media.send(build_rtp(0, i, 160 * i, 0xBAD, intruder), to)
                await asyncio.sleep(0)
        expected = (2 * len(bad), len(bad), len(bad))  # malformed, stranger, stranger's SSRC
        for _phone, session in targets:
            await wait_until(partial(has_counted, session, expected), what="garbage counted")
        await hear_each_other(a, b, packets=50)
        for phone in (a, b):
            packets = [d.packet for d in phone.media.received]
            assert all(p is not None and p.payload != intruder for p in packets)
            assert {d.source for d in phone.media.received} == {phone.pbx_media}
        assert not a.byes and not b.byes
    finally:
        sprayer.close()
    assert (await b.hangup()).status == 200
    record = await record_of(short, a)
    assert (record.hangup_side, record.hangup_reason) == ("callee", "bye")


def has_counted(session: RtpSession, expected: tuple[int, int, int]) -> bool:
    """The session's (malformed, foreign source, foreign SSRC) counters are ``expected``."""
    c = session.counters
    return (c.malformed, c.foreign_source, c.foreign_ssrc) == expected


def port(phone: Phone) -> int:
    assert phone.pbx_media is not None
    return phone.pbx_media[1]


def port_address(phone: Phone) -> Address:
    assert phone.pbx_media is not None
    return phone.pbx_media
