"""RTP sessions on real loopback sockets: latching, bad datagrams, a second SSRC, loss and
duplicates, DTMF both ways, and the port pool behind them."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pomelo.media.dtmf import DtmfError, DtmfReceiver, dtmf_event_packets, dtmf_tones
from pomelo.media.g711 import ulaw_encode
from pomelo.media.relay import Relay
from pomelo.media.rtp import build_rtp, parse_rtp
from pomelo.media.session import (
    FRAME_SAMPLES,
    PCMU,
    MediaPortsExhausted,
    PortPool,
    RtpSession,
)
from tests.support.rtp import RtpPeer, garbage, tone, wait_until

# Below the kernel's ephemeral range (32768+), clear of the demo (20000-29999) and of the
# integration servers, so a port this pool wants is rarely held by anything else.
_POOL = PortPool(17000, 17999)
SILENCE = b"\xff" * FRAME_SAMPLES
Opener = Callable[[], Awaitable[RtpSession]]


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Whatever a protocol callback raised: the event loop would only log it."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors
    loop.set_exception_handler(previous)


@pytest.fixture
async def open_session() -> AsyncIterator[Opener]:
    opened: list[RtpSession] = []

    async def open_one() -> RtpSession:
        session = await RtpSession.open(_POOL)
        opened.append(session)
        return session

    yield open_one
    for session in opened:
        session.close()


@pytest.fixture
async def peers() -> AsyncIterator[Callable[[], Awaitable[RtpPeer]]]:
    opened: list[RtpPeer] = []

    async def open_one() -> RtpPeer:
        peer = await RtpPeer.open()
        opened.append(peer)
        return peer

    yield open_one
    for peer in opened:
        peer.close()


def rtp(seq: int, ssrc: int = 0x1111, *, pt: int = 0, payload: bytes = SILENCE) -> bytes:
    return build_rtp(pt, seq, seq * FRAME_SAMPLES, ssrc, payload)


class Heard:
    """What a session hands to its application."""

    def __init__(self, session: RtpSession) -> None:
        self.frames: list[npt.NDArray[np.int16]] = []
        self.digits: list[str] = []
        session.on_pcm = lambda pcm, _ts, _at: self.frames.append(pcm)
        session.on_dtmf = self.digits.append


# -- latching -------------------------------------------------------------------------------


async def test_latches_to_the_first_source_and_drops_every_other(
    open_session: Opener, peers: Callable[[], Awaitable[RtpPeer]]
) -> None:
    """The SDP address is a phone's private one (NAT): the PBX answers to wherever the first
    packet really came from, and a second sender on its port is ignored."""
    session = await open_session()
    session.configure(("127.0.0.1", 9), PCMU)
    heard = Heard(session)
    phone, stranger = await peers(), await peers()
    phone.send(phone.next_packet(), session.local_address)
    await wait_until(lambda: session.counters.received == 1, what="the first packet")
    assert session.latched and session.remote == phone.address
    for _ in range(5):
        stranger.send(stranger.next_packet(), session.local_address)
    phone.send(phone.next_packet(), session.local_address)
    await wait_until(lambda: session.counters.received == 2, what="the phone's second packet")
    await wait_until(lambda: session.counters.foreign_source == 5, what="strangers counted")
    assert len(heard.frames) == 2
    assert session.remote == phone.address
    session.send_silence()  # symmetric RTP: the answer goes where the phone really is
    await wait_until(lambda: len(phone.received) == 1, what="our packet at the phone")
    assert not stranger.received


async def test_configure_to_a_new_address_accepts_the_new_stream_at_once(
    open_session: Opener, peers: Callable[[], Awaitable[RtpPeer]]
) -> None:
    """A re-INVITE that moves the media: the new stream (new address, new SSRC) is taken
    straight away, and the old address is a stranger from then on."""
    session = await open_session()
    old, new = await peers(), await peers()
    session.configure(old.address, PCMU)
    heard = Heard(session)
    for _ in range(3):
        old.send(old.next_packet(), session.local_address)
    await wait_until(lambda: session.counters.received == 3, what="the old stream")
    session.configure(old.address, PCMU)
    assert session.latched, "the same address again keeps the latch"
    session.configure(new.address, PCMU)
    assert not session.latched
    new.send(new.next_packet(), session.local_address)
    await wait_until(lambda: session.counters.received == 4, what="the new stream")
    assert session.counters.foreign_ssrc == 0
    assert session.in_ssrc == new.ssrc and session.remote == new.address
    old.send(old.next_packet(), session.local_address)
    await wait_until(lambda: session.counters.foreign_source == 1, what="the old address")
    assert len(heard.frames) == 4
    session.send_silence()
    await wait_until(lambda: len(new.received) == 1, what="our packet at the new address")


# -- bad datagrams --------------------------------------------------------------------------


async def test_garbage_is_counted_as_malformed_and_never_raises(
    open_session: Opener,
    peers: Callable[[], Awaitable[RtpPeer]],
    loop_errors: list[dict[str, Any]],
) -> None:
    """Short, wrong-version, random and huge datagrams, some from a stranger before the phone
    ever spoke: none latches the session, each is counted, the phone's stream goes on."""
    session = await open_session()
    session.configure(("127.0.0.1", 9), PCMU)
    session.detect_inband()
    heard = Heard(session)
    phone, sprayer = await peers(), await peers()
    kinds = garbage(random.Random(4733))
    bad = [data for batch in kinds.values() for data in batch]
    for data in bad:
        sprayer.send(data, session.local_address)
    await wait_until(lambda: session.counters.malformed == len(bad), what="garbage counted")
    assert not session.latched, "garbage latched the session"
    for data in bad:
        phone.send(data, session.local_address)
        phone.send(phone.next_packet(), session.local_address)
    await wait_until(lambda: session.counters.malformed == 2 * len(bad), what="more garbage")
    await wait_until(lambda: session.counters.received == len(bad), what="the phone's audio")
    assert session.remote == phone.address
    assert len(heard.frames) == len(bad)
    assert session.counters.foreign_source == session.counters.foreign_ssrc == 0
    assert not loop_errors


