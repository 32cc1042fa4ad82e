"""G.711 tables against the standard's formulas and round-trip properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pomelo.media import g711

ALL_CODES = bytes(range(256))


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xFF, 0), (0x7F, 0), (0x00, -32124), (0x80, 32124), (0xFE, 8), (0x7E, -8), (0xEF, 132)],
)
def test_ulaw_decode_known_points(code: int, value: int) -> None:
    assert int(g711.ULAW_DECODE_TABLE[code]) == value


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256), (0xD4, 24), (0xC5, 264)],
)
def test_alaw_decode_known_points(code: int, value: int) -> None:
    assert int(g711.ALAW_DECODE_TABLE[code]) == value


def test_table_shapes_and_dtypes() -> None:
    assert g711.ULAW_DECODE_TABLE.shape == (256,)
    assert g711.ULAW_DECODE_TABLE.dtype == np.int16
    assert g711.ALAW_ENCODE_TABLE.shape == (65536,)
    assert g711.ALAW_ENCODE_TABLE.dtype == np.uint8
    assert len(g711.ULAW_TO_ALAW) == 256
    assert len(g711.ALAW_TO_ULAW) == 256


def test_decode_tables_are_odd_symmetric() -> None:
    ulaw = g711.ULAW_DECODE_TABLE.astype(np.int32)
    alaw = g711.ALAW_DECODE_TABLE.astype(np.int32)
    assert np.array_equal(ulaw[:128], -ulaw[128:])
    assert np.array_equal(alaw[:128], -alaw[128:])


def test_ulaw_round_trip_every_code_but_negative_zero() -> None:
    back = g711.ulaw_encode(g711.ulaw_decode(ALL_CODES))
    differing = [i for i in range(256) if back[i] != i]
    # 0x7F is "-0": it decodes to 0, and 0 is encoded as 0xFF ("+0").
    assert differing == [0x7F]
    assert back[0x7F] == 0xFF


def test_alaw_round_trip_every_code() -> None:
    assert g711.alaw_encode(g711.alaw_decode(ALL_CODES)) == ALL_CODES


def test_encode_zero_and_extremes() -> None:
    pcm = np.array([0, 32767, -32768], dtype=np.int16)
    assert g711.ulaw_encode(pcm) == bytes([0xFF, 0x80, 0x00])
    assert g711.alaw_encode(pcm) == bytes([0xD5, 0xAA, 0x2A])


def test_encode_is_monotonic() -> None:
    pcm = np.arange(-32768, 32768, dtype=np.int64).astype(np.int16)
    for encode, decode in (
        (g711.ulaw_encode, g711.ulaw_decode),
        (g711.alaw_encode, g711.alaw_decode),
    ):
        values = decode(encode(pcm)).astype(np.int32)
        assert np.all(np.diff(values) >= 0)


def test_encode_picks_nearest_level() -> None:
    """Quantisation error never exceeds half the step of the segment (G.711 decision levels)."""
    pcm = np.arange(-32000, 32000, 7, dtype=np.int64).astype(np.int16)
    for encode, decode in (
        (g711.ulaw_encode, g711.ulaw_decode),
        (g711.alaw_encode, g711.alaw_decode),
    ):
        err = np.abs(decode(encode(pcm)).astype(np.int32) - pcm)
        step = np.maximum(8, 2 ** (np.floor(np.log2(np.abs(pcm.astype(np.int32)) + 132)) - 4))
        assert np.all(err <= step / 2 + 8)


def test_non_int16_input_is_saturated() -> None:
    wide = np.array([100000.0, -100000.0, 0.4])
    assert g711.ulaw_encode(wide) == bytes([0x80, 0x00, 0xFF])


@pytest.mark.parametrize("codec", ["ulaw", "alaw"])
def test_sine_snr_above_35_db(codec: str) -> None:
    n = np.arange(8000)
    x = (10000 * np.sin(2 * np.pi * 1004 * n / 8000)).round().astype(np.int16)
    if codec == "ulaw":
        y = g711.ulaw_decode(g711.ulaw_encode(x))
    else:
        y = g711.alaw_decode(g711.alaw_encode(x))
    noise = y.astype(np.float64) - x
    snr = 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum(noise**2))
    assert snr > 35


def test_transcoding_matches_decode_encode() -> None:
    assert g711.ulaw_to_alaw(ALL_CODES) == g711.alaw_encode(g711.ulaw_decode(ALL_CODES))
    assert g711.alaw_to_ulaw(ALL_CODES) == g711.ulaw_encode(g711.alaw_decode(ALL_CODES))


def test_transcoding_accepts_bytearray_and_memoryview() -> None:
    frame = bytes(range(160))
    expected = g711.ulaw_to_alaw(frame)
    assert g711.ulaw_to_alaw(bytearray(frame)) == expected
    assert g711.ulaw_to_alaw(memoryview(frame)) == expected


def test_alaw_ulaw_alaw_is_nearly_lossless() -> None:
    there_and_back = g711.ulaw_to_alaw(g711.alaw_to_ulaw(ALL_CODES))
    a = g711.alaw_decode(ALL_CODES).astype(np.int32)
    b = g711.alaw_decode(there_and_back).astype(np.int32)
    # Small-amplitude A-law steps are finer than µ-law's near zero, larger ones coarser.
    assert np.all(np.abs(a - b) <= np.maximum(16, np.abs(a) // 16))


def test_tables_are_read_only() -> None:
    with pytest.raises(ValueError, match="read-only"):
        g711.ULAW_DECODE_TABLE[0] = 1


@settings(max_examples=100)
@given(st.binary(max_size=400))
def test_decode_encode_decode_is_stable(data: bytes) -> None:
    once = g711.ulaw_decode(data)
    assert np.array_equal(g711.ulaw_decode(g711.ulaw_encode(once)), once)
    once_a = g711.alaw_decode(data)
    assert np.array_equal(g711.alaw_decode(g711.alaw_encode(once_a)), once_a)
