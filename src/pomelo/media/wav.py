"""WAV files in and out of the media plane.

Prompts come from administrators and from espeak-ng in every shape a WAV can take: 8/16/24/32-bit
integer, 32/64-bit float, ``WAVE_FORMAT_EXTENSIBLE`` wrappers, any rate, mono or stereo. The
stdlib ``wave`` module rejects float and extensible files, so the RIFF chunks are walked here:
strictly (a malformed file raises :class:`MediaFileError` naming the file and the defect, rather
than playing noise to a caller), but accepting the one common irregularity, a streaming writer's
placeholder data size (espeak-ng ``--stdout``, ffmpeg to a pipe) on the last chunk.

Everything read is converted once to the media plane's format: 8 kHz mono int16.
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from pomelo.media.resample import resample

__all__ = [
    "MEDIA_RATE",
    "WAV_HEADER_SIZE",
    "MediaFileError",
    "decode_prompt",
    "read_prompt",
    "wav_header",
    "write_wav",
]

MEDIA_RATE: Final = 8000
WAV_HEADER_SIZE: Final = 44
MAX_FILE_BYTES: Final = 256 * 1024 * 1024  # ~25 min of 48 kHz stereo float: beyond any prompt
MIN_RATE: Final = 8000
MAX_RATE: Final = 192_000

_PCM: Final = 1
_FLOAT: Final = 3
_EXTENSIBLE: Final = 0xFFFE
# KSDATAFORMAT_SUBTYPE_* GUIDs share this tail; the first two bytes carry the format code.
_GUID_TAIL: Final = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
_STREAMING_SIZE: Final = 0x7FFF0000  # sizes at or above this are "unknown, read to the end"
_U32_MAX: Final = 0xFFFFFFFF


class MediaFileError(ValueError):
    """A media file cannot be used; the message names the file and the problem."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


@dataclass(frozen=True, slots=True)
class _Format:
    code: int
    channels: int
    rate: int
    bits: int
    block_align: int


def read_prompt(path: Path) -> npt.NDArray[np.int16]:
    """Load a WAV file as 8 kHz mono int16. Blocking: call it off the event loop."""
    name = path.name or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise MediaFileError(name, f"file is {size} bytes, larger than {MAX_FILE_BYTES}")
        data = path.read_bytes()
    except MediaFileError:
        raise
    except FileNotFoundError:
        raise MediaFileError(name, "file not found") from None
    except IsADirectoryError:
        raise MediaFileError(name, "is a directory, not a WAV file") from None
    except OSError as exc:
        raise MediaFileError(name, f"cannot be read ({exc.strerror or exc})") from None
    return decode_prompt(data, name)


def decode_prompt(data: bytes, name: str = "<memory>") -> npt.NDArray[np.int16]:
    """Decode the bytes of a WAV file to 8 kHz mono int16 (``name`` is used in errors)."""
    fmt, payload = _parse_riff(memoryview(data), name)
    frames = len(payload) // fmt.block_align
    if frames == 0:
        return np.zeros(0, dtype=np.int16)
    scaled = _samples_on_int16_scale(payload[: frames * fmt.block_align], fmt)
    mono = scaled if fmt.channels == 1 else scaled.reshape(frames, fmt.channels).mean(axis=1)
    pcm = np.clip(np.rint(mono), -32768, 32767).astype(np.int16)
    if fmt.rate == MEDIA_RATE:
        return pcm
    try:
        return resample(pcm, fmt.rate, MEDIA_RATE)
    except ValueError as exc:
        raise MediaFileError(name, f"sample rate {fmt.rate} Hz is not supported ({exc})") from None


def _parse_riff(data: memoryview, name: str) -> tuple[_Format, memoryview]:
    if len(data) < 12 or bytes(data[:4]) != b"RIFF" or bytes(data[8:12]) != b"WAVE":
        raise MediaFileError(name, "not a WAV file (no RIFF/WAVE header)")
    fmt: _Format | None = None
    offset = 12
    while offset + 8 <= len(data):
        chunk_id = bytes(data[offset : offset + 4])
        (size,) = struct.unpack_from("<I", data, offset + 4)
        body_start = offset + 8
        available = len(data) - body_start
        if chunk_id == b"data":
            if fmt is None:
                raise MediaFileError(name, "data chunk comes before the fmt chunk")
            if size > available:
                if size < _STREAMING_SIZE:
                    raise MediaFileError(
                        name, f"truncated: data chunk says {size} bytes, file has {available}"
                    )
                size = available
            return fmt, data[body_start : body_start + size]
        if size > available:
            raise MediaFileError(name, f"truncated inside the {chunk_id!r} chunk")
        if chunk_id == b"fmt ":
            fmt = _parse_fmt(data[body_start : body_start + size], name)
        offset = body_start + size + (size & 1)  # chunks are padded to an even length
    if fmt is None:
        raise MediaFileError(name, "no fmt chunk")
    raise MediaFileError(name, "no data chunk")


