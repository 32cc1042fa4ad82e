"""Reading prompts in every common WAV shape, and writing WAV files."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from pomelo.media.wav import MediaFileError, decode_prompt, read_prompt, wav_header, write_wav

PCM, FLOAT, EXTENSIBLE = 1, 3, 0xFFFE
GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def sine(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> npt.NDArray[np.float64]:
    t = np.arange(round(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def encode(signal: npt.NDArray[np.float64], code: int, bits: int) -> bytes:
    """Full-scale floats (-1..1, interleaved) to the raw bytes of one WAV encoding."""
    if code == FLOAT:
        return signal.astype("<f4" if bits == 32 else "<f8").tobytes()
    if bits == 8:
        return np.clip(np.rint(signal * 128 + 128), 0, 255).astype(np.uint8).tobytes()
    top = 2 ** (bits - 1)
    ints = np.clip(np.rint(signal * top), -top, top - 1).astype(np.int64)
    if bits == 24:
        raw = ints.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3]
        return bytes(raw.tobytes())
    return bytes(ints.astype("<i2" if bits == 16 else "<i4").tobytes())


def fmt_chunk(code: int, channels: int, rate: int, bits: int, *, extensible: bool = False) -> bytes:
    block = channels * bits // 8
    head = struct.pack("<HHIIHH", EXTENSIBLE if extensible else code, channels, rate,
                       rate * block, block, bits)  # fmt: skip
    if extensible:
        head += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", code) + GUID_TAIL
    return chunk(b"fmt ", head)


def chunk(kind: bytes, body: bytes, size: int | None = None) -> bytes:
    pad = b"\x00" if len(body) % 2 else b""
    return kind + struct.pack("<I", len(body) if size is None else size) + body + pad


def riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def wav_bytes(
    signal: npt.NDArray[np.float64],
    *,
    rate: int = 8000,
    channels: int = 1,
    code: int = PCM,
    bits: int = 16,
    extensible: bool = False,
) -> bytes:
    return riff(
        fmt_chunk(code, channels, rate, bits, extensible=extensible),
        chunk(b"data", encode(signal, code, bits)),
    )


def dominant_hz(pcm: npt.NDArray[np.int16], rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    return float(np.argmax(spectrum) * rate / len(pcm))


def rms(pcm: npt.NDArray[np.int16]) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))


# ------------------------------------------------------------------------ reading formats


def test_8k_16bit_mono_is_read_exactly(tmp_path: Path) -> None:
    pcm = (np.arange(-4000, 4000, 3) % 30000).astype(np.int16)
    path = tmp_path / "hello.wav"
    write_wav(path, pcm)
    out = read_prompt(path)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, pcm)


@pytest.mark.parametrize(
    ("code", "bits", "extensible"),
    [
        (PCM, 8, False),
        (PCM, 16, False),
        (PCM, 24, False),
        (PCM, 32, False),
        (FLOAT, 32, False),
        (FLOAT, 64, False),
        (PCM, 24, True),
        (FLOAT, 32, True),
    ],
)
def test_every_sample_format_gives_the_same_audio(code: int, bits: int, extensible: bool) -> None:
    signal = sine(440, 8000, 0.5)
    out = decode_prompt(wav_bytes(signal, code=code, bits=bits, extensible=extensible))
    reference = np.rint(signal * 32768).astype(np.int16)
    tolerance = 260 if bits == 8 else 2  # 8-bit keeps only 256 levels
    assert len(out) == len(reference)
    assert np.max(np.abs(out.astype(int) - reference)) <= tolerance


@pytest.mark.parametrize("rate", [11025, 16000, 22050, 44100, 48000])
def test_common_rates_are_resampled_to_8k(rate: int) -> None:
    out = decode_prompt(wav_bytes(sine(1000, rate, 1.0), rate=rate))
    assert abs(len(out) - 8000) <= 1
    assert dominant_hz(out) == pytest.approx(1000, abs=2)
    assert rms(out[500:-500]) == pytest.approx(0.5 * 32768 / np.sqrt(2), rel=0.02)


def test_content_above_4khz_is_filtered_not_aliased() -> None:
    out = decode_prompt(wav_bytes(sine(6000, 48000, 1.0), rate=48000))
    assert rms(out[500:-500]) < 100  # a 6 kHz tone would fold to 2 kHz without filtering


def test_stereo_is_downmixed() -> None:
    left = sine(500, 16000, 0.5)
    both = np.column_stack([left, left]).ravel()
    opposite = np.column_stack([left, -left]).ravel()
    one_side = np.column_stack([left, np.zeros_like(left)]).ravel()
    same = decode_prompt(wav_bytes(both, rate=16000, channels=2))
    cancelled = decode_prompt(wav_bytes(opposite, rate=16000, channels=2))
    half = decode_prompt(wav_bytes(one_side, rate=16000, channels=2))
    assert len(same) == 4000
    assert rms(same) == pytest.approx(rms(decode_prompt(wav_bytes(left, rate=16000))), rel=0.01)
    assert rms(cancelled) < 2
    assert rms(half) == pytest.approx(rms(same) / 2, rel=0.01)


def test_float_overload_and_nan_are_tamed() -> None:
    signal = np.array([2.0, -3.0, np.nan, 0.5])
    out = decode_prompt(wav_bytes(signal, code=FLOAT, bits=32))
    assert out.tolist() == [32767, -32768, 0, 16384]


def test_other_chunks_and_odd_padding_are_skipped() -> None:
    pcm = np.array([1, -2, 3, -4], dtype=np.int16)
    data = riff(
        chunk(b"LIST", b"INFOxyz"),  # odd length: followed by a pad byte
        fmt_chunk(PCM, 1, 8000, 16),
        chunk(b"fact", b"\x04\x00\x00\x00"),
        chunk(b"data", pcm.tobytes()),
        chunk(b"id3 ", b"tail"),
    )
    assert decode_prompt(data).tolist() == [1, -2, 3, -4]


def test_streaming_placeholder_size_reads_to_the_end() -> None:
    """espeak-ng --stdout and ffmpeg pipes write 'unknown' sizes; the audio is still there."""
    pcm = np.array([5, 6, 7, 8, 9], dtype=np.int16)
    data = riff(fmt_chunk(PCM, 1, 8000, 16), chunk(b"data", pcm.tobytes(), size=0x7FFFF000))
    assert decode_prompt(data).tolist() == [5, 6, 7, 8, 9]


def test_empty_data_gives_no_samples() -> None:
    assert len(decode_prompt(riff(fmt_chunk(PCM, 1, 8000, 16), chunk(b"data", b"")))) == 0


# ----------------------------------------------------------------------------- bad files


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(MediaFileError, match=r"welcome\.wav: file not found"):
        read_prompt(tmp_path / "welcome.wav")


def test_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "menu.wav").mkdir()
    with pytest.raises(MediaFileError, match=r"menu\.wav: is a directory"):
        read_prompt(tmp_path / "menu.wav")


def test_mp3_renamed_to_wav_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "music.wav"
    path.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(100))
    with pytest.raises(MediaFileError, match=r"music\.wav: not a WAV file"):
        read_prompt(path)


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(MediaFileError, match=r"empty\.wav"):
        read_prompt(path)


def test_error_is_a_value_error_with_parts() -> None:
    with pytest.raises(ValueError, match=r"x\.wav") as caught:
        decode_prompt(b"nonsense", "x.wav")
    assert isinstance(caught.value, MediaFileError)
    assert caught.value.name == "x.wav"
    assert "RIFF" in caught.value.problem


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (riff(chunk(b"data", b"\x00\x00")), "data chunk comes before the fmt chunk"),
        (riff(chunk(b"data", b"\x00\x00"), fmt_chunk(PCM, 1, 8000, 16)), "before the fmt"),
        (riff(fmt_chunk(PCM, 1, 8000, 16)), "no data chunk"),
        (riff(chunk(b"LIST", b"abcd")), "no fmt chunk"),
        (riff(chunk(b"fmt ", b"\x01\x00")), "fmt chunk is too short"),
        (riff(fmt_chunk(6, 1, 8000, 8), chunk(b"data", b"\x00")), "0x0006 is not PCM"),
        (riff(fmt_chunk(2, 1, 8000, 4), chunk(b"data", b"\x00")), "compressed"),
        (riff(fmt_chunk(PCM, 1, 8000, 12), chunk(b"data", b"\x00\x00")), "12-bit"),
        (riff(fmt_chunk(FLOAT, 1, 8000, 16), chunk(b"data", b"\x00\x00")), "16-bit float"),
        (riff(fmt_chunk(PCM, 6, 8000, 16), chunk(b"data", bytes(12))), "6 channels"),
        (riff(fmt_chunk(PCM, 1, 4000, 16), chunk(b"data", bytes(2))), "4000 Hz is outside"),
        (riff(fmt_chunk(PCM, 1, 8000, 16), chunk(b"data", bytes(10), size=500)), "truncated"),
        (riff(chunk(b"LIST", b"ab", size=90)), "truncated inside"),
    ],
)
def test_malformed_files_say_what_is_wrong(data: bytes, problem: str) -> None:
    with pytest.raises(MediaFileError, match=problem):
        decode_prompt(data, "prompt.wav")


def test_inconsistent_block_alignment_is_refused() -> None:
    body = struct.pack("<HHIIHH", PCM, 1, 8000, 16000, 3, 16)
    data = riff(chunk(b"fmt ", body), chunk(b"data", bytes(6)))
    with pytest.raises(MediaFileError, match="block alignment"):
        decode_prompt(data, "prompt.wav")


def test_unknown_extensible_subformat_is_refused() -> None:
    body = struct.pack("<HHIIHH", EXTENSIBLE, 1, 8000, 16000, 2, 16)
    body += struct.pack("<HHI", 22, 16, 0) + b"\x01\x00" + bytes(14)
    with pytest.raises(MediaFileError, match="sub-format"):
        decode_prompt(riff(chunk(b"fmt ", body), chunk(b"data", bytes(4))), "prompt.wav")


# ------------------------------------------------------------------------------- writing


def test_written_file_is_read_by_stdlib_wave(tmp_path: Path) -> None:
    stereo = np.array([[1, -1], [2, -2], [3, -3]], dtype=np.int16)
    path = tmp_path / "sub" / "dir" / "out.wav"
    write_wav(path, stereo, rate=16000, channels=2)
    with wave.open(str(path), "rb") as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (
            2,
            2,
            16000,
        )
        assert reader.getnframes() == 3
        frames = np.frombuffer(reader.readframes(3), dtype="<i2").reshape(-1, 2)
    np.testing.assert_array_equal(frames, stereo)
    assert [p.name for p in path.parent.iterdir()] == ["out.wav"]  # no temp file left


def test_write_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "p.wav"
    write_wav(path, np.ones(100, dtype=np.int16))
    write_wav(path, np.full(10, 7, dtype=np.int16))
    assert read_prompt(path).tolist() == [7] * 10


def test_write_refuses_wrong_input(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="int16"):
        write_wav(tmp_path / "a.wav", np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError, match="channels"):
        write_wav(tmp_path / "a.wav", np.zeros(5, dtype=np.int16), channels=2)
    assert not (tmp_path / "a.wav").exists()


def test_header_layout() -> None:
    header = wav_header(1000, rate=8000, channels=2)
    assert len(header) == 44
    assert struct.unpack_from("<I", header, 4)[0] == 1036
    assert struct.unpack_from("<I", header, 40)[0] == 1000
    assert struct.unpack_from("<I", header, 28)[0] == 32000  # byte rate