async def test_malformed_telephone_event_is_counted(
    open_session: Opener, peers: Callable[[], Awaitable[RtpPeer]]
) -> None:
    session = await open_session()
    heard = Heard(session)
    phone = await peers()
    phone.send(rtp(1, pt=101, payload=b"\x05"), session.local_address)  # 1 byte, needs 4
    await wait_until(lambda: session.counters.malformed == 1, what="bad event counted")
    assert heard.digits == []


def test_unknown_payload_type_is_counted_not_decoded() -> None:
    session = RtpSession()
    heard = Heard(session)
    for seq, pt in enumerate((0, 18, 13)):
        session.datagram_received(rtp(seq + 1, pt=pt), ("127.0.0.1", 4000))
    assert session.counters.unknown_payload == 2
    assert len(heard.frames) == 1


def test_only_a_negotiated_stream_can_latch_the_session() -> None:
    """A stray RTP-looking datagram of some other payload type, arriving before the phone's
    first packet, must not take the media over."""
    session = RtpSession()
    heard = Heard(session)
    session.datagram_received(rtp(1, pt=18), ("192.0.2.66", 6666))
    assert not session.latched and session.counters.foreign_source == 1
    session.datagram_received(rtp(2, pt=0), ("127.0.0.1", 4000))
    assert session.latched and session.remote == ("127.0.0.1", 4000)
    assert len(heard.frames) == 1


def test_rtcp_on_the_rtp_port_is_not_audio() -> None:
    session = RtpSession()
    heard = Heard(session)
    receiver_report = bytes((0x80, 201, 0, 1)) + (0x1111).to_bytes(4, "big") + bytes(4)
    session.datagram_received(receiver_report, ("127.0.0.1", 4000))
    assert session.counters.received == 0 and session.counters.malformed == 0
    assert heard.frames == []


_LOOKS_LIKE_RTP = st.tuples(
    st.booleans(), st.sampled_from((None, 0, 101, 72, 127)), st.binary(max_size=300)
)


