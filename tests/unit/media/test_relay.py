"""The relay between two legs (same law, µ-law ↔ A-law, event payload types, the recorder
tap), prompt playback on the media clock, the clock itself and the RTP watchdog."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from pomelo.media.dtmf import dtmf_event_packets
from pomelo.media.engine import TICK, MediaClock, MediaEngine
from pomelo.media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from pomelo.media.relay import Playback, Relay
from pomelo.media.rtp import RtpExtension, RtpPacket, build_rtp
from pomelo.media.session import FRAME_SAMPLES, PCMA, PCMU, Codec, PortPool, RtpSession
from tests.support.rtp import RtpPeer, tone, wait_until

_POOL = PortPool(17000, 17999)  # see test_session.py for the choice of range
Pcm = npt.NDArray[np.int16]


def decode(codec: str, payload: bytes) -> Pcm:
    return ulaw_decode(payload) if codec == "PCMU" else alaw_decode(payload)


def encode(codec: Codec, pcm: Pcm) -> bytes:
    return ulaw_encode(pcm) if codec.name == "PCMU" else alaw_encode(pcm)


def snr_db(reference: Pcm, decoded: Pcm) -> float:
    ref = reference.astype(np.float64)
    noise = decoded.astype(np.float64) - ref
    return float(10 * np.log10(np.sum(ref**2) / max(float(np.sum(noise**2)), 1.0)))


@dataclass
class Leg:
    """One side of a relayed call: the PBX's session and the phone talking to it."""

    session: RtpSession
    phone: RtpPeer

    def send(self, data: bytes) -> None:
        self.phone.send(data, self.session.local_address)


LegFactory = Callable[..., Awaitable[Leg]]


@pytest.fixture
async def leg() -> AsyncIterator[LegFactory]:
    opened: list[Leg] = []

    async def open_leg(codec: Codec = PCMU, dtmf_pt: int | None = 101) -> Leg:
        session = await RtpSession.open(_POOL)
        phone = await RtpPeer.open()
        session.configure(phone.address, codec, dtmf_pt)
        opened.append(Leg(session, phone))
        return opened[-1]

    yield open_leg
    for one in opened:
        one.session.close()
        one.phone.close()


def frames_of(pcm: Pcm) -> list[Pcm]:
    return [pcm[i : i + FRAME_SAMPLES] for i in range(0, len(pcm), FRAME_SAMPLES)]


def talk(leg: Leg, codec: Codec, pcm: Pcm, *, ssrc: int = 0xC0FFEE, first_seq: int = 500) -> None:
    for i, frame in enumerate(frames_of(pcm)):
        seq = first_seq + i
        leg.send(
            build_rtp(codec.payload_type, seq, seq * FRAME_SAMPLES, ssrc, encode(codec, frame))
        )


# -- the relay ------------------------------------------------------------------------------


async def test_same_law_is_forwarded_with_its_payload_untouched(leg: LegFactory) -> None:
    """Same law on both legs: payload, payload type and marker go through as they are; the
    packet joins the far leg's own stream (its SSRC, numbering shifted by a constant)."""
    a, b = await leg(), await leg()
    Relay(a.session, b.session).start()
    sent = [
        build_rtp(0, 40 + i, 9000 + 160 * i, 0xABCDEF, bytes([i]) * 160, marker=i == 0)
        for i in range(6)
    ]
    for data in sent:
        a.send(data)
    await wait_until(lambda: len(b.phone.received) == len(sent), what="relayed packets")
    got = b.phone.packets()
    assert [p.payload for p in got] == [bytes([i]) * 160 for i in range(6)]
    assert [p.marker for p in got] == [True] + [False] * 5
    assert {p.payload_type for p in got} == {0}
    assert {p.ssrc for p in got} == {b.session.ssrc}
    assert [(p.sequence - got[0].sequence) & 0xFFFF for p in got] == list(range(6))
    assert [(p.timestamp - got[0].timestamp) & 0xFFFFFFFF for p in got] == [
        160 * i for i in range(6)
    ]
    b.send(build_rtp(0, 7, 7, 0x1234, b"\x01" * 160))  # and the other way round
    await wait_until(lambda: len(a.phone.received) == 1, what="the reverse direction")
    assert a.phone.packets()[0].payload == b"\x01" * 160


