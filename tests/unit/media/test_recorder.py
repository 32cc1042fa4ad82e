"""Stereo call recording: where audio lands on the timeline, and the WAV that comes out."""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import threading
import tracemalloc
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from pomelo.media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from pomelo.media.recorder import (
    CLIENT,
    EMPLOYEE,
    RecordingFile,
    RecordingResult,
    RecordingWriter,
    StereoRecorder,
)

RATE = 8000
START = 5000.0  # event-loop clock at the start of the recording
FRAME = 160
Pcm = npt.NDArray[np.int16]


@dataclass
class Packet:
    arrival: float  # seconds after START
    channel: int
    pcm: Pcm
    timestamp: int
    ssrc: int


@pytest.fixture
def writer() -> Iterator[RecordingWriter]:
    w = RecordingWriter()
    yield w
    w.stop(timeout=10)


def voice(seconds: float, seed: int = 1) -> Pcm:
    """Distinct, noise-like samples, so any misplaced packet shows up in a comparison."""
    rng = np.random.default_rng(seed)
    return rng.integers(-8000, 8000, round(seconds * RATE)).astype(np.int16)


def stream(
    samples: Pcm,
    *,
    at: float,
    channel: int = CLIENT,
    ssrc: int = 0x1234,
    ts0: int = 90_000,
    jitter: list[float] | None = None,
) -> list[Packet]:
    """Packets of ``samples`` due every 20 ms from ``at`` (+ per-packet network delay)."""
    packets = []
    for k in range(len(samples) // FRAME):
        delay = jitter[k] if jitter else 0.0
        packets.append(
            Packet(
                at + k * 0.02 + delay,
                channel,
                samples[k * FRAME : (k + 1) * FRAME],
                (ts0 + k * FRAME) % 2**32,
                ssrc,
            )
        )
    return packets


def play(rec: StereoRecorder, packets: list[Packet], flush_every: float | None = 0.2) -> None:
    """Deliver packets in arrival order, flushing on a timer as the media task would."""
    next_flush = flush_every
    for p in sorted(packets, key=lambda p: p.arrival):
        while next_flush is not None and flush_every is not None and next_flush <= p.arrival:
            rec.flush(START + next_flush)
            next_flush += flush_every
        rec.add(p.channel, p.pcm, p.timestamp, p.ssrc, START + p.arrival)


def record(
    path: Path, writer: RecordingWriter, packets: list[Packet], flush_every: float | None = 0.2
) -> tuple[RecordingResult, Pcm]:
    rec = StereoRecorder(path, writer, start=START)
    play(rec, packets, flush_every)
    result = rec.close().result(timeout=10)
    return result, read_stereo(path)


def read_stereo(path: Path) -> Pcm:
    with wave.open(str(path), "rb") as reader:
        assert reader.getnchannels() == 2
        assert reader.getsampwidth() == 2
        assert reader.getframerate() == RATE
        frames = reader.readframes(reader.getnframes())
    return np.frombuffer(frames, dtype="<i2").reshape(-1, 2)


def at(seconds: float) -> int:
    return round(seconds * RATE)


def assert_placed(audio: Pcm, channel: int, samples: Pcm, seconds: float) -> None:
    start = at(seconds)
    np.testing.assert_array_equal(audio[start : start + len(samples), channel], samples)


# ------------------------------------------------------------------------ stereo placement


def test_client_left_employee_right(tmp_path: Path, writer: RecordingWriter) -> None:
    client, employee = voice(1.0, 1), voice(1.0, 2)
    packets = stream(client, at=0.5, channel=CLIENT, ssrc=1) + stream(
        employee, at=0.7, channel=EMPLOYEE, ssrc=2
    )
    result, audio = record(tmp_path / "call.wav", writer, packets)
    assert_placed(audio, 0, client, 0.5)
    assert_placed(audio, 1, employee, 0.7)
    assert not audio[: at(0.5), 0].any() and not audio[: at(0.7), 1].any()  # silence before
    assert len(audio) == at(1.7)  # ends with the last audio
    assert result.error is None
    assert result.samples == len(audio)
    assert result.duration_s == pytest.approx(1.7)


def test_file_header_sizes_are_right_after_close(tmp_path: Path, writer: RecordingWriter) -> None:
    path = tmp_path / "2024" / "05" / "call.wav"  # parent folders are created
    result, audio = record(path, writer, stream(voice(2.0), at=0.0))
    raw = path.read_bytes()
    assert raw[:4] == b"RIFF" and raw[8:16] == b"WAVEfmt "
    assert struct.unpack_from("<I", raw, 4)[0] == len(raw) - 8
    assert struct.unpack_from("<I", raw, 40)[0] == len(raw) - 44
    assert result.size_bytes == len(raw) == 44 + 4 * result.samples
    assert result.path == path
    assert result.samples == len(audio) == at(2.0)


async def test_close_future_can_be_awaited_on_the_loop(
    tmp_path: Path, writer: RecordingWriter
) -> None:
    rec = StereoRecorder(tmp_path / "a.wav", writer, start=START)
    play(rec, stream(voice(0.4), at=0.0))
    result = await asyncio.wrap_future(rec.close())
    assert result.samples == at(0.4)


def test_g711_payloads_are_decoded(tmp_path: Path, writer: RecordingWriter) -> None:
    client, employee = voice(0.2, 3), voice(0.2, 4)
    rec = StereoRecorder(tmp_path / "g711.wav", writer, start=START)
    for k in range(10):
        chunk = slice(k * FRAME, (k + 1) * FRAME)
        ts, arrival = k * FRAME, START + k * 0.02
        rec.add_g711(CLIENT, ulaw_encode(client[chunk]), "PCMU", ts, 7, arrival)
        rec.add_g711(EMPLOYEE, alaw_encode(employee[chunk]), "PCMA", ts, 8, arrival)
    rec.close().result(timeout=10)
    audio = read_stereo(tmp_path / "g711.wav")
    np.testing.assert_array_equal(audio[:, 0], ulaw_decode(ulaw_encode(client)))
    np.testing.assert_array_equal(audio[:, 1], alaw_decode(alaw_encode(employee)))


def test_alaw_gaps_are_exact_silence(tmp_path: Path, writer: RecordingWriter) -> None:
    """A-law has no code for zero; a lost packet must still record as digital silence."""
    rec = StereoRecorder(tmp_path / "gap.wav", writer, start=START)
    frame = alaw_encode(voice(0.02))
    for k in (0, 2):
        rec.add_g711(CLIENT, frame, "PCMA", k * FRAME, 7, START + k * 0.02)
    rec.close().result(timeout=10)
    audio = read_stereo(tmp_path / "gap.wav")
    assert not audio[FRAME : 2 * FRAME].any()
    np.testing.assert_array_equal(audio[2 * FRAME :, 0], alaw_decode(frame))


def test_codec_change_mid_stream_keeps_both_parts(tmp_path: Path, writer: RecordingWriter) -> None:
    first, second, third = voice(0.1, 1), voice(0.1, 2), voice(0.1, 3)
    rec = StereoRecorder(tmp_path / "switch.wav", writer, start=START)
    for k in range(5):
        part = slice(k * FRAME, (k + 1) * FRAME)
        rec.add_g711(CLIENT, ulaw_encode(first[part]), "PCMU", k * FRAME, 7, START + k * 0.02)
    for k in range(5, 10):  # re-INVITE to A-law, same SSRC
        part = slice((k - 5) * FRAME, (k - 4) * FRAME)
        t = START + k * 0.02
        rec.add_g711(CLIENT, alaw_encode(second[part]), "PCMA", k * FRAME, 7, t)
    for k in range(10, 15):  # and to linear audio (e.g. a WebRTC leg decoded upstream)
        rec.add(CLIENT, third[(k - 10) * FRAME : (k - 9) * FRAME], k * FRAME, 7, START + k * 0.02)
    rec.close().result(timeout=10)
    audio = read_stereo(tmp_path / "switch.wav")
    np.testing.assert_array_equal(audio[: at(0.1), 0], ulaw_decode(ulaw_encode(first)))
    np.testing.assert_array_equal(audio[at(0.1) : at(0.2), 0], alaw_decode(alaw_encode(second)))
    np.testing.assert_array_equal(audio[at(0.2) :, 0], third)


def test_bad_arguments_are_refused(tmp_path: Path, writer: RecordingWriter) -> None:
    rec = StereoRecorder(tmp_path / "x.wav", writer, start=START)
    with pytest.raises(ValueError, match="PCMU or PCMA"):
        rec.add_g711(0, b"\x00" * 160, "G729", 0, 1, START)
    with pytest.raises(ValueError, match="channel"):
        rec.add(2, voice(0.02), 0, 1, START)


# ----------------------------------------------------------------------------- alignment


def test_network_jitter_does_not_smear_audio(tmp_path: Path, writer: RecordingWriter) -> None:
    rng = np.random.default_rng(7)
    samples = voice(3.0)
    jitter = [0.0, *rng.uniform(0, 0.08, len(samples) // FRAME - 1).tolist()]
    _, audio = record(tmp_path / "j.wav", writer, stream(samples, at=0.3, jitter=jitter))
    assert_placed(audio, 0, samples, 0.3)


def test_late_first_packet_shifts_the_stream_without_gaps(
    tmp_path: Path, writer: RecordingWriter
) -> None:
    samples = voice(1.0)
    # The first packet is held up 150 ms; those queued behind it follow in a burst.
    jitter = [max(0.0, 0.15 + k * 0.001 - k * 0.02) for k in range(len(samples) // FRAME)]
    _, audio = record(tmp_path / "late.wav", writer, stream(samples, at=0.3, jitter=jitter))
    assert_placed(audio, 0, samples, 0.45)  # contiguous, anchored where the first arrived


def test_out_of_order_packets_fall_into_place(tmp_path: Path, writer: RecordingWriter) -> None:
    samples = voice(2.0)
    count = len(samples) // FRAME
    jitter = [0.03 if k % 2 == 0 else 0.0 for k in range(count)]  # every pair arrives swapped
    jitter[5] = 0.25  # and one straggler a quarter of a second late
    _, audio = record(tmp_path / "ooo.wav", writer, stream(samples, at=0.1, jitter=jitter))
    assert_placed(audio, 0, samples, 0.1)


def test_duplicates_overwrite_instead_of_doubling(tmp_path: Path, writer: RecordingWriter) -> None:
    samples = voice(1.0)
    packets = stream(samples, at=0.2)
    dupes = [Packet(p.arrival + 0.01, p.channel, p.pcm, p.timestamp, p.ssrc) for p in packets]
    _, audio = record(tmp_path / "dup.wav", writer, packets + dupes)
    assert_placed(audio, 0, samples, 0.2)


def test_repeated_timestamp_keeps_the_last_copy(tmp_path: Path, writer: RecordingWriter) -> None:
    packets = stream(voice(0.4), at=0.0)
    replacement = np.full(FRAME, 1234, dtype=np.int16)
    packets.append(Packet(0.1, CLIENT, replacement, packets[3].timestamp, packets[3].ssrc))
    _, audio = record(tmp_path / "rep.wav", writer, packets)
    assert_placed(audio, 0, replacement, 0.06)


def test_lost_packets_leave_silence_in_their_place(tmp_path: Path, writer: RecordingWriter) -> None:
    samples = voice(1.0)
    packets = stream(samples, at=0.0)
    del packets[10:15]
    _, audio = record(tmp_path / "gap.wav", writer, packets)
    assert_placed(audio, 0, samples[: 10 * FRAME], 0.0)
    assert not audio[10 * FRAME : 15 * FRAME, 0].any()
    assert_placed(audio, 0, samples[15 * FRAME :], 0.3)


def test_silence_suppression_keeps_rtp_spacing(tmp_path: Path, writer: RecordingWriter) -> None:
    first, second = voice(0.5, 1), voice(0.5, 2)
    packets = stream(first, at=0.0, ts0=0) + stream(second, at=0.9, ts0=at(0.9))
    _, audio = record(tmp_path / "vad.wav", writer, packets)
    assert_placed(audio, 0, first, 0.0)
    assert_placed(audio, 0, second, 0.9)


def test_timestamp_wraparound_is_seamless(tmp_path: Path, writer: RecordingWriter) -> None:
    samples = voice(1.0)
    _, audio = record(tmp_path / "wrap.wav", writer, stream(samples, at=0.1, ts0=2**32 - 800))
    assert_placed(audio, 0, samples, 0.1)


def test_new_ssrc_is_anchored_at_its_arrival(tmp_path: Path, writer: RecordingWriter) -> None:
    before, after = voice(1.0, 1), voice(1.0, 2)
    packets = stream(before, at=0.2, ssrc=1, ts0=1000) + stream(
        after,
        at=1.5,
        ssrc=2,
        ts0=1000,  # a restarted phone: new SSRC, timestamps reused
    )
    _, audio = record(tmp_path / "ssrc.wav", writer, packets)
    assert_placed(audio, 0, before, 0.2)
    assert not audio[at(1.2) : at(1.5), 0].any()
    assert_placed(audio, 0, after, 1.5)


@pytest.mark.parametrize("jump", [5_000_000, -3_000_000, 2**31 + 17])
def test_timestamp_jump_on_the_same_ssrc_reanchors(
    tmp_path: Path, writer: RecordingWriter, jump: int
) -> None:
    before, after = voice(1.0, 1), voice(1.0, 2)
    packets = stream(before, at=0.0, ts0=10_000) + stream(
        after, at=1.4, ts0=(10_000 + at(1.0) + jump) % 2**32
    )
    rec = StereoRecorder(tmp_path / "jump.wav", writer, start=START)
    play(rec, packets)
    rec.close().result(timeout=10)
    audio = read_stereo(tmp_path / "jump.wav")
    assert_placed(audio, 0, before, 0.0)
    assert_placed(audio, 0, after, 1.4)
    assert rec.stats.reanchors == 1


def test_resume_after_hold_with_a_frozen_clock(tmp_path: Path, writer: RecordingWriter) -> None:
    """Timestamps continue as if no time passed; the arrival clock says 3 s did."""
    before, after = voice(1.0, 1), voice(1.0, 2)
    packets = stream(before, at=0.0, ts0=0) + stream(after, at=4.0, ts0=at(1.0))
    _, audio = record(tmp_path / "hold.wav", writer, packets)
    assert_placed(audio, 0, before, 0.0)
    assert not audio[at(1.0) : at(4.0), 0].any()
    assert_placed(audio, 0, after, 4.0)


def test_packet_too_late_for_the_file_is_dropped(tmp_path: Path, writer: RecordingWriter) -> None:
    samples = voice(3.0)
    packets = stream(samples, at=0.0)
    straggler = packets.pop(20)  # due at 0.4 s
    packets.append(Packet(2.0, straggler.channel, straggler.pcm, straggler.timestamp, 0x1234))
    rec = StereoRecorder(tmp_path / "drop.wav", writer, start=START)
    play(rec, packets)
    rec.close().result(timeout=10)
    audio = read_stereo(tmp_path / "drop.wav")
    assert not audio[at(0.4) : at(0.42), 0].any()  # its place was already written as silence
    assert rec.stats.late_samples == FRAME
    assert rec.stats.reanchors == 0  # a straggler does not move the stream
    assert_placed(audio, 0, samples[at(0.42) :], 0.42)  # and nothing else moved


def test_two_streams_on_one_channel_are_mixed(tmp_path: Path, writer: RecordingWriter) -> None:
    prompt = np.full(at(1.0), 1000, dtype=np.int16)
    whisper = np.full(at(1.0), 2000, dtype=np.int16)
    packets = stream(prompt, at=0.0, channel=EMPLOYEE, ssrc=10) + stream(
        whisper, at=0.5, channel=EMPLOYEE, ssrc=11
    )
    _, audio = record(tmp_path / "mix.wav", writer, packets)
    right = audio[:, 1]
    assert (right[: at(0.5)] == 1000).all()
    assert (right[at(0.5) : at(1.0)] == 3000).all()
    assert (right[at(1.0) : at(1.5)] == 2000).all()
    assert not audio[:, 0].any()


def test_mixing_saturates_instead_of_wrapping(tmp_path: Path, writer: RecordingWriter) -> None:
    loud = np.tile(np.array([30000, -30000], dtype=np.int16), at(0.2) // 2)
    packets = stream(loud, at=0.0, ssrc=1) + stream(loud, at=0.0, ssrc=2)
    _, audio = record(tmp_path / "sat.wav", writer, packets)
    assert audio[: at(0.2), 0].tolist() == [32767, -32768] * (at(0.2) // 2)


# --------------------------------------------------------------- flushing and bounded memory


class CountingWriter(RecordingWriter):
    """Keeps only the byte count, so memory measurements see the recorder alone."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def write(self, target: RecordingFile, data: bytes) -> None:
        self.bytes += len(data)


def test_flush_hands_over_everything_older_than_half_a_second(tmp_path: Path) -> None:
    counting = CountingWriter()
    rec = StereoRecorder(tmp_path / "f.wav", counting, start=START)
    play(rec, stream(voice(1.5), at=0.0), flush_every=None)
    assert counting.bytes == 0
    rec.flush(START + 1.2)
    assert counting.bytes == 4 * at(0.7)
    assert rec.written_samples == at(0.7)
    rec.flush(START + 1.0)  # time never runs backwards for the file
    assert counting.bytes == 4 * at(0.7)
    rec.close()
    assert counting.bytes == 4 * at(1.5)
    counting.stop()


def test_owner_that_never_flushes_loses_nothing(tmp_path: Path, writer: RecordingWriter) -> None:
    samples = voice(10.0)
    _, audio = record(tmp_path / "nf.wav", writer, stream(samples, at=0.0), flush_every=None)
    assert_placed(audio, 0, samples, 0.0)


def test_long_silence_between_flushes_is_written_as_silence(
    tmp_path: Path, writer: RecordingWriter
) -> None:
    rec = StereoRecorder(tmp_path / "quiet.wav", writer, start=START)
    play(rec, stream(voice(0.2), at=0.0))
    rec.flush(START + 60.0)  # a minute on hold with no packets at all
    late = voice(0.2, 9)
    play(rec, stream(late, at=60.0))
    rec.close().result(timeout=10)
    audio = read_stereo(tmp_path / "quiet.wav")
    assert not audio[at(0.2) : at(60.0)].any()
    assert_placed(audio, 0, late, 60.0)


def test_memory_stays_bounded_on_a_long_call(tmp_path: Path) -> None:
    counting = CountingWriter()
    rec = StereoRecorder(tmp_path / "long.wav", counting, start=START)
    minute = voice(60.0)
    packets = stream(minute, at=0.0, ssrc=1) + stream(minute, at=0.0, channel=EMPLOYEE, ssrc=2)
    tracemalloc.start()
    try:
        play(rec, packets, flush_every=0.25)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rec.close()
    counting.stop()
    assert counting.bytes == 4 * at(60.0)
    assert peak < 300_000  # the whole minute would be 1.9 MB; the open window is ~60 KB


# --------------------------------------------------------------------------------- writer


def test_empty_recording_is_a_valid_empty_wav(tmp_path: Path, writer: RecordingWriter) -> None:
    rec = StereoRecorder(tmp_path / "empty.wav", writer, start=START)
    result = rec.close().result(timeout=10)
    assert result == RecordingResult(tmp_path / "empty.wav", 0.0, 44, 0, None)
    assert len(read_stereo(tmp_path / "empty.wav")) == 0


def test_close_is_idempotent_and_later_packets_are_ignored(
    tmp_path: Path, writer: RecordingWriter
) -> None:
    rec = StereoRecorder(tmp_path / "c.wav", writer, start=START)
    play(rec, stream(voice(0.2), at=0.0))
    first = rec.close()
    rec.add(CLIENT, voice(0.02), 99_999, 1, START + 0.3)
    rec.flush(START + 10)
    assert rec.close() is first
    assert first.result(timeout=10).samples == at(0.2)


def test_one_thread_serves_every_recording(tmp_path: Path) -> None:
    writer = RecordingWriter(name="test-recording-writer")
    recorders = [StereoRecorder(tmp_path / f"call{i}.wav", writer, start=START) for i in range(50)]
    for i, rec in enumerate(recorders):
        play(rec, stream(voice(0.6, i), at=0.0))
    results = [rec.close().result(timeout=10) for rec in recorders]
    threads = [t for t in threading.enumerate() if t.name == "test-recording-writer"]
    writer.stop(timeout=10)
    assert len(threads) == 1
    assert all(r.error is None and r.samples == at(0.6) for r in results)
    assert not any(t.name == "test-recording-writer" for t in threading.enumerate())


def test_stop_finalises_recordings_that_were_never_closed(tmp_path: Path) -> None:
    writer = RecordingWriter()
    rec = StereoRecorder(tmp_path / "open.wav", writer, start=START)
    play(rec, stream(voice(1.6), at=0.0), flush_every=None)
    rec.flush(START + 1.5)
    writer.stop(timeout=10)
    assert len(read_stereo(tmp_path / "open.wav")) == at(1.0)  # valid header, final part only
    result = rec.close().result(timeout=10)  # the rest could not be written any more
    assert result.samples == at(1.0)
    never = StereoRecorder(tmp_path / "never.wav", writer, start=START)
    assert "stopped" in (never.close().result(timeout=10).error or "")
    assert not (tmp_path / "never.wav").exists()


def test_unwritable_folder_is_reported_not_raised(
    tmp_path: Path, writer: RecordingWriter, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "recordings").write_text("a file where a folder should be")
    path = tmp_path / "recordings" / "call.wav"
    with caplog.at_level(logging.ERROR, logger="pomelo.media.recorder"):
        bad = StereoRecorder(path, writer, start=START)
        good = StereoRecorder(tmp_path / "ok.wav", writer, start=START)
        play(bad, stream(voice(1.0), at=0.0))
        play(good, stream(voice(1.0), at=0.0))
        result = bad.close().result(timeout=10)
        ok = good.close().result(timeout=10)
    assert result.error is not None and str(tmp_path / "recordings") in result.error
    assert result.samples == 0 and result.size_bytes == 0
    assert ok.error is None and ok.samples == at(1.0)  # other calls are unaffected
    assert any(str(path) in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(not os.access("/dev/full", os.W_OK), reason="needs /dev/full")
def test_disk_full_is_reported_in_the_result(writer: RecordingWriter) -> None:
    rec = StereoRecorder(Path("/dev/full"), writer, start=START)
    play(rec, stream(voice(1.0), at=0.0))
    result = rec.close().result(timeout=10)
    assert result.error is not None and "No space left" in result.error
