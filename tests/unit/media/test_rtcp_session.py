"""RTCP of RTP sessions on real loopback sockets: the odd port next to each RTP port, our
reports (SR/RR with a report block on the peer's stream, SDES, BYE), what the peer's reports
tell us about our stream, and the metrics built from them."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from pomelo.media.engine import MediaEngine
from pomelo.media.rtp import (
    ReportBlock,
    RtcpBye,
    RtcpPacket,
    RtcpReceiverReport,
    RtcpSdes,
    RtcpSenderReport,
    build_rtcp_compound,
    build_rtp,
    ntp_middle32,
    ntp_timestamp,
    parse_rtcp,
)
from pomelo.media.session import (
    FRAME_SAMPLES,
    PCMU,
    MediaPortsExhausted,
    PortPool,
    RemoteReport,
    RtpSession,
)
from pomelo.pbx.media_metrics import MediaCollector
from tests.support.rtp import Address, RtpPeer, garbage, wait_until

# Clear of test_session.py's range (17000-17999) and below the kernel's ephemeral ports.
_LOW, _HIGH = 16000, 16999
_POOL = PortPool(_LOW, _HIGH)
SILENCE = b"\xff" * FRAME_SAMPLES
PHONE_SSRC = 0x0BADCAFE
Opener = Callable[[], Awaitable[RtpSession]]


class Phone:
    """A phone's RTP socket on an even port and its RTCP socket on the next one."""

    def __init__(self, rtp: RtpPeer, rtcp: RtpPeer) -> None:
        self.rtp = rtp
        self.rtcp = rtcp

    @classmethod
    async def open(cls) -> Phone:
        for base in range(19000, 19998, 2):
            rtp, rtcp = RtpPeer(), RtpPeer()
            if not await _bind(rtp, base):
                continue
            if await _bind(rtcp, base + 1):
                return cls(rtp, rtcp)
            rtp.close()
        raise AssertionError("no free pair of UDP ports")

    def reports(self, on_rtp_port: bool = False) -> list[list[RtcpPacket]]:
        """Every compound RTCP packet that reached the phone, parsed."""
        socket_ = self.rtp if on_rtp_port else self.rtcp
        return [parse_rtcp(d.data) for d in socket_.rtcp]

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


async def _bind(peer: RtpPeer, port: int) -> bool:
    try:
        await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: peer, local_addr=("127.0.0.1", port)
        )
    except OSError:
        return False
    return True