@pytest.mark.parametrize(("law_a", "law_b"), [(PCMU, PCMA), (PCMA, PCMU)])
async def test_different_laws_are_transcoded(leg: LegFactory, law_a: Codec, law_b: Codec) -> None:
    a, b = await leg(law_a), await leg(law_b)
    Relay(a.session, b.session).start()
    pcm = tone(700, 0, 20 * FRAME_SAMPLES)
    talk(a, law_a, pcm)
    await wait_until(lambda: len(b.phone.received) == 20, what="transcoded packets")
    got = b.phone.packets()
    assert {p.payload_type for p in got} == {law_b.payload_type}
    heard = np.concatenate([decode(law_b.name, p.payload) for p in got])
    assert snr_db(pcm, heard) > 30  # two G.711 quantisations: still ~35 dB
    assert np.max(np.abs(heard.astype(np.int32) - pcm)) < 700  # a few codes at the peak


async def test_transcoding_drops_header_extension_and_padding_cleanly(leg: LegFactory) -> None:
    """A phone adding a header extension (audio level, RFC 6464) or padding: the far phone
    still gets a well-formed packet whose payload is the audio."""
    a, b = await leg(PCMU), await leg(PCMA)
    Relay(a.session, b.session).start()
    pcm = tone(500, 0, FRAME_SAMPLES)
    extension = RtpExtension(0xBEDE, b"\x10\x80\x00\x00")
    a.send(build_rtp(0, 1, 160, 0x5, ulaw_encode(pcm), extension=extension))
    a.send(build_rtp(0, 2, 320, 0x5, ulaw_encode(pcm), padding=4))
    a.send(build_rtp(0, 3, 480, 0x5, ulaw_encode(pcm), csrcs=(7, 8), extension=extension))
    await wait_until(lambda: len(b.phone.received) == 3, what="transcoded packets")
    got = b.phone.packets()
    assert len(got) == 3, "a relayed packet did not parse as RTP"
    for packet in got:
        assert packet.payload_type == 8
        assert len(packet.payload) == FRAME_SAMPLES
        assert snr_db(pcm, alaw_decode(packet.payload)) > 30
    assert got[2].csrcs == (7, 8)


async def test_telephone_event_payload_type_is_rewritten(leg: LegFactory) -> None:
    a, b = await leg(dtmf_pt=101), await leg(dtmf_pt=96)
    digits: list[str] = []
    a.session.on_dtmf = digits.append
    Relay(a.session, b.session).start()
    events = dtmf_event_packets("9", duration_ms=160)
    for i, event in enumerate(events):
        a.send(build_rtp(101, 70 + i, 4000, 0x99, event.payload, marker=event.marker))
    await wait_until(lambda: len(b.phone.received) == len(events), what="relayed events")
    got = b.phone.packets()
    assert {p.payload_type for p in got} == {96}
    assert [p.payload for p in got] == [e.payload for e in events]
    assert [p.marker for p in got] == [e.marker for e in events]
    assert len({p.timestamp for p in got}) == 1  # one key press, one timestamp
    assert digits == ["9"]  # and the PBX saw the key once (menus, transfers)


async def test_events_are_not_sent_to_a_leg_without_telephone_event(leg: LegFactory) -> None:
    a, b = await leg(dtmf_pt=101), await leg(dtmf_pt=None)
    digits: list[str] = []
    a.session.on_dtmf = digits.append
    Relay(a.session, b.session).start()
    for i, event in enumerate(dtmf_event_packets("3")):
        a.send(build_rtp(101, 70 + i, 4000, 0x99, event.payload, marker=event.marker))
    a.send(build_rtp(0, 80, 4800, 0x99, b"\xff" * 160))
    await wait_until(lambda: len(b.phone.received) == 1, what="the audio after the key")
    assert b.phone.packets()[0].payload_type == 0
    assert digits == ["3"]


async def test_unknown_payload_types_are_dropped_and_counted(leg: LegFactory) -> None:
    a, b = await leg(), await leg()
    relay = Relay(a.session, b.session)
    relay.start()
    a.send(build_rtp(18, 1, 160, 0x1, b"\x00" * 20))  # G.729, never negotiated
    a.send(build_rtp(13, 2, 320, 0x1, b"\x40"))  # comfort noise
    a.send(build_rtp(0, 3, 480, 0x1, b"\xff" * 160))
    await wait_until(lambda: len(b.phone.received) == 1, what="the audio packet")
    await wait_until(lambda: relay.dropped == 2, what="the unknown ones counted")
    assert b.phone.packets()[0].payload_type == 0


async def test_stopped_relay_forwards_nothing(leg: LegFactory) -> None:
    a, b = await leg(), await leg()
    relay = Relay(a.session, b.session)
    relay.start()
    relay.stop()
    heard: list[Pcm] = []
    a.session.on_pcm = lambda pcm, _ts, _at: heard.append(pcm)
    a.send(build_rtp(0, 1, 160, 0x1, b"\xff" * 160))
    await wait_until(lambda: len(heard) == 1, what="the packet, now for the application")
    assert not b.phone.received


