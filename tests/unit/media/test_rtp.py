"""RTP header parsing/building and RFC 3550 A.1/A.8 receiver statistics."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pomelo.media.rtp import (
    RtpError,
    RtpExtension,
    RtpPacket,
    StreamStats,
    build_rtp,
    is_rtcp,
    parse_rtp,
)


def test_parse_minimal_packet() -> None:
    data = bytes.fromhex("80 00 30 39 00 00 03 e8 de ad be ef") + b"\xff" * 160
    packet = parse_rtp(data)
    assert packet.payload_type == 0
    assert not packet.marker
    assert packet.sequence == 12345
    assert packet.timestamp == 1000
    assert packet.ssrc == 0xDEADBEEF
    assert packet.payload == b"\xff" * 160
    assert packet.csrcs == ()
    assert packet.extension is None
    assert packet.padding == 0


def test_marker_and_payload_type() -> None:
    packet = parse_rtp(build_rtp(101, 1, 2, 3, b"abcd", marker=True))
    assert packet.marker
    assert packet.payload_type == 101


def test_full_round_trip_with_csrc_extension_padding() -> None:
    original = RtpPacket(
        payload_type=8,
        sequence=65535,
        timestamp=0xFFFFFFFF,
        ssrc=1,
        payload=b"\x55" * 20,
        marker=True,
        csrcs=(10, 20, 30),
        extension=RtpExtension(0xBEDE, b"\x10\xaa\x00\x00"),
        padding=4,
    )
    data = original.to_bytes()
    assert len(data) == 12 + 12 + 4 + 4 + 20 + 4
    assert data[0] == 0x80 | 0x20 | 0x10 | 3
    assert data[-1] == 4
    assert parse_rtp(data) == original


def test_build_masks_wrapping_counters() -> None:
    packet = parse_rtp(build_rtp(0, 65536 + 7, 2**32 + 9, 5))
    assert packet.sequence == 7
    assert packet.timestamp == 9


def test_parse_accepts_bytearray_and_memoryview() -> None:
    data = build_rtp(0, 1, 2, 3, b"xyz")
    assert parse_rtp(bytearray(data)) == parse_rtp(memoryview(data)) == parse_rtp(data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too short"),
        (b"\x80\x00" + bytes(9), "too short"),
        (b"\x40\x00" + bytes(10), "version"),
        (b"\xc0\x00" + bytes(10), "version"),
        (b"\x82\x00" + bytes(10) + bytes(4), "CSRC"),
        (b"\x90\x00" + bytes(10) + b"\x00\x00", "extension header"),
        (b"\x90\x00" + bytes(10) + b"\xbe\xde\x00\x02" + bytes(4), "extension data"),
        (b"\xa0\x00" + bytes(10) + b"\x00", "padding"),
        (b"\xa0\x00" + bytes(10) + b"\x01\x02\x09", "padding"),
    ],
)
def test_malformed_packets_raise(data: bytes, reason: str) -> None:
    with pytest.raises(RtpError, match=reason):
        parse_rtp(data)


def test_padding_may_consume_whole_payload() -> None:
    packet = parse_rtp(b"\xa0\x00" + bytes(10) + b"\x00\x00\x03")
    assert packet.payload == b""
    assert packet.padding == 3


def test_build_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="payload type"):
        build_rtp(128, 0, 0, 0)
    with pytest.raises(ValueError, match="CSRC"):
        build_rtp(0, 0, 0, 0, csrcs=tuple(range(16)))
    with pytest.raises(ValueError, match="multiple of 4"):
        build_rtp(0, 0, 0, 0, extension=RtpExtension(1, b"abc"))


def test_is_rtcp_demux() -> None:
    assert is_rtcp(bytes([0x80, 200, 0, 6]))
    assert is_rtcp(bytes([0x81, 201, 0, 7]))
    assert not is_rtcp(build_rtp(0, 1, 2, 3))
    assert not is_rtcp(build_rtp(101, 1, 2, 3, marker=True))
    assert not is_rtcp(b"\x80")


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_rtp_error(data: bytes) -> None:
    try:
        packet = parse_rtp(data)
    except RtpError:
        return
    assert packet.to_bytes() == data or packet.padding  # padding bytes are re-zeroed


@settings(max_examples=200)
@given(
    st.integers(0, 127),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=200),
    st.booleans(),
    st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
    st.integers(0, 255),
)
def test_build_parse_round_trip(
    pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool, csrcs: list[int], pad: int
) -> None:
    data = build_rtp(pt, seq, ts, ssrc, payload, marker=marker, csrcs=tuple(csrcs), padding=pad)
    packet = parse_rtp(data)
    assert (packet.payload_type, packet.sequence, packet.timestamp, packet.ssrc) == (
        pt,
        seq,
        ts,
        ssrc,
    )
    assert packet.payload == payload
    assert packet.marker is marker
    assert packet.csrcs == tuple(csrcs)
    assert packet.padding == pad


# ---------------------------------------------------------------------------- StreamStats


def feed(stats: StreamStats, seqs: list[int], *, start_ts: int = 0) -> list[bool]:
    results = []
    for i, seq in enumerate(seqs):
        results.append(stats.update(seq & 0xFFFF, start_ts + 160 * i, 0.02 * i))
    return results


def test_probation_needs_two_sequential_packets() -> None:
    stats = StreamStats(1)
    assert feed(stats, [100, 101, 102]) == [False, True, True]
    assert stats.base_seq == 101
    assert stats.received == 2
    assert stats.expected == 2
    assert stats.lost == 0


def test_probation_restarts_on_non_sequential() -> None:
    stats = StreamStats(1)
    assert feed(stats, [10, 50, 51, 52]) == [False, False, True, True]
    assert stats.base_seq == 51


def test_loss_is_counted() -> None:
    stats = StreamStats(1)
    feed(stats, [1, 2, 3, 5, 6, 9, 10])
    assert stats.expected == 9
    assert stats.received == 6
    assert stats.lost == 3


def test_sequence_wrap_counts_a_cycle() -> None:
    stats = StreamStats(1)
    feed(stats, [65533, 65534, 65535, 0, 1, 2])
    assert stats.cycles == 1 << 16
    assert stats.extended_max == (1 << 16) + 2
    assert stats.expected == 5
    assert stats.lost == 0


def test_duplicates_are_detected_and_not_counted_as_received() -> None:
    stats = StreamStats(1)
    results = feed(stats, [1, 2, 3, 3, 4, 2, 5])
    assert results == [False, True, True, False, True, False, True]
    assert stats.duplicates == 2
    assert stats.received == 4
    assert stats.lost == 0


def test_out_of_order_fills_the_gap() -> None:
    stats = StreamStats(1)
    feed(stats, [1, 2, 3, 5, 4, 6])
    assert stats.out_of_order == 1
    assert stats.lost == 0
    assert stats.duplicates == 0


def test_large_jump_needs_confirmation_then_resyncs() -> None:
    stats = StreamStats(1)
    feed(stats, [1, 2, 3])
    assert not stats.update(30000, 0, 1.0)
    assert stats.update(30001, 160, 1.02)
    assert stats.base_seq == 30001
    assert stats.received == 1
    assert stats.expected == 1


def test_isolated_large_jump_is_ignored() -> None:
    stats = StreamStats(1)
    feed(stats, [1, 2, 3])
    assert not stats.update(40000, 0, 1.0)
    assert stats.update(4, 480, 0.06)
    assert stats.extended_max == 4


def test_jitter_is_zero_for_perfect_timing() -> None:
    stats = StreamStats(1)
    feed(stats, list(range(100, 200)))
    assert stats.jitter == pytest.approx(0.0, abs=1e-9)


def test_jitter_converges_to_mean_deviation() -> None:
    stats = StreamStats(1)
    # Arrivals alternate 10 ms early/late: |D| = 20 ms = 160 units each packet.
    for i in range(1000):
        offset = 0.01 if i % 2 else -0.01
        stats.update(i, 160 * i, 1.0 + 0.02 * i + offset)
    assert stats.jitter == pytest.approx(160, rel=0.02)
    assert stats.jitter_ms == pytest.approx(20, rel=0.02)


def test_jitter_survives_timestamp_wrap() -> None:
    stats = StreamStats(1)
    base = 0xFFFFFFFF - 800
    for i in range(20):
        stats.update(i, (base + 160 * i) & 0xFFFFFFFF, 0.02 * i)
    assert stats.jitter < 1.0


def test_report_block_interval_fraction_lost() -> None:
    stats = StreamStats(0x1234)
    feed(stats, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])  # base 1, expected 10, received 10
    first = stats.report_block(now=1.0)
    assert first.fraction_lost == 0
    assert first.cumulative_lost == 0
    assert first.highest_seq == 10
    assert first.ssrc == 0x1234
    for i, seq in enumerate([11, 12, 15, 16]):  # 13 and 14 lost: 2 of 6
        stats.update(seq, 160 * (11 + i), 1.0 + 0.02 * i)
    second = stats.report_block(now=2.0)
    assert second.fraction_lost == (2 << 8) // 6
    assert second.cumulative_lost == 2
    assert second.highest_seq == 16


def test_report_block_lsr_dlsr() -> None:
    from pomelo.media.rtp import RtcpSenderReport

    stats = StreamStats(1)
    feed(stats, [1, 2, 3])
    sr = RtcpSenderReport(9, 0x12345678, 0x9ABCDEF0, 0, 0, 0)
    stats.on_sender_report(sr, arrival=10.0)
    block = stats.report_block(now=10.5)
    assert block.lsr == 0x56789ABC
    assert block.dlsr == 32768


def test_header_struct_layout() -> None:
    data = build_rtp(0, 0x0102, 0x03040506, 0x0708090A)
    assert struct.unpack("!BBHII", data) == (0x80, 0, 0x0102, 0x03040506, 0x0708090A)
