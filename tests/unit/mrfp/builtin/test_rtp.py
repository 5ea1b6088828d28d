"""RTP and RTCP wire formats: round trips, field values, malformed input."""

from __future__ import annotations

import pytest

from app.mrfp.builtin.rtcp import (
    Bye,
    ReceiverReport,
    ReceiverStats,
    ReportBlock,
    RtcpError,
    RtcpUnknown,
    SenderReport,
    SourceDescription,
    ntp_from_unix,
    ntp_middle,
    parse_compound,
)
from app.mrfp.builtin.rtp import (
    RtpError,
    RtpExtension,
    RtpPacket,
    RtpSendState,
    TelephoneEvent,
    is_rtcp,
    parse_header,
)

# A PCMU packet as a phone sends it: V=2, M=1, PT=0, seq 0x1234, ts 0xDEADBEEF, SSRC 0x01020304.
PCMU_PACKET = bytes.fromhex("80801234deadbeef01020304") + b"\xff" * 160


def test_parse_known_packet() -> None:
    packet = RtpPacket.parse(PCMU_PACKET)
    assert (packet.payload_type, packet.marker) == (0, True)
    assert (packet.sequence_number, packet.timestamp) == (0x1234, 0xDEADBEEF)
    assert packet.ssrc == 0x01020304
    assert packet.payload == b"\xff" * 160 and packet.csrc == [] and packet.padding == 0
    assert bytes(packet) == PCMU_PACKET


@pytest.mark.parametrize(
    "packet",
    [
        RtpPacket(8, 65535, 4294967295, 1, b"\xd5" * 160),
        RtpPacket(101, 7, 8, 9, b"\x05\x8a\x03\x20", marker=True),
        RtpPacket(0, 1, 2, 3, b"abc", csrc=[10, 20, 30]),
        RtpPacket(0, 1, 2, 3, b"abcd", extension=RtpExtension(0xBEDE, b"\x10\xff\x00\x00")),
        RtpPacket(0, 1, 2, 3, b"abcd", padding=4),
        RtpPacket(96, 1, 2, 3, b"", csrc=[1], extension=RtpExtension(1, b""), padding=1),
    ],
)
def test_round_trip(packet: RtpPacket) -> None:
    data = bytes(packet)
    assert RtpPacket.parse(data) == packet
    assert bytes(RtpPacket.parse(data)) == data


def test_header_bits_on_the_wire() -> None:
    data = bytes(RtpPacket(0, 1, 2, 3, b"xy", csrc=[5, 6], extension=RtpExtension(1), padding=2))
    assert data[0] == 0x80 | 0x20 | 0x10 | 2  # V=2, P, X, CC=2
    assert data[-1] == 2 and data[-2] == 0
    pt, marker, seq, ts, ssrc, start, end = parse_header(data)
    assert (pt, marker, seq, ts, ssrc) == (0, False, 1, 2, 3) and data[start:end] == b"xy"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x00\x00",
        bytes.fromhex("40001234deadbeef01020304"),  # version 1
        bytes.fromhex("83001234deadbeef01020304"),  # CC=3 but no CSRCs
        bytes.fromhex("90001234deadbeef01020304"),  # X without extension header
        bytes.fromhex("a0001234deadbeef0102030400"),  # padding count 0
        bytes.fromhex("a0001234deadbeef0102030463"),  # padding longer than the packet
    ],
)
def test_malformed_rtp_is_rejected(data: bytes) -> None:
    with pytest.raises(RtpError):
        parse_header(data)


def test_telephone_event() -> None:
    payload = bytes.fromhex("0b8a0320")  # '#', end, volume 10, duration 800
    event = TelephoneEvent.parse(payload)
    assert event == TelephoneEvent(11, True, 10, 800) and event.digit == "#"
    assert bytes(event) == payload
    assert TelephoneEvent(16, False, 0, 0).digit is None  # a non-DTMF event (RFC 4733 registry)
    with pytest.raises(RtpError):
        TelephoneEvent.parse(b"\x01")


def test_send_state_steps_seq_and_timestamp_with_wrap() -> None:
    state = RtpSendState(160)
    state.seq, state.timestamp = 0xFFFF, 0xFFFFFF00
    assert state.advance(160) == (0xFFFF, 0xFFFFFF00, True)
    assert state.advance(160) == (0, 0xFFFFFFA0, False)
    state.skip()
    assert state.advance(160)[1:] == ((0xFFFFFFA0 + 320) & 0xFFFFFFFF, True)
    assert (state.packets, state.octets) == (3, 480)


def test_send_state_starts_random() -> None:
    states = [RtpSendState() for _ in range(8)]
    assert len({s.ssrc for s in states}) > 1 and len({s.seq for s in states}) > 1


def test_rtcp_compound_round_trip() -> None:
    block = ReportBlock(0xAABBCCDD, 25, -3, 0x0001_0010, 77, 0x12345678, 65536)
    packets = [
        SenderReport(1, ntp_from_unix(1_700_000_000.5), 160, 50, 8000, [block]),
        SourceDescription.cname(1, b"mrfp@127.0.0.1"),
        Bye([1], b"gone"),
    ]
    data = b"".join(bytes(p) for p in packets)
    assert len(data) % 4 == 0
    assert parse_compound(data) == packets
    rr = ReceiverReport(2, [block, ReportBlock(3, 0, 0, 5, 0)])
    assert parse_compound(bytes(rr)) == [rr]
    assert is_rtcp(data) and not is_rtcp(PCMU_PACKET)


def test_rtcp_sender_report_layout() -> None:
    ntp = ntp_from_unix(0.0)
    assert ntp >> 32 == 2_208_988_800 and ntp_middle(ntp) == (2_208_988_800 & 0xFFFF) << 16
    data = bytes(SenderReport(0x01020304, ntp, 0x10, 2, 320))
    assert data[:4] == bytes.fromhex("80c80006")  # V=2, RC=0, PT=200, length 6 words - 1
    assert data[4:8] == bytes.fromhex("01020304")


def test_rtcp_unknown_type_is_kept_and_garbage_is_rejected() -> None:
    app = bytes.fromhex("81cc0002") + b"\x00\x00\x00\x01" + b"name"  # APP (204)
    assert parse_compound(app) == [RtcpUnknown(204, 1, b"\x00\x00\x00\x01name")]
    truncated = bytes.fromhex("80c90005") + bytes(8)  # length says 24 octets, 12 present
    version1 = bytes.fromhex("40c90001") + bytes(4)
    for bad in (b"\x80", truncated, version1):
        with pytest.raises(RtcpError):
            parse_compound(bad)


def test_receiver_stats_loss_wrap_and_jitter() -> None:
    stats = ReceiverStats(8000)
    seqs = [65533, 65534, 65535, 1, 2, 3]  # 0 lost, across the wrap
    for i, seq in enumerate(seqs):
        stats.update(0x55, seq, 160 * i if seq else 0, 0.02 * i)
    block = stats.report_block(1.0)
    assert block is not None
    assert block.highest_sequence == (1 << 16) + 3
    assert block.cumulative_lost == 1
    assert block.fraction_lost == (1 << 8) // 7
    assert block.jitter == 0  # perfectly paced
    stats.on_sender_report(ntp_from_unix(100.0), 2.0)
    block = stats.report_block(2.5)
    assert block is not None and block.fraction_lost == 0 and block.dlsr == 32768
    # Jittery arrival raises the estimate.
    for i in range(6, 40):
        stats.update(0x55, 3 + i, 160 * i, 0.02 * i + (0.01 if i % 2 else 0.0))
    assert stats.jitter > 0