def _can_bind(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def rtcp_address(session: RtpSession) -> Address:
    host, port = session.local_address
    return host, port + 1


def rtp(seq: int, ssrc: int = PHONE_SSRC) -> bytes:
    return build_rtp(0, seq, seq * FRAME_SAMPLES, ssrc, SILENCE)


def receiver_report(block: ReportBlock) -> bytes:
    rr = RtcpReceiverReport(PHONE_SSRC, (block,))
    return build_rtcp_compound([rr, RtcpSdes.cname(PHONE_SSRC, "phone@127.0.0.1")])


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
async def phone() -> AsyncIterator[Phone]:
    opened = await Phone.open()
    yield opened
    opened.close()


async def receive_stream(session: RtpSession, phone: Phone, seqs: list[int]) -> None:
    for seq in seqs:
        phone.rtp.send(rtp(seq), session.local_address)
    await wait_until(lambda: session.counters.received == len(seqs), what="the phone's RTP")


# -- the ports ------------------------------------------------------------------------------


async def test_open_binds_the_odd_port_too_and_close_frees_both(open_session: Opener) -> None:
    session = await open_session()
    port = session.local_address[1]
    assert port % 2 == 0
    assert session.rtcp_transport is not None
    assert session.rtcp_transport.get_extra_info("sockname")[:2] == ("127.0.0.1", port + 1)
    assert not _can_bind(port) and not _can_bind(port + 1)
    session.close()
    await wait_until(lambda: _can_bind(port) and _can_bind(port + 1), what="both ports free")
    assert (_POOL.in_use, session.closed) == (0, True)


def _free_block(size: int) -> tuple[int, list[socket.socket]]:
    """``size`` consecutive ports from an even one on 127.0.0.1, all bound by us."""
    for base in range(18600, 19000, size + size % 2):
        held: list[socket.socket] = []
        try:
            for port in range(base, base + size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            for sock in held:
                sock.close()
            continue
        return base, held
    raise AssertionError("no free block of UDP ports")


async def test_a_pair_whose_odd_port_another_program_holds_is_skipped() -> None:
    """A peer sends RTCP to our RTP port + 1 whatever happens, so an RTP port whose
    neighbour is someone else's is unusable: the pair is skipped and its even port released."""
    base, held = _free_block(4)
    odd = held.pop(1)
    for sock in held:
        sock.close()
    try:
        pool = PortPool(base, base + 2)
        session = await RtpSession.open(pool)
        try:
            assert session.local_address == ("127.0.0.1", base + 2)
            assert (pool.in_use, pool.available) == (1, 1)
            with pytest.raises(MediaPortsExhausted):
                await RtpSession.open(pool)
            assert (pool.in_use, pool.available) == (1, 1)
            await wait_until(lambda: _can_bind(base), what="the skipped even port released")
        finally:
            session.close()
    finally:
        odd.close()


# -- our reports ----------------------------------------------------------------------------


async def test_engine_sends_a_sender_report_with_our_counts_and_the_peers_loss(
    phone: Phone,
) -> None:
    """The phone sends 20 packets of which two never arrive; the PBX sends 7. Its next SR
    counts those 7 (160 payload octets each) and its report block says what the phone
    sent: highest sequence 1019, 2 lost. The report after it, with nothing sent in between,
    is an RR."""
    engine = MediaEngine("127.0.0.1", _LOW, _HIGH, rtp_timeout=0, rtcp_interval=0.25)
    session = await engine.open_session()
    try:
        session.configure(phone.rtp.address, PCMU)
        await receive_stream(
            session, phone, [s for s in range(1000, 1020) if s not in (1007, 1012)]
        )
        for _ in range(7):
            session.send_silence()

        def senders() -> list[int]:
            return [i for i, c in enumerate(phone.reports()) if isinstance(c[0], RtcpSenderReport)]

        await wait_until(lambda: bool(senders()), what="a sender report")
        at = senders()[0]
        await wait_until(lambda: len(phone.reports()) > at + 1, what="the report after it")
        compounds = phone.reports()
        sr, sdes = compounds[at]
        assert isinstance(sr, RtcpSenderReport) and isinstance(sdes, RtcpSdes)
        assert (sr.ssrc, sr.packet_count, sr.octet_count) == (session.ssrc, 7, 7 * 160)
        assert sr.rtp_timestamp == session.timestamp
        assert [(b.ssrc, b.highest_seq, b.cumulative_lost) for b in sr.reports] == [
            (PHONE_SSRC, 1019, 2)
        ]
        assert sdes.chunks == ((session.ssrc, ((1, b"pomelo@127.0.0.1"),)),)
        after = compounds[at + 1][0]
        assert isinstance(after, RtcpReceiverReport) and after.ssrc == session.ssrc
        assert {d.source for d in phone.rtcp.rtcp} == {rtcp_address(session)}
    finally:
        session.close()
        await engine.stop()


async def test_report_block_loss_fraction_covers_the_interval_since_the_last_report(
    open_session: Opener, phone: Phone
) -> None:
    session = await open_session()
    session.configure(phone.rtp.address, PCMU)
    assert session.send_report()  # nothing heard yet: an RR without a block
    await receive_stream(session, phone, [s for s in range(1000, 1020) if s not in (1007, 1012)])
    assert session.send_report()
    assert session.send_report()
    await wait_until(lambda: len(phone.reports()) == 3, what="three reports")
    first, second, third = (c[0] for c in phone.reports())
    assert isinstance(first, RtcpReceiverReport) and first.reports == ()
    assert isinstance(second, RtcpReceiverReport) and isinstance(third, RtcpReceiverReport)
    assert second.reports[0].fraction_lost == 2 * 256 // 19  # 2 of the 19 expected
    assert (third.reports[0].fraction_lost, third.reports[0].cumulative_lost) == (0, 2)
    assert session.counters.rtcp_sent == 3


async def test_close_sends_a_bye_only_when_there_is_a_peer(
    open_session: Opener, phone: Phone
) -> None:
    lonely = await open_session()
    lonely.close()
    assert lonely.counters.rtcp_sent == 0
    session = await open_session()
    session.configure(phone.rtp.address, PCMU)
    session.send_silence()
    session.close()
    await wait_until(lambda: len(phone.reports()) == 1, what="the BYE")
    sr, sdes, bye = phone.reports()[0]
    assert isinstance(sr, RtcpSenderReport) and sr.packet_count == 1
    assert isinstance(sdes, RtcpSdes)
    assert bye == RtcpBye((session.ssrc,))
    assert not session.send_report()  # closed: nothing more goes out


# -- the peer's reports ---------------------------------------------------------------------


async def test_peer_receiver_report_gives_loss_jitter_and_round_trip(
    open_session: Opener, phone: Phone
) -> None:
    """The phone got our SR 200 ms ago and held it 150 ms before answering: 50 ms of round
    trip, plus however long the datagram took on this machine."""
    session = await open_session()
    session.configure(phone.rtp.address, PCMU)
    start = time.time()
    block = ReportBlock(
        ssrc=session.ssrc,
        fraction_lost=64,
        cumulative_lost=5,
        highest_seq=70_000,
        jitter=80,
        lsr=ntp_middle32(*ntp_timestamp(start - 0.2)),
        dlsr=int(0.15 * 65536),
    )
    other = ReportBlock(0x5EC0D, 255, 999, 1, 8000)  # about someone else's stream: ignored
    rr = RtcpReceiverReport(PHONE_SSRC, (other, block))
    phone.rtcp.send(build_rtcp_compound([rr]), rtcp_address(session))
    await wait_until(lambda: session.remote_report is not None, what="the report")
    elapsed_ms = (time.time() - start) * 1000
    report = session.remote_report
    assert report is not None
    assert (report.fraction_lost, report.cumulative_lost) == (0.25, 5)
    assert (report.highest_seq, report.jitter_ms) == (70_000, 10.0)
    assert report.rtt_ms is not None and 49.9 <= report.rtt_ms <= 50.1 + elapsed_ms
    assert session.counters.rtcp_received == 1 and session.counters.malformed == 0


async def test_peer_sender_report_is_echoed_and_gives_no_rtt_before_it_heard_ours(
    open_session: Opener, phone: Phone
) -> None:
    session = await open_session()
    session.configure(phone.rtp.address, PCMU)
    await receive_stream(session, phone, list(range(1, 11)))
    seconds, fraction = ntp_timestamp(time.time())
    mine = ReportBlock(session.ssrc, 0, 0, 3, 16)  # LSR 0: the phone has no SR of ours yet
    sr = RtcpSenderReport(PHONE_SSRC, seconds, fraction, 1600, 10, 1600, (mine,))
    phone.rtcp.send(build_rtcp_compound([sr]), rtcp_address(session))
    await wait_until(lambda: session.remote_report is not None, what="the report")
    assert session.remote_report is not None
    assert session.remote_report.rtt_ms is None
    assert session.remote_report.jitter_ms == 2.0
    assert session.send_report()
    await wait_until(lambda: len(phone.reports()) == 1, what="our answer")
    rr = phone.reports()[0][0]
    assert isinstance(rr, RtcpReceiverReport)
    (block,) = rr.reports
    assert (block.ssrc, block.highest_seq, block.cumulative_lost) == (PHONE_SSRC, 10, 0)
    assert block.lsr == ntp_middle32(seconds, fraction)
    assert block.dlsr < 65536 * 60  # a delay since the SR, not garbage


async def test_rtcp_multiplexed_on_the_rtp_port_is_read_and_answered_there(
    open_session: Opener, phone: Phone
) -> None:
    """A peer doing rtcp-mux (RFC 5761) sends RTCP to our RTP port: it is read, not taken
    for audio, and our reports go back to its RTP port from ours."""
    session = await open_session()
    session.configure(phone.rtp.address, PCMU)
    await receive_stream(session, phone, list(range(1, 6)))
    phone.rtp.send(receiver_report(ReportBlock(session.ssrc, 128, 7, 9, 0)), session.local_address)
    await wait_until(lambda: session.remote_report is not None, what="the muxed report")
    assert session.remote_report is not None and session.remote_report.fraction_lost == 0.5
    assert session.counters.received == 5 and session.counters.malformed == 0
    assert session.send_report()
    await wait_until(lambda: len(phone.reports(on_rtp_port=True)) == 1, what="our muxed report")
    assert phone.rtp.rtcp[0].source == session.local_address
    assert phone.reports() == []


async def test_peer_reports_are_forgotten_when_the_media_moves(
    open_session: Opener, phone: Phone
) -> None:
    session = await open_session()
    session.configure(phone.rtp.address, PCMU)
    phone.rtcp.send(receiver_report(ReportBlock(session.ssrc, 1, 1, 1, 1)), rtcp_address(session))
    await wait_until(lambda: session.remote_report is not None, what="the report")
    session.configure(phone.rtp.address, PCMU)  # a refresh: nothing changed
    assert session.remote_report is not None
    session.configure(("127.0.0.1", 19998), PCMU)
    assert session.remote_report is None
    assert session.rtcp_remote == ("127.0.0.1", 19999)


# -- bad RTCP -------------------------------------------------------------------------------


async def test_garbage_on_the_rtcp_port_is_counted_and_harmless(
    open_session: Opener, phone: Phone, loop_errors: list[dict[str, Any]]
) -> None:
    session = await open_session()
    session.configure(phone.rtp.address, PCMU)
    good = receiver_report(ReportBlock(session.ssrc, 0, 0, 1, 0))
    broken_rtcp = [
        good[:-4],  # lengths no longer tile the datagram
        bytes((0x80, 200, 0, 1)) + bytes(4),  # an SR too short for its sender info
        bytes((0x81, 201, 0, 1)) + bytes(4),  # one report block announced, none there
        bytes((0xA0, 201, 0, 1)) + bytes(3) + b"\x09",  # padding longer than the packet
    ]
    bad = [d for batch in garbage(random.Random(3550)).values() for d in batch] + broken_rtcp
    for data in bad:
        phone.rtcp.send(data, rtcp_address(session))
    await wait_until(lambda: session.counters.malformed == len(bad), what="garbage counted")
    assert session.remote_report is None and session.counters.rtcp_received == 0
    assert not loop_errors
    phone.rtcp.send(good, rtcp_address(session))  # a real report still gets through
    await wait_until(lambda: session.remote_report is not None, what="the real report")
    assert session.counters.malformed == len(bad)
    assert session.rtcp_remote == phone.rtcp.address


async def test_rtcp_from_another_host_or_port_is_dropped(
    open_session: Opener, phone: Phone
) -> None:
    """Only the host the media comes from is heard, and once its RTCP came from one port,
    only that port: a stranger cannot feed us reports or redirect ours. Before the media
    flows, RTCP from another host than the SDP's is ignored without counting it an intruder
    (a phone behind NAT sends from another host than its SDP names)."""
    session = await open_session()
    session.configure(phone.rtp.address, PCMU)
    lossy = receiver_report(ReportBlock(session.ssrc, 255, 1, 1, 1))
    clean = receiver_report(ReportBlock(session.ssrc, 0, 0, 1, 0))
    stranger = RtpPeer()
    loop = asyncio.get_running_loop()
    try:
        await loop.create_datagram_endpoint(lambda: stranger, local_addr=("127.0.0.2", 0))
    except OSError:
        pytest.skip("127.0.0.2 is not a loopback address here")
    try:
        stranger.send(lossy, rtcp_address(session))  # before the media: ignored quietly
        phone.rtcp.send(clean, rtcp_address(session))
        await wait_until(lambda: session.remote_report is not None, what="the phone's report")
        assert session.counters.foreign_source == 0
        await receive_stream(session, phone, [1, 2])
        stranger.send(lossy, rtcp_address(session))
        await wait_until(lambda: session.counters.foreign_source == 1, what="stranger dropped")
        phone.rtp.send(lossy, rtcp_address(session))  # the phone's host, another port
        await wait_until(lambda: session.counters.foreign_source == 2, what="other port dropped")
        assert session.remote_report is not None
        assert session.remote_report.fraction_lost == 0.0
        assert session.counters.rtcp_received == 1
    finally:
        stranger.close()


# -- the engine's tick ----------------------------------------------------------------------


async def test_each_tick_reports_for_a_fifth_of_the_sessions(phone: Phone) -> None:
    """Twelve sessions, ten of which know their peer: five ticks send one report for each of
    the ten, no tick more than three; a closed session is not reported any more."""
    engine = MediaEngine("127.0.0.1", _LOW, _HIGH, rtp_timeout=0, rtcp_interval=3600)
    sessions = [await engine.open_session() for _ in range(12)]
    try:
        for session in sessions[:10]:
            session.configure(phone.rtp.address, PCMU)
        per_tick = [engine.send_reports() for _ in range(5)]
        assert sum(per_tick) == 10 and max(per_tick) <= 3
        assert [s.counters.rtcp_sent for s in sessions] == [1] * 10 + [0, 0]
        sessions[0].close()  # its BYE is its last report
        assert sum(engine.send_reports() for _ in range(5)) == 9
        assert sessions[0].counters.rtcp_sent == 2
        assert engine.totals.counts["rtcp_sent"] == 2
    finally:
        for session in sessions:
            session.close()
        await engine.stop()


async def test_metrics_give_quantiles_of_the_peers_reports(phone: Phone) -> None:
    engine = MediaEngine("127.0.0.1", _LOW, _HIGH, rtp_timeout=0, rtcp_interval=0)
    sessions = [await engine.open_session() for _ in range(4)]
    try:
        collector = MediaCollector(engine)
        assert _samples(collector, "pomelo_rtcp_rtt_ms") == {}
        assert _samples(collector, "pomelo_rtcp_reported_loss_fraction") == {}
        for session, (loss, rtt) in zip(
            sessions[:3], [(0.0, 20.0), (0.5, None), (0.25, 80.0)], strict=True
        ):
            session.remote_report = RemoteReport(loss, 0, 0, 0.0, rtt, 0.0)
        assert _samples(collector, "pomelo_rtcp_reported_loss_fraction") == {
            "0.5": 0.25,
            "0.99": 0.5,
        }
        assert _samples(collector, "pomelo_rtcp_rtt_ms") == {"0.5": 80.0, "0.99": 80.0}
        sessions[0].configure(phone.rtp.address, PCMU)
        sessions[0].close()
        sent = _samples(collector, "pomelo_rtcp_sent_packets_total", label=None)
        assert sent == {"": 1.0}
    finally:
        for session in sessions:
            session.close()
        await engine.stop()


def _samples(
    collector: MediaCollector, name: str, label: str | None = "quantile"
) -> dict[str, float]:
    return {
        (s.labels[label] if label else ""): s.value
        for family in collector.collect()
        for s in family.samples
        if s.name == name
    }