@settings(max_examples=400, deadline=None)
@given(datagrams=st.lists(_LOOKS_LIKE_RTP, max_size=20))
def test_no_datagram_makes_the_receive_path_raise(
    datagrams: list[tuple[bool, int | None, bytes]],
) -> None:
    """Every decoding path switched on (audio, in-band and RFC 4733 DTMF, a tap); most
    datagrams are made to pass the header check so the deeper paths see them."""
    session = RtpSession()
    session.detect_inband()
    heard = Heard(session)
    tapped: list[bytes] = []
    session.inbound_tap = lambda payload, *_: tapped.append(payload)
    for version_2, pt, data in datagrams:
        if version_2 and data:
            data = bytes((0x80 | (data[0] & 0x3F),)) + data[1:]
        if pt is not None and len(data) > 1:
            data = data[:1] + bytes((pt | (data[1] & 0x80),)) + data[2:]
        session.datagram_received(data, ("127.0.0.1", 4000))
    assert len(heard.frames) == len(tapped) <= session.counters.received


# -- a second SSRC --------------------------------------------------------------------------


async def test_second_ssrc_is_dropped_while_the_first_flows_then_takes_over(
    open_session: Opener, peers: Callable[[], Awaitable[RtpPeer]]
) -> None:
    session = await open_session()
    heard = Heard(session)
    phone = await peers()
    first, second = 0xAAAA0001, 0xBBBB0002
    for seq in range(1, 6):
        phone.send(rtp(seq, first), session.local_address)
        phone.send(rtp(1000 + seq, second), session.local_address)
    await wait_until(lambda: session.counters.received == 5, what="the first stream")
    await wait_until(lambda: session.counters.foreign_ssrc == 5, what="the second counted")
    assert session.in_ssrc == first and len(heard.frames) == 5
    await asyncio.sleep(0.6)  # the first source falls quiet for longer than 0.5 s
    phone.send(rtp(1006, second), session.local_address)
    await wait_until(lambda: session.counters.received == 6, what="the takeover")
    assert session.in_ssrc == second
    assert session.stats is not None and session.stats.ssrc == second
    phone.send(rtp(6, first), session.local_address)  # now the old one is the intruder
    await wait_until(lambda: session.counters.foreign_ssrc == 6, what="the old SSRC dropped")
    assert len(heard.frames) == 6


# -- loss, reordering and duplicates --------------------------------------------------------


async def test_relay_forwards_reordered_and_duplicated_packets_as_they_came(
    open_session: Opener, peers: Callable[[], Awaitable[RtpPeer]]
) -> None:
    """The relay does not repair the stream (the far phone's jitter buffer does): order, gaps
    and the duplicate reach the far phone as they came, renumbered onto the far leg's own
    stream; the receiver statistics see one packet lost, one out of order, one duplicate."""
    a, b = await open_session(), await open_session()
    phone_a, phone_b = await peers(), await peers()
    a.configure(phone_a.address, PCMU)
    b.configure(phone_b.address, PCMU)
    Relay(a, b).start()
    order = [100, 101, 102, 104, 103, 103, 105, 107, 108]  # 106 lost, 103 twice
    for seq in order:
        phone_a.send(rtp(seq, 0x5EED, payload=bytes([seq]) * FRAME_SAMPLES), a.local_address)
    await wait_until(lambda: len(phone_b.received) == len(order), what="relayed packets")
    got = phone_b.packets()
    assert [p.payload[0] for p in got] == order
    assert [(p.sequence - got[0].sequence) & 0xFFFF for p in got] == [s - 100 for s in order]
    assert [(p.timestamp - got[0].timestamp) & 0xFFFFFFFF for p in got] == [
        (s - 100) * FRAME_SAMPLES for s in order
    ]
    assert {p.ssrc for p in got} == {b.ssrc}
    stats = a.stats
    assert stats is not None
    # 100 is the probation packet (RFC 3550 A.1); from 101 to 108, 8 expected, 7 arrived.
    assert (stats.expected, stats.received) == (8, 7)
    assert (stats.lost, stats.duplicates, stats.out_of_order) == (1, 1, 1)
    assert a.counters.received == len(order)


async def test_sequence_wrap_is_not_loss(
    open_session: Opener, peers: Callable[[], Awaitable[RtpPeer]]
) -> None:
    session = await open_session()
    phone = await peers()
    for seq in (65533, 65534, 65535, 0, 1, 2):
        phone.send(build_rtp(0, seq, seq * 160, 0x77, SILENCE), session.local_address)
    await wait_until(lambda: session.counters.received == 6, what="the stream")
    stats = session.stats
    assert stats is not None
    assert (stats.lost, stats.duplicates, stats.cycles) == (0, 0, 65536)


