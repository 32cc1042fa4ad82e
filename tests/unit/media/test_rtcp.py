"""RTCP (RFC 3550 §6) SR/RR/SDES/BYE building and compound parsing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pomelo.media.rtp import (
    RTCP_RR,
    RTCP_SR,
    ReportBlock,
    RtcpBye,
    RtcpPacket,
    RtcpReceiverReport,
    RtcpSdes,
    RtcpSenderReport,
    RtcpUnknown,
    RtpError,
    build_rtcp_compound,
    ntp_middle32,
    ntp_timestamp,
    parse_rtcp,
)

BLOCK = ReportBlock(
    ssrc=0xCAFEBABE,
    fraction_lost=25,
    cumulative_lost=-3,
    highest_seq=0x0001_0005,
    jitter=77,
    lsr=0x1234_5678,
    dlsr=0x0000_8000,
)


def test_report_block_wire_format() -> None:
    data = BLOCK.to_bytes()
    assert len(data) == 24
    assert data[4] == 25
    assert data[5:8] == b"\xff\xff\xfd"  # -3 as signed 24-bit
    assert ReportBlock.parse(data, 0) == BLOCK


def test_sender_report_round_trip() -> None:
    sr = RtcpSenderReport(
        ssrc=1,
        ntp_seconds=0xE000_0000,
        ntp_fraction=0x8000_0000,
        rtp_timestamp=160_000,
        packet_count=1000,
        octet_count=160_000,
        reports=(BLOCK,),
    )
    data = sr.to_bytes()
    assert len(data) == 4 + 24 + 24
    assert data[0] == 0x81
    assert data[1] == RTCP_SR
    assert int.from_bytes(data[2:4], "big") == len(data) // 4 - 1
    assert parse_rtcp(data) == [sr]


def test_receiver_report_round_trip_without_blocks() -> None:
    rr = RtcpReceiverReport(ssrc=42)
    data = rr.to_bytes()
    assert data == bytes([0x80, RTCP_RR, 0, 1]) + (42).to_bytes(4, "big")
    assert parse_rtcp(data) == [rr]


def test_receiver_report_with_31_blocks() -> None:
    rr = RtcpReceiverReport(ssrc=42, reports=tuple([BLOCK] * 31))
    assert parse_rtcp(rr.to_bytes()) == [rr]
    with pytest.raises(ValueError, match="31"):
        RtcpReceiverReport(ssrc=42, reports=tuple([BLOCK] * 32)).to_bytes()


def test_sdes_cname_round_trip_and_alignment() -> None:
    for length in range(0, 9):
        sdes = RtcpSdes.cname(7, "x" * length)
        data = sdes.to_bytes()
        assert len(data) % 4 == 0
        assert parse_rtcp(data) == [sdes]


def test_sdes_multiple_chunks_and_items() -> None:
    sdes = RtcpSdes(((1, ((1, b"alice@example"), (6, b"pomelo"))), (2, ((1, b"b"),))))
    assert parse_rtcp(sdes.to_bytes()) == [sdes]


def test_bye_with_and_without_reason() -> None:
    for bye in (RtcpBye((1, 2, 3)), RtcpBye((9,), "call ended"), RtcpBye((), "")):
        data = bye.to_bytes()
        assert len(data) % 4 == 0
        assert parse_rtcp(data) == [bye]


def test_compound_packet() -> None:
    packets: list[RtcpPacket] = [
        RtcpSenderReport(1, 2, 3, 4, 5, 6, (BLOCK,)),
        RtcpSdes.cname(1, "pomelo@host"),
        RtcpUnknown(206, 1, b"\x00\x00\x00\x01\x00\x00\x00\x02"),  # PLI-shaped feedback
        RtcpBye((1,), "bye"),
    ]
    assert parse_rtcp(build_rtcp_compound(packets)) == packets


def test_padding_on_last_packet_is_stripped() -> None:
    rr = RtcpReceiverReport(5).to_bytes()
    padded = bytearray(rr[:4] + rr[4:] + b"\x00\x00\x00\x04")
    padded[0] |= 0x20
    padded[3] += 1
    assert parse_rtcp(bytes(padded)) == [RtcpReceiverReport(5)]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too short"),
        (b"\x80\xc9\x00", "too short"),
        (b"\x40\xc9\x00\x01" + bytes(4), "version"),
        (b"\x80\xc9\x00\x05" + bytes(4), "exceeds"),
        (b"\x81\xc9\x00\x01" + bytes(4), "report blocks"),
        (b"\x80\xc8\x00\x01" + bytes(4), "SR too short"),
        (b"\x80\xc9\x00\x01" + bytes(4) + b"\x80", "truncated"),
        (b"\xa0\xc9\x00\x01" + bytes(4) + b"\x80\xc9\x00\x01" + bytes(4), "padding"),
        (b"\xa0\xc9\x00\x01" + bytes(4), "padding"),
        (b"\x81\xca\x00\x01" + b"\x00\x00\x00\x01", "SDES"),
        (b"\x81\xca\x00\x02" + b"\x00\x00\x00\x01\x01\x09ab", "SDES item"),
        (b"\x82\xcb\x00\x01" + bytes(4), "BYE"),
        (b"\x81\xcb\x00\x02" + bytes(4) + b"\x09abc", "reason"),
    ],
)
def test_malformed_rtcp_raises(data: bytes, reason: str) -> None:
    with pytest.raises(RtpError, match=reason):
        parse_rtcp(data)


def test_ntp_helpers() -> None:
    seconds, fraction = ntp_timestamp(1.5)
    assert seconds == 2_208_988_801
    assert fraction == 0x8000_0000
    assert ntp_middle32(0xAAAA_BBBB, 0xCCCC_DDDD) == 0xBBBB_CCCC


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_rtp_error(data: bytes) -> None:
    try:
        packets = parse_rtcp(data)
    except RtpError:
        return
    assert packets


@settings(max_examples=200)
@given(st.binary(max_size=200).map(lambda b: b"\x80" + b[:1] + bytes([0, len(b[1:]) // 4]) + b[1:]))
def test_random_bodies_with_plausible_header_only_raise_rtp_error(data: bytes) -> None:
    with contextlib.suppress(RtpError):
        parse_rtcp(data)


@settings(max_examples=100)
@given(
    st.lists(
        st.builds(
            ReportBlock,
            ssrc=st.integers(0, 2**32 - 1),
            fraction_lost=st.integers(0, 255),
            cumulative_lost=st.integers(-(2**23), 2**23 - 1),
            highest_seq=st.integers(0, 2**32 - 1),
            jitter=st.integers(0, 2**32 - 1),
            lsr=st.integers(0, 2**32 - 1),
            dlsr=st.integers(0, 2**32 - 1),
        ),
        max_size=5,
    )
)
def test_report_blocks_round_trip(blocks: list[ReportBlock]) -> None:
    rr = RtcpReceiverReport(3, tuple(blocks))
    assert parse_rtcp(rr.to_bytes()) == [rr]