def _parse_fmt(body: memoryview, name: str) -> _Format:
    if len(body) < 16:
        raise MediaFileError(name, "fmt chunk is too short")
    code, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", body)
    if code == _EXTENSIBLE:
        if len(body) < 40:
            raise MediaFileError(name, "extensible fmt chunk is too short")
        guid = bytes(body[24:40])
        if guid[2:] != _GUID_TAIL:
            raise MediaFileError(name, "unknown extensible sub-format (not PCM or float)")
        (code,) = struct.unpack_from("<H", guid)
    fmt = _Format(code, channels, rate, bits, block_align)
    _check_format(fmt, name)
    return fmt


def _check_format(fmt: _Format, name: str) -> None:
    if fmt.code == _PCM:
        if fmt.bits not in (8, 16, 24, 32):
            raise MediaFileError(name, f"{fmt.bits}-bit integer PCM is not supported")
    elif fmt.code == _FLOAT:
        if fmt.bits not in (32, 64):
            raise MediaFileError(name, f"{fmt.bits}-bit float is not supported")
    else:
        raise MediaFileError(
            name, f"encoding 0x{fmt.code:04x} is not PCM (compressed WAV is not supported)"
        )
    if fmt.channels not in (1, 2):
        raise MediaFileError(name, f"has {fmt.channels} channels; use mono or stereo")
    if not MIN_RATE <= fmt.rate <= MAX_RATE:
        raise MediaFileError(name, f"sample rate {fmt.rate} Hz is outside {MIN_RATE}-{MAX_RATE} Hz")
    if fmt.block_align != fmt.channels * fmt.bits // 8:
        raise MediaFileError(name, f"inconsistent block alignment {fmt.block_align}")


def _samples_on_int16_scale(raw: memoryview, fmt: _Format) -> npt.NDArray[np.float64]:
    """Every sample as float64 where full scale is ±32768, whatever the source width."""
    if fmt.code == _FLOAT:
        floats = np.frombuffer(raw, dtype="<f4" if fmt.bits == 32 else "<f8")
        return np.nan_to_num(floats.astype(np.float64), nan=0.0) * 32768.0
    if fmt.bits == 8:  # the only unsigned width
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) * 256.0
    if fmt.bits == 16:
        return np.frombuffer(raw, dtype="<i2").astype(np.float64)
    if fmt.bits == 24:
        widened = np.zeros((len(raw) // 3, 4), dtype=np.uint8)
        widened[:, 1:] = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        # The 24 bits now sit in the top of a little-endian int32: sign comes for free.
        return widened.view("<i4").ravel().astype(np.float64) / 65536.0
    return np.frombuffer(raw, dtype="<i4").astype(np.float64) / 65536.0


def wav_header(data_bytes: int, *, rate: int, channels: int, bits: int = 16) -> bytes:
    """The canonical 44-byte PCM header; sizes saturate at the RIFF 4 GiB limit."""
    block = channels * bits // 8
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        min(36 + data_bytes, _U32_MAX),
        b"WAVE",
        b"fmt ",
        16,
        _PCM,
        channels,
        rate,
        rate * block,
        block,
        bits,
        b"data",
        min(data_bytes, _U32_MAX),
    )


def write_wav(
    path: Path, pcm: npt.NDArray[np.int16], rate: int = MEDIA_RATE, channels: int = 1
) -> None:
    """Write 16-bit PCM atomically (temp file + rename), so readers never see half a file.

    ``pcm`` is either interleaved 1-D or shaped ``(frames, channels)``. Blocking.
    """
    samples = np.asarray(pcm)
    if samples.dtype != np.int16:
        raise TypeError(f"write_wav needs int16 samples, got {samples.dtype}")
    if channels < 1 or samples.size % channels:
        raise ValueError(f"{samples.size} samples do not split into {channels} channels")
    if samples.ndim == 2 and samples.shape[1] != channels:
        raise ValueError(f"array has {samples.shape[1]} columns, expected {channels}")
    body = samples.astype("<i2", copy=False).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(wav_header(len(body), rate=rate, channels=channels))
            out.write(body)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