# -- DTMF -----------------------------------------------------------------------------------


def event_datagrams(digit: str, seq: int, timestamp: int, ssrc: int = 0x4733) -> list[bytes]:
    return [
        build_rtp(101, seq + i, timestamp, ssrc, p.payload, marker=p.marker)
        for i, p in enumerate(dtmf_event_packets(digit, duration_ms=200))
    ]


async def test_rfc4733_key_press_is_reported_once(
    open_session: Opener, peers: Callable[[], Awaitable[RtpPeer]]
) -> None:
    """Three end packets, a lost start packet, a duplicated update: one digit each."""
    session = await open_session()
    heard = Heard(session)
    phone = await peers()
    five = event_datagrams("5", 10, 8000)
    hash_ = event_datagrams("#", 20, 16000)
    assert len(five) >= 5 and parse_rtp(five[0]).marker
    stream = [*five[1:], hash_[0], hash_[1], hash_[1], *hash_[2:], hash_[-1]]
    for data in stream:
        phone.send(data, session.local_address)
    await wait_until(lambda: session.counters.received == len(stream), what="the events")
    assert heard.digits == ["5", "#"]


def test_a_key_whose_end_packets_were_all_lost_is_reported_when_audio_resumes() -> None:
    session = RtpSession()
    heard = Heard(session)
    source = ("127.0.0.1", 4000)
    seven = [p for p in event_datagrams("7", 10, 8000, ssrc=0x1111) if not _is_end(p)]
    session.datagram_received(rtp(9), source)
    for data in seven:
        session.datagram_received(data, source)
    assert heard.digits == []
    session._dtmf_last -= 0.3  # a third of a second of silence later, audio flows again
    session.datagram_received(rtp(20), source)
    assert heard.digits == ["7"]
    session.datagram_received(rtp(21), source)
    assert heard.digits == ["7"]  # reported once


def _is_end(data: bytes) -> bool:
    return bool(parse_rtp(data).payload[1] & 0x80)


async def test_inband_tones_are_detected(
    open_session: Opener, peers: Callable[[], Awaitable[RtpPeer]]
) -> None:
    session = await open_session()
    session.detect_inband()
    heard = Heard(session)
    phone = await peers()
    pcm = dtmf_tones("19#*0", tone_ms=80, gap_ms=60)
    frames = [pcm[i : i + FRAME_SAMPLES] for i in range(0, len(pcm), FRAME_SAMPLES)]
    for seq, frame in enumerate(frames, start=1):
        phone.send(rtp(seq, payload=ulaw_encode(frame)), session.local_address)
        await asyncio.sleep(0)  # keep the socket buffer shallow
    await wait_until(lambda: session.counters.received == len(frames), what="the tones")
    assert heard.digits == list("19#*0")


async def test_inband_detection_off_reports_nothing(
    open_session: Opener, peers: Callable[[], Awaitable[RtpPeer]]
) -> None:
    session = await open_session()
    heard = Heard(session)
    phone = await peers()
    pcm = dtmf_tones("5", tone_ms=100, gap_ms=60)
    starts = range(0, len(pcm), FRAME_SAMPLES)
    for seq, i in enumerate(starts, start=1):
        frame = pcm[i : i + FRAME_SAMPLES]
        phone.send(rtp(seq, payload=ulaw_encode(frame)), session.local_address)
    await wait_until(lambda: len(heard.frames) == len(starts), what="the audio")
    assert heard.digits == []


async def test_send_dtmf_is_decoded_by_a_receiver(
    open_session: Opener, peers: Callable[[], Awaitable[RtpPeer]]
) -> None:
    session = await open_session()
    phone = await peers()
    session.configure(phone.address, PCMU, dtmf_pt=101)
    session.send_silence()
    for digit in "77*":
        session.send_dtmf(digit, duration_ms=120)
    session.send_silence()
    await wait_until(lambda: session.counters.sent == len(phone.received), what="all packets")
    packets = phone.packets()
    events = [p for p in packets if p.payload_type == 101]
    receiver = DtmfReceiver()
    digits = [d.digit for p in events for d in receiver.feed_packet(p)]
    assert digits == ["7", "7", "*"]
    assert [p.sequence for p in packets] == [
        (packets[0].sequence + i) & 0xFFFF for i in range(len(packets))
    ]
    presses = list(dict.fromkeys(p.timestamp for p in events))  # in the order sent
    assert len(presses) == 3
    first_of_press = [
        i == 0 or p.timestamp != events[i - 1].timestamp for i, p in enumerate(events)
    ]
    assert [p.marker for p in events] == first_of_press
    assert {p.ssrc for p in packets} == {session.ssrc}
    # Audio resumes after the last press's duration (120 ms = 960 timestamp units).
    assert (packets[-1].timestamp - presses[-1]) & 0xFFFFFFFF == 960


