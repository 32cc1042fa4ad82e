"""ITU-T G.711 µ-law (PCMU) and A-law (PCMA) companding.

Every conversion is a table lookup: the tables are computed once at import from the
segment/mantissa formulas of G.711, so the per-packet cost is a single numpy gather
(or ``bytes.translate`` for code-to-code transcoding, which avoids numpy entirely).

Linear samples are 16-bit signed. µ-law works on a 14-bit magnitude scale and A-law on
a 13-bit one; both are expressed here on the 16-bit scale (µ-law codes decode to multiples
of 4, A-law codes to multiples of 8), which is what RTP endpoints and WAV files carry.

Zero in µ-law: codes 0xFF (+0) and 0x7F (-0) both decode to 0; encoding 0 yields 0xFF,
so 0x7F is the only code that does not survive a decode/encode round trip. A-law has no
zero code: 0 encodes to 0xD5 (+8).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "ALAW_DECODE_TABLE",
    "ALAW_ENCODE_TABLE",
    "ALAW_TO_ULAW",
    "ULAW_DECODE_TABLE",
    "ULAW_ENCODE_TABLE",
    "ULAW_TO_ALAW",
    "BytesLike",
    "alaw_decode",
    "alaw_encode",
    "alaw_to_ulaw",
    "ulaw_decode",
    "ulaw_encode",
    "ulaw_to_alaw",
]

BytesLike = bytes | bytearray | memoryview

_ULAW_BIAS: Final = 0x84  # 33 on the 14-bit scale, shifted to 16 bits
_ULAW_CLIP: Final = 32635  # largest magnitude whose biased value still fits segment 7
_I64 = npt.NDArray[np.int64]


def _ulaw_decode_formula(codes: _I64) -> _I64:
    inverted = ~codes & 0xFF
    exponent = (inverted >> 4) & 0x07
    mantissa = inverted & 0x0F
    magnitude = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(inverted & 0x80, -magnitude, magnitude)


def _alaw_decode_formula(codes: _I64) -> _I64:
    toggled = codes ^ 0x55  # G.711 inverts the even bits on the line
    segment = (toggled >> 4) & 0x07
    mantissa = (toggled & 0x0F) << 4
    magnitude = np.where(
        segment == 0,
        mantissa + 8,
        (mantissa + 0x108) << np.maximum(segment - 1, 0),
    )
    return np.where(toggled & 0x80, magnitude, -magnitude)


def _segment(value: _I64, lowest_top_bit: int) -> _I64:
    """Index of the highest set bit above ``lowest_top_bit``, clamped to the 8 segments."""
    bits = np.zeros_like(value)
    shifted = value >> lowest_top_bit
    for _ in range(8):
        bits += shifted > 1
        shifted >>= 1
    return np.minimum(bits, 7)


def _ulaw_encode_formula(pcm: _I64) -> _I64:
    # Symmetric magnitude (not the ones'-complement of the classic 14-bit code) so that
    # x and -x always get mirror codes.
    magnitude = np.minimum(np.abs(pcm), _ULAW_CLIP) + _ULAW_BIAS
    exponent = _segment(magnitude, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    sign = np.where(pcm < 0, 0x80, 0x00)
    code: _I64 = ~(sign | (exponent << 4) | mantissa) & 0xFF
    return code


def _alaw_encode_formula(pcm: _I64) -> _I64:
    thirteen = pcm >> 3
    # Negative values use the ones' complement so -8 and +8 are the two smallest codes.
    magnitude = np.where(thirteen >= 0, thirteen, -thirteen - 1)
    sign_mask = np.where(thirteen >= 0, 0xD5, 0x55)
    segment = _segment(magnitude, 4)
    shift = np.maximum(segment, 1)
    mantissa = (magnitude >> shift) & 0x0F
    code = (segment << 4) | mantissa
    code = np.where(magnitude > 0xFFF, 0x7F, code)  # cannot happen for int16, kept for clarity
    return code ^ sign_mask


def _build_tables() -> tuple[
    npt.NDArray[np.int16],
    npt.NDArray[np.int16],
    npt.NDArray[np.uint8],
    npt.NDArray[np.uint8],
]:
    codes = np.arange(256, dtype=np.int64)
    ulaw_dec = _ulaw_decode_formula(codes).astype(np.int16)
    alaw_dec = _alaw_decode_formula(codes).astype(np.int16)
    # Index by the uint16 bit pattern so an int16 array can be used via .view(np.uint16).
    pcm = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int64)
    ulaw_enc = _ulaw_encode_formula(pcm).astype(np.uint8)
    alaw_enc = _alaw_encode_formula(pcm).astype(np.uint8)
    for table in (ulaw_dec, alaw_dec, ulaw_enc, alaw_enc):
        table.setflags(write=False)
    return ulaw_dec, alaw_dec, ulaw_enc, alaw_enc


ULAW_DECODE_TABLE, ALAW_DECODE_TABLE, ULAW_ENCODE_TABLE, ALAW_ENCODE_TABLE = _build_tables()

# Code-to-code tables go through the linear value: the relay never needs the G.711
# Appendix transcoding variants, and this keeps ulaw->alaw->ulaw close to lossless.
ULAW_TO_ALAW: Final[bytes] = ALAW_ENCODE_TABLE[ULAW_DECODE_TABLE.view(np.uint16)].tobytes()
ALAW_TO_ULAW: Final[bytes] = ULAW_ENCODE_TABLE[ALAW_DECODE_TABLE.view(np.uint16)].tobytes()


def _codes(data: BytesLike) -> npt.NDArray[np.uint8]:
    return np.frombuffer(data, dtype=np.uint8)


def _as_int16(pcm: npt.ArrayLike) -> npt.NDArray[np.int16]:
    array = np.asarray(pcm)
    if array.dtype == np.int16:
        same: npt.NDArray[np.int16] = array
        return same
    # Saturate rather than wrap: wrapping turns a slight overload into a full-scale click.
    saturated: npt.NDArray[np.int16] = np.clip(np.rint(array), -32768, 32767).astype(np.int16)
    return saturated


def ulaw_decode(data: BytesLike) -> npt.NDArray[np.int16]:
    """Decode PCMU payload bytes to linear samples (a fresh, writable array)."""
    return ULAW_DECODE_TABLE[_codes(data)]


def alaw_decode(data: BytesLike) -> npt.NDArray[np.int16]:
    """Decode PCMA payload bytes to linear samples (a fresh, writable array)."""
    return ALAW_DECODE_TABLE[_codes(data)]


def ulaw_encode(pcm: npt.ArrayLike) -> bytes:
    """Encode linear samples to PCMU; non-int16 input is rounded and saturated first."""
    return ULAW_ENCODE_TABLE[_as_int16(pcm).view(np.uint16)].tobytes()


def alaw_encode(pcm: npt.ArrayLike) -> bytes:
    """Encode linear samples to PCMA; non-int16 input is rounded and saturated first."""
    return ALAW_ENCODE_TABLE[_as_int16(pcm).view(np.uint16)].tobytes()


def ulaw_to_alaw(data: BytesLike) -> bytes:
    """Transcode PCMU to PCMA without going through numpy (fastest for 160-byte frames)."""
    return bytes(data).translate(ULAW_TO_ALAW)


def alaw_to_ulaw(data: BytesLike) -> bytes:
    """Transcode PCMA to PCMU without going through numpy (fastest for 160-byte frames)."""
    return bytes(data).translate(ALAW_TO_ULAW)