class Tap:
    """A recorder stand-in: what the relay hands it, by channel."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, bytes, str, int, int]] = []

    def add_g711(
        self, channel: int, payload: bytes, codec: str, timestamp: int, ssrc: int, arrival: float
    ) -> None:
        self.calls.append((channel, payload, codec, timestamp, ssrc))

    def heard(self, channel: int) -> Pcm:
        parts = [decode(codec, p) for ch, p, codec, _, _ in self.calls if ch == channel]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)


@pytest.mark.parametrize(("client_law", "employee_law"), [(PCMA, PCMU), (PCMU, PCMA), (PCMU, PCMU)])
async def test_recorder_tap_puts_the_client_left_and_what_he_hears_right(
    leg: LegFactory, client_law: Codec, employee_law: Codec
) -> None:
    client, employee = await leg(client_law), await leg(employee_law)
    relay = Relay(employee.session, client.session)  # the client need not be ``a``
    relay.client = client.session
    tap = Tap()
    relay.recorder = tap
    relay.start()
    says = tone(440, 0, 10 * FRAME_SAMPLES)
    answers = tone(1000, 0, 10 * FRAME_SAMPLES)
    talk(client, client_law, says, ssrc=0xC1)
    await wait_until(lambda: len(tap.calls) == 10, what="the client's audio tapped")
    talk(employee, employee_law, answers, ssrc=0xE1)
    await wait_until(lambda: len(tap.calls) == 20, what="the employee's audio tapped")
    assert snr_db(says, tap.heard(0)) > 30
    assert snr_db(answers, tap.heard(1)) > 30
    assert {ssrc for ch, *_, ssrc in tap.calls if ch == 0} == {0xC1}
    assert {ssrc for ch, *_, ssrc in tap.calls if ch == 1} == {0xE1}


# -- playback -------------------------------------------------------------------------------


class ManualClock(MediaClock):
    """The media clock, ticked by the test instead of every 20 ms."""

    def __init__(self) -> None:
        super().__init__()
        self.callbacks: dict[int, Callable[[float], None]] = {}

    def subscribe(self, callback: Callable[[float], None]) -> int:
        token = id(callback)
        self.callbacks[token] = callback
        return token

    def unsubscribe(self, token: int) -> None:
        self.callbacks.pop(token, None)

    def tick(self, times: int = 1) -> None:
        for _ in range(times):
            for callback in list(self.callbacks.values()):
                callback(0.0)


def check_stream(packets: list[RtpPacket], ssrc: int) -> None:
    assert {p.ssrc for p in packets} == {ssrc}
    assert [(p.sequence - packets[0].sequence) & 0xFFFF for p in packets] == list(
        range(len(packets))
    )
    assert [(p.timestamp - packets[0].timestamp) & 0xFFFFFFFF for p in packets] == [
        FRAME_SAMPLES * i for i in range(len(packets))
    ]
    assert all(len(p.payload) == FRAME_SAMPLES for p in packets)


async def test_playback_sends_20_ms_frames_then_stops(leg: LegFactory) -> None:
    out = await leg(PCMA)
    clock = ManualClock()
    pcm = tone(600, 0, 3 * FRAME_SAMPLES + 80)  # 3.5 frames: the last is padded
    tap = Tap()
    playback = Playback(out.session, clock, pcm, recorder=tap).start()
    assert playback.seconds == pytest.approx(4 * FRAME_SAMPLES / 8000)
    clock.tick(3)
    assert not playback.done.done()
    clock.tick(5)
    assert playback.done.done() and not clock.callbacks
    assert out.session.counters.sent == 4
    await wait_until(lambda: len(out.phone.received) == 4, what="the prompt")
    packets = out.phone.packets()
    check_stream(packets, out.session.ssrc)
    assert {p.payload_type for p in packets} == {8}
    heard = np.concatenate([alaw_decode(p.payload) for p in packets])
    assert snr_db(pcm, heard[: len(pcm)]) > 30
    assert np.all(np.abs(heard[len(pcm) :]) <= 8)  # padding is silence
    assert [ch for ch, *_ in tap.calls] == [1] * 4  # the recording hears the prompt, right


async def test_looping_playback_repeats_until_stopped(leg: LegFactory) -> None:
    out = await leg()
    clock = ManualClock()
    pcm = tone(730, 0, 2 * FRAME_SAMPLES)  # the two frames differ
    playback = Playback(out.session, clock, pcm, loop=True).start()
    clock.tick(5)
    assert not playback.done.done()
    playback.stop()
    assert playback.done.done() and not clock.callbacks
    clock.tick(3)
    assert out.session.counters.sent == 5
    await wait_until(lambda: len(out.phone.received) == 5, what="the looped prompt")
    packets = out.phone.packets()
    check_stream(packets, out.session.ssrc)
    payloads = [p.payload for p in packets]
    assert payloads[0] == payloads[2] == payloads[4] != payloads[1] == payloads[3]


async def test_playback_ends_when_its_session_closes(leg: LegFactory) -> None:
    out = await leg()
    clock = ManualClock()
    playback = Playback(out.session, clock, tone(800, 0, 50 * FRAME_SAMPLES)).start()
    clock.tick(2)
    out.session.close()
    clock.tick()
    assert playback.done.done() and not clock.callbacks


async def test_empty_playback_is_done_at_once(leg: LegFactory) -> None:
    out = await leg()
    clock = ManualClock()
    playback = Playback(out.session, clock, np.zeros(0, dtype=np.int16)).start()
    assert playback.done.done() and not clock.callbacks


# -- the media clock ------------------------------------------------------------------------


async def test_clock_ticks_and_drops_a_failing_subscriber(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = MediaClock()
    good: list[float] = []
    other: list[float] = []
    failures: list[float] = []

    def failing(now: float) -> None:
        failures.append(now)
        raise RuntimeError("boom")

    try:
        with caplog.at_level(logging.ERROR, logger="pomelo.media.engine"):
            clock.subscribe(good.append)
            clock.subscribe(failing)
            clock.subscribe(other.append)
            await wait_until(lambda: len(good) >= 10 and len(other) >= 10, what="ten ticks")
        assert len(failures) == 1
        assert "dropping it" in caplog.text
        assert all(b > a for a, b in itertools.pairwise(good))  # nominal times rise
        if clock.late_ticks == 0:  # nominal, not measured: exactly one TICK apart
            steps = np.diff(good)
            assert np.allclose(steps, TICK)
    finally:
        clock.stop()
    count = len(good)
    await asyncio.sleep(0.1)
    assert len(good) == count  # stopped means stopped


async def test_clock_unsubscribe_stops_only_that_subscriber() -> None:
    clock = MediaClock()
    kept: list[float] = []
    gone: list[float] = []
    try:
        token = clock.subscribe(gone.append)
        clock.subscribe(kept.append)
        await wait_until(lambda: len(gone) >= 2, what="ticks")
        clock.unsubscribe(token)
        count = len(gone)
        await wait_until(lambda: len(kept) >= count + 5, what="more ticks")
        assert len(gone) == count
    finally:
        clock.stop()


# -- the RTP watchdog -----------------------------------------------------------------------


@pytest.fixture
async def engine() -> AsyncIterator[MediaEngine]:
    engine = MediaEngine("127.0.0.1", 17000, 17999, rtp_timeout=30.0)
    yield engine
    await engine.stop()


async def test_watchdog_reports_a_silent_session_once(engine: MediaEngine) -> None:
    silent, talking = RtpSession(), RtpSession()
    fired: list[str] = []
    engine.watch(silent, lambda: fired.append("silent"))
    engine.watch(talking, lambda: fired.append("talking"))
    later = time.monotonic() + 31
    talking.last_received = later - 1  # it kept sending
    engine.check_timeouts(later)
    engine.check_timeouts(later + 60)
    assert fired == ["silent", "talking"]


async def test_watchdog_counts_from_the_watch_after_hold(engine: MediaEngine) -> None:
    """A call on hold is not watched; when it resumes, the silence of the hold does not count
    against it: the peer gets the full timeout to start sending again."""
    session = RtpSession()
    fired: list[str] = []
    engine.watch(session, lambda: fired.append("first"))
    session.last_received = time.monotonic()  # audio, then the hold
    engine.unwatch(session)
    engine.check_timeouts(time.monotonic() + 3600)
    assert fired == []
    # An hour of hold later (as far as the session can tell), the call resumes.
    session.last_received = time.monotonic() - 3600
    engine.watch(session, lambda: fired.append("resumed"))
    engine.check_timeouts(time.monotonic() + 10)
    assert fired == []
    engine.check_timeouts(time.monotonic() + 31)
    assert fired == ["resumed"]


async def test_watchdog_ignores_closed_sessions(engine: MediaEngine) -> None:
    session = RtpSession()
    fired: list[str] = []
    engine.watch(session, lambda: fired.append("closed"))
    session.close()
    engine.check_timeouts(time.monotonic() + 31)
    assert fired == []


async def test_no_watchdog_when_the_timeout_is_off() -> None:
    engine = MediaEngine("127.0.0.1", 17000, 17999, rtp_timeout=0)
    fired: list[str] = []
    engine.watch(RtpSession(), lambda: fired.append("never"))
    engine.check_timeouts(time.monotonic() + 3600)
    assert fired == []
    await engine.stop()