def test_send_dtmf_without_telephone_event_is_refused() -> None:
    session = RtpSession()
    session.configure(("127.0.0.1", 9), PCMU, dtmf_pt=None)
    with pytest.raises(DtmfError):
        session.send_dtmf("1")


# -- the port pool --------------------------------------------------------------------------


def test_pool_hands_out_each_even_port_once() -> None:
    pool = PortPool(17001, 17010)
    ports = [pool.take() for _ in range(5)]
    assert sorted(ports) == [17002, 17004, 17006, 17008, 17010]
    with pytest.raises(MediaPortsExhausted):
        pool.take()
    pool.give_back(ports[2])
    pool.give_back(ports[2])  # twice is harmless
    pool.give_back(4242)  # never ours: ignored
    assert (pool.available, pool.in_use) == (1, 4)
    assert pool.take() == ports[2]


def test_pool_refuses_ranges_without_an_even_port() -> None:
    with pytest.raises(ValueError, match="empty"):
        PortPool(17010, 17000)
    with pytest.raises(ValueError, match="no even port"):
        PortPool(17001, 17001)


def _hold_block(count: int) -> tuple[int, list[socket.socket]]:
    """``count`` consecutive even ports on 127.0.0.1, all bound by us: a free block."""
    for base in range(18000, 19000, 2 * count):
        held: list[socket.socket] = []
        try:
            for port in range(base, base + 2 * count, 2):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            for sock in held:
                sock.close()
            continue
        return base, held
    raise AssertionError("no free block of UDP ports")


async def test_open_skips_ports_taken_by_another_program() -> None:
    base, held = _hold_block(3)
    try:
        free = held.pop(1)
        port = free.getsockname()[1]
        free.close()
        pool = PortPool(base, base + 5)
        session = await RtpSession.open(pool)
        try:
            assert session.local_address == ("127.0.0.1", port)
            assert (pool.in_use, pool.available) == (1, 2)
            with pytest.raises(MediaPortsExhausted):
                await RtpSession.open(pool)  # the other two are someone else's
            assert (pool.in_use, pool.available) == (1, 2)
        finally:
            session.close()
    finally:
        for sock in held:
            sock.close()


async def test_open_on_an_exhausted_pool_raises() -> None:
    base, held = _hold_block(1)
    held[0].close()
    pool = PortPool(base, base)
    session = await RtpSession.open(pool)
    try:
        with pytest.raises(MediaPortsExhausted):
            await RtpSession.open(pool)
    finally:
        session.close()


async def test_close_returns_the_port() -> None:
    base, held = _hold_block(1)
    held[0].close()
    pool = PortPool(base, base)
    session = await RtpSession.open(pool)
    session.on_pcm = lambda *_: None
    session.close()
    session.close()  # twice is harmless
    assert session.closed and session.on_pcm is None
    assert (pool.in_use, pool.available) == (0, 1)
    again: list[RtpSession] = []

    async def reopen() -> bool:
        try:
            again.append(await RtpSession.open(pool))
        except MediaPortsExhausted:
            return False
        return True

    for _ in range(100):  # the socket itself closes on the loop's next turn
        if await reopen():
            break
        await asyncio.sleep(0.01)
    assert again and again[0].local_address == ("127.0.0.1", base)
    again[0].close()


async def test_sending_before_the_remote_is_known_or_after_close_sends_nothing(
    open_session: Opener,
) -> None:
    session = await open_session()
    session.send_silence()
    assert session.counters.sent == 0
    session.configure(("127.0.0.1", 9), PCMU)
    session.close()
    session.send_pcm(tone(440, 0, FRAME_SAMPLES))
    assert session.counters.sent == 0
