"""RFC 4733 telephone-events and in-band DTMF detection/generation."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pomelo.media.dtmf import (
    DIGITS,
    DtmfDetector,
    DtmfError,
    DtmfReceiver,
    TelephoneEvent,
    digit_to_event,
    dtmf_event_packets,
    dtmf_event_rtp,
    dtmf_tone,
    dtmf_tones,
    event_to_digit,
    goertzel_power,
)
from pomelo.media.rtp import parse_rtp

# ----------------------------------------------------------------------------- RFC 4733


def test_event_codes() -> None:
    assert [digit_to_event(d) for d in DIGITS] == list(range(16))
    assert digit_to_event("a") == 12
    assert event_to_digit(11) == "#"
    assert event_to_digit(16) is None
    with pytest.raises(DtmfError):
        digit_to_event("E")
    with pytest.raises(DtmfError):
        digit_to_event("12")


def test_payload_wire_format() -> None:
    event = TelephoneEvent(event=5, end=True, volume=10, duration=800)
    assert event.to_bytes() == bytes([5, 0x80 | 10, 0x03, 0x20])
    assert TelephoneEvent.parse(event.to_bytes()) == event


def test_payload_reserved_bit_is_ignored() -> None:
    assert TelephoneEvent.parse(bytes([1, 0x40 | 7, 0, 160])) == TelephoneEvent(1, False, 7, 160)


def test_payload_errors() -> None:
    with pytest.raises(DtmfError, match="short"):
        TelephoneEvent.parse(b"\x01\x02\x03")
    with pytest.raises(DtmfError, match="volume"):
        TelephoneEvent(1, volume=64).to_bytes()
    with pytest.raises(DtmfError, match="duration"):
        TelephoneEvent(1, duration=70000).to_bytes()


@settings(max_examples=200)
@given(st.binary(max_size=12))
def test_random_payloads_only_raise_dtmf_error(data: bytes) -> None:
    with contextlib.suppress(DtmfError):
        TelephoneEvent.parse(data)


def test_sender_packet_sequence() -> None:
    packets = dtmf_event_packets("7", duration_ms=200, volume=12)
    durations = [p.event.duration for p in packets]
    assert durations == [400, 800, 1200, 1600, 1600, 1600]
    assert [p.marker for p in packets] == [True, False, False, False, False, False]
    assert [p.event.end for p in packets] == [False, False, False, True, True, True]
    assert [p.offset_ms for p in packets] == [0, 50, 100, 150, 150, 150]
    assert all(p.event.event == 7 and p.event.volume == 12 for p in packets)


def test_sender_short_press_is_only_end_packets() -> None:
    packets = dtmf_event_packets("1", duration_ms=40)
    assert [(p.marker, p.event.end, p.event.duration) for p in packets] == [
        (True, True, 320),
        (False, True, 320),
        (False, True, 320),
    ]


def test_sender_rtp_serialisation() -> None:
    raw = dtmf_event_rtp(
        dtmf_event_packets("#", duration_ms=100),
        payload_type=101,
        first_seq=65535,
        timestamp=12345,
        ssrc=9,
    )
    parsed = [parse_rtp(r) for r in raw]
    assert [p.sequence for p in parsed] == [65535, 0, 1, 2]
    assert {p.timestamp for p in parsed} == {12345}
    assert [p.marker for p in parsed] == [True, False, False, False]
    assert all(p.payload_type == 101 for p in parsed)


def press(digit: str, timestamp: int, duration_ms: int = 200) -> list[tuple[int, bytes, bool]]:
    return [
        (timestamp, p.payload, p.marker) for p in dtmf_event_packets(digit, duration_ms=duration_ms)
    ]


def run_receiver(stream: list[tuple[int, bytes, bool]]) -> list[str]:
    receiver = DtmfReceiver()
    digits: list[str] = []
    for ts, payload, marker in stream:
        digits.extend(d.digit for d in receiver.feed(ts, payload, marker))
    digits.extend(d.digit for d in receiver.flush())
    return digits


def test_receiver_reports_each_press_once_despite_triple_end() -> None:
    stream = press("1", 1000) + press("2", 5000) + press("2", 9000)
    receiver = DtmfReceiver()
    found = [d for ts, pl, m in stream for d in receiver.feed(ts, pl, m)]
    assert [d.digit for d in found] == ["1", "2", "2"]
    assert all(d.ended for d in found)
    assert [d.duration for d in found] == [1600, 1600, 1600]
    assert [d.timestamp for d in found] == [1000, 5000, 9000]


def test_receiver_survives_lost_start_packet() -> None:
    stream = press("5", 1000)[1:] + press("6", 3000)[2:]
    assert run_receiver(stream) == ["5", "6"]


def test_receiver_survives_lost_end_packets() -> None:
    stream = press("3", 1000)[:-3] + press("4", 4000)
    receiver = DtmfReceiver()
    found = [d for ts, pl, m in stream for d in receiver.feed(ts, pl, m)]
    assert [(d.digit, d.ended) for d in found] == [("3", False), ("4", True)]


def test_receiver_flush_reports_unfinished_press() -> None:
    receiver = DtmfReceiver()
    for ts, pl, m in press("9", 100)[:2]:
        assert receiver.feed(ts, pl, m) == []
    (digit,) = receiver.flush()
    assert digit.digit == "9"
    assert not digit.ended
    assert receiver.flush() == []


def test_receiver_handles_reordering_within_and_across_events() -> None:
    a = press("1", 1000)
    b = press("2", 3000)
    # Within an event: end packet before an update; across: a late end of "1" after "2" began.
    stream = [a[0], a[3], a[1], a[2], b[0], a[4], b[1], b[2], a[5], b[3], b[4], b[5]]
    assert run_receiver(stream) == ["1", "2"]


def test_receiver_ignores_stale_event_after_newer() -> None:
    stream = press("1", 5000)[:2] + press("2", 1000) + press("1", 5000)[2:]
    assert run_receiver(stream) == ["1"]


def test_receiver_timestamp_wrap() -> None:
    stream = press("1", 0xFFFFFF00) + press("2", 0x100)
    assert run_receiver(stream) == ["1", "2"]


def test_receiver_random_loss_and_shuffle_never_duplicates() -> None:
    rng = random.Random(7)
    for _ in range(200):
        digits = "".join(rng.choice(DIGITS) for _ in range(5))
        stream = [pkt for i, d in enumerate(digits) for pkt in press(d, 1000 + 4000 * i)]
        stream = [p for p in stream if rng.random() > 0.2]
        # Local reordering only (adjacent swaps), as a network does.
        for i in range(len(stream) - 1):
            if rng.random() < 0.2:
                stream[i], stream[i + 1] = stream[i + 1], stream[i]
        got = run_receiver(stream)
        # Every press that kept at least one packet is reported exactly once, in order.
        survived = [d for i, d in enumerate(digits) if any(p[0] == 1000 + 4000 * i for p in stream)]
        assert got == survived


def test_receiver_ignores_non_dtmf_events() -> None:
    flash = TelephoneEvent(16, True, 10, 800).to_bytes()
    assert run_receiver([(100, flash, True)]) == []


# ------------------------------------------------------------------------------ in-band


def detect(signal: npt.NDArray[np.int16], frame: int = 160) -> list[str]:
    detector = DtmfDetector()
    found: list[str] = []
    for start in range(0, len(signal), frame):
        found.extend(detector.feed(signal[start : start + frame]))
    return found


def test_goertzel_matches_dft_magnitude() -> None:
    x = np.random.default_rng(0).normal(size=205)
    n = np.arange(205)
    dft = np.sum(x * np.exp(-2j * np.pi * 770 * n / 8000))
    assert goertzel_power(x, 770) == pytest.approx(abs(dft) ** 2, rel=1e-9)


def test_block_bins_equal_goertzel() -> None:
    detector = DtmfDetector()
    block = dtmf_tone("8", 20)[:102].astype(np.float64)
    spectra = block @ detector._basis
    for i, freq in enumerate((697, 770, 852, 941, 1209, 1336, 1477, 1633)):
        power = spectra[i] ** 2 + spectra[i + 8] ** 2
        assert power == pytest.approx(goertzel_power(block, freq), rel=1e-9, abs=1e-3)


@pytest.mark.parametrize("digit", list(DIGITS))
def test_every_digit_detected_exactly_once(digit: str) -> None:
    assert detect(dtmf_tones(digit, tone_ms=100, gap_ms=60)) == [digit]


def test_sequence_detected_in_order_with_various_frame_sizes() -> None:
    signal = dtmf_tones("0123456789*#ABCD", tone_ms=60, gap_ms=60)
    for frame in (1, 37, 80, 160, 205, 320, 1000, len(signal)):
        assert detect(signal, frame) == list("0123456789*#ABCD"), frame


def test_repeated_digit_with_short_gap_is_two_presses() -> None:
    signal = dtmf_tones("55", tone_ms=50, gap_ms=45)
    assert detect(signal) == ["5", "5"]


def test_long_press_is_reported_once() -> None:
    assert detect(dtmf_tone("0", 3000)) == ["0"]


def test_short_blip_is_rejected() -> None:
    assert detect(dtmf_tones("1", tone_ms=20, gap_ms=100)) == []
    assert detect(dtmf_tones("1", tone_ms=40, gap_ms=100)) == ["1"]


@pytest.mark.parametrize("digit", list(DIGITS))
def test_detected_in_white_noise_at_20_db_snr(digit: str) -> None:
    rng = np.random.default_rng(digit_to_event(digit))
    tone = dtmf_tones(digit, tone_ms=80, gap_ms=80).astype(np.float64)
    signal_power = np.mean(dtmf_tone(digit, 80).astype(np.float64) ** 2)
    noise = rng.normal(0.0, np.sqrt(signal_power / 100), size=len(tone))
    assert detect(np.clip(tone + noise, -32768, 32767).astype(np.int16)) == [digit]


def test_twist_within_limits_is_accepted_and_beyond_is_rejected() -> None:
    assert detect(dtmf_tone("9", 100, twist_db=-6)) == ["9"]
    assert detect(dtmf_tone("9", 100, twist_db=3)) == ["9"]
    assert detect(dtmf_tone("9", 100, twist_db=-12)) == []
    assert detect(dtmf_tone("9", 100, twist_db=8)) == []


def test_quiet_tones_below_floor_are_ignored() -> None:
    assert detect(dtmf_tone("2", 100, level_dbm0=-40)) == []
    assert detect(dtmf_tone("2", 100, level_dbm0=-25)) == ["2"]


def sine(freq: float, ms: int, amplitude: float = 8000) -> npt.NDArray[np.int16]:
    n = np.arange(8 * ms)
    return (amplitude * np.sin(2 * np.pi * freq * n / 8000)).astype(np.int16)


def test_silence_triggers_nothing() -> None:
    assert detect(np.zeros(80000, dtype=np.int16)) == []


@pytest.mark.parametrize("freq", [1000.0, 697.0, 1209.0, 941.0, 1633.0])
def test_single_tones_trigger_nothing(freq: float) -> None:
    assert detect(sine(freq, 2000)) == []


def test_two_low_group_tones_trigger_nothing() -> None:
    assert detect(sine(697, 1000, 6000) + sine(852, 1000, 6000)) == []


def test_white_noise_triggers_nothing() -> None:
    rng = np.random.default_rng(3)
    for sigma in (100, 2000, 10000):
        noise = np.clip(rng.normal(0, sigma, 8000 * 10), -32768, 32767).astype(np.int16)
        assert detect(noise) == []


def test_speech_like_harmonic_signal_triggers_nothing() -> None:
    """Voiced speech is a harmonic series with a wandering pitch; it may put energy near a
    row and a column frequency at once, but never concentrates it in just those two."""
    rng = np.random.default_rng(11)
    out = []
    phase = 0.0
    for _ in range(300):  # 300 x 20 ms with a pitch between 90 and 250 Hz
        f0 = rng.uniform(90, 250)
        n = np.arange(160)
        frame = np.zeros(160)
        for h in range(1, int(3800 // f0)):
            weight = np.exp(-(((h * f0) - 700) ** 2) / 2e5) + 0.5 * np.exp(
                -(((h * f0) - 1300) ** 2) / 2e5
            )
            frame += 6000 * weight * np.sin(phase * h + 2 * np.pi * h * f0 * n / 8000)
        phase += 2 * np.pi * f0 * 160 / 8000
        out.append(frame)
    speech = np.clip(np.concatenate(out), -32768, 32767).astype(np.int16)
    assert detect(speech) == []


def test_detector_reset_clears_state() -> None:
    detector = DtmfDetector()
    tone = dtmf_tone("4", 100)
    assert detector.feed(tone) == ["4"]
    detector.reset()
    assert detector.feed(tone) == ["4"]


def test_tone_generator_levels() -> None:
    tone = dtmf_tone("1", 1000, level_dbm0=-10).astype(np.float64)
    assert len(tone) == 8000
    spectrum = np.abs(np.fft.rfft(tone)) / len(tone) * 2
    assert spectrum[697] == pytest.approx(spectrum[1209], rel=0.01)
    assert np.argsort(spectrum)[-2:].tolist() in ([697, 1209], [1209, 697])
    assert dtmf_tones("").size == 0
