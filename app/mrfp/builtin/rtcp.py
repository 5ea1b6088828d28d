"""RTCP (RFC 3550 §6) sender/receiver reports, SDES CNAME and BYE; receive statistics (§A.1,
§A.3, §A.8), all sans-IO: times are passed in.

`parse_compound(data)` splits a compound packet into dataclasses (unknown packet types come back
as `RtcpUnknown`); `bytes(packet)` serialises one packet, and a compound packet is the
concatenation (§6.1: it starts with SR or RR and carries an SDES CNAME).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

RTCP_SR: Final = 200
RTCP_RR: Final = 201
RTCP_SDES: Final = 202
RTCP_BYE: Final = 203
SDES_CNAME: Final = 1

_COMMON: Final = struct.Struct("!BBH")
_SENDER_INFO: Final = struct.Struct("!IIIIII")  # ssrc, ntp msw, ntp lsw, rtp ts, packets, octets
_BLOCK: Final = struct.Struct("!IIIIII")  # ssrc, lost, highest seq, jitter, lsr, dlsr

NTP_EPOCH_OFFSET: Final = 2_208_988_800  # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)


class RtcpError(ValueError):
    """Bytes that are not a valid RTCP (compound) packet."""


def ntp_from_unix(seconds: float) -> int:
    """64-bit NTP timestamp (§4: seconds since 1900 in 32.32 fixed point) of a Unix time."""
    return int((seconds + NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFF_FFFF_FFFF_FFFF


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp, as carried in LSR (§6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int  # 8-bit fixed point, lost/expected * 256 since the previous report
    cumulative_lost: int  # signed 24 bits (duplicates can make it negative)
    highest_sequence: int  # extended: cycles << 16 | highest seq
    jitter: int  # timestamp units
    lsr: int = 0
    dlsr: int = 0  # units of 1/65536 s

    @classmethod
    def parse(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, lost, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset)
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 1 << 24
        return cls(ssrc, lost >> 24, cumulative, highest, jitter, lsr, dlsr)

    def __bytes__(self) -> bytes:
        cumulative = max(-(1 << 23), min(self.cumulative_lost, (1 << 23) - 1)) & 0xFFFFFF
        return _BLOCK.pack(
            self.ssrc,
            (self.fraction_lost & 0xFF) << 24 | cumulative,
            self.highest_sequence & 0xFFFFFFFF,
            self.jitter & 0xFFFFFFFF,
            self.lsr & 0xFFFFFFFF,
            self.dlsr & 0xFFFFFFFF,
        )


def _header(count: int, packet_type: int, body_len: int) -> bytes:
    # §6.4.1 length: in 32-bit words minus one, the header included.
    return _COMMON.pack(0x80 | count, packet_type, (body_len + 4) // 4 - 1)


def _pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


@dataclass(frozen=True, slots=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReportBlock] = field(default_factory=list)

    def __bytes__(self) -> bytes:
        body = _SENDER_INFO.pack(
            self.ssrc,
            self.ntp_timestamp >> 32,
            self.ntp_timestamp & 0xFFFFFFFF,
            self.rtp_timestamp & 0xFFFFFFFF,
            self.packet_count & 0xFFFFFFFF,
            self.octet_count & 0xFFFFFFFF,
        )
        body += b"".join(bytes(r) for r in self.reports)
        return _header(len(self.reports), RTCP_SR, len(body)) + body


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)

    def __bytes__(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + b"".join(bytes(r) for r in self.reports)
        return _header(len(self.reports), RTCP_RR, len(body)) + body


@dataclass(frozen=True, slots=True)
class SdesChunk:
    ssrc: int
    items: list[tuple[int, bytes]] = field(default_factory=list)  # (item type, text)

    @property
    def cname(self) -> bytes | None:
        return next((text for kind, text in self.items if kind == SDES_CNAME), None)


@dataclass(frozen=True, slots=True)
class SourceDescription:
    chunks: list[SdesChunk] = field(default_factory=list)

    @classmethod
    def cname(cls, ssrc: int, cname: bytes) -> SourceDescription:
        return cls([SdesChunk(ssrc, [(SDES_CNAME, cname)])])

    def __bytes__(self) -> bytes:
        body = b""
        for chunk in self.chunks:
            data = struct.pack("!I", chunk.ssrc)
            for kind, text in chunk.items:
                if len(text) > 255:
                    raise RtcpError("SDES item longer than 255 octets")
                data += bytes([kind, len(text)]) + text
            # §6.5: the item list ends with at least one null octet, then pads to 32 bits.
            data += b"\x00"
            body += _pad4(data)
        return _header(len(self.chunks), RTCP_SDES, len(body)) + body


@dataclass(frozen=True, slots=True)
class Bye:
    ssrcs: list[int] = field(default_factory=list)
    reason: bytes = b""

    def __bytes__(self) -> bytes:
        body = b"".join(struct.pack("!I", s) for s in self.ssrcs)
        if self.reason:
            body = _pad4(body + bytes([len(self.reason)]) + self.reason)
        return _header(len(self.ssrcs), RTCP_BYE, len(body)) + body


@dataclass(frozen=True, slots=True)
class RtcpUnknown:
    packet_type: int
    count: int
    body: bytes

    def __bytes__(self) -> bytes:
        return _header(self.count, self.packet_type, len(self.body)) + self.body


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | RtcpUnknown


def _parse_blocks(data: bytes, offset: int, count: int, end: int) -> list[ReportBlock]:
    if offset + 24 * count > end:
        raise RtcpError("report blocks overrun the packet")
    return [ReportBlock.parse(data, offset + 24 * i) for i in range(count)]


def _parse_sdes(data: bytes, offset: int, count: int, end: int) -> SourceDescription:
    chunks = []
    for _ in range(count):
        if offset + 4 > end:
            raise RtcpError("truncated SDES chunk")
        ssrc = struct.unpack_from("!I", data, offset)[0]
        pos = offset + 4
        items: list[tuple[int, bytes]] = []
        while True:
            if pos >= end:
                raise RtcpError("SDES chunk without terminating null item")
            kind = data[pos]
            if kind == 0:
                pos += 1
                break
            if pos + 2 > end or pos + 2 + data[pos + 1] > end:
                raise RtcpError("SDES item overruns the packet")
            length = data[pos + 1]
            items.append((kind, bytes(data[pos + 2 : pos + 2 + length])))
            pos += 2 + length
        offset = pos + (-(pos - offset) % 4)
        chunks.append(SdesChunk(ssrc, items))
    return SourceDescription(chunks)


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """All packets of a compound RTCP packet (§6.1). Raises `RtcpError` on malformed input."""
    packets: list[RtcpPacket] = []
    offset = 0
    if len(data) < 4:
        raise RtcpError("shorter than an RTCP header")
    while offset < len(data):
        if offset + 4 > len(data):
            raise RtcpError("trailing octets after the last RTCP packet")
        first, packet_type, words = _COMMON.unpack_from(data, offset)
        if first >> 6 != 2:
            raise RtcpError(f"RTCP version {first >> 6}")
        end = offset + 4 * (words + 1)
        if end > len(data):
            raise RtcpError("RTCP length beyond the datagram")
        if first & 0x20:  # padding (§6.4.1 P): only legal on the last packet
            end -= data[end - 1]
        count = first & 0x1F
        body = offset + 4
        if packet_type == RTCP_SR:
            if body + 24 > end:
                raise RtcpError("truncated sender report")
            ssrc, msw, lsw, rtp_ts, packets_sent, octets = _SENDER_INFO.unpack_from(data, body)
            packets.append(
                SenderReport(
                    ssrc,
                    msw << 32 | lsw,
                    rtp_ts,
                    packets_sent,
                    octets,
                    _parse_blocks(data, body + 24, count, end),
                )
            )
        elif packet_type == RTCP_RR:
            if body + 4 > end:
                raise RtcpError("truncated receiver report")
            ssrc = struct.unpack_from("!I", data, body)[0]
            packets.append(ReceiverReport(ssrc, _parse_blocks(data, body + 4, count, end)))
        elif packet_type == RTCP_SDES:
            packets.append(_parse_sdes(data, body, count, end))
        elif packet_type == RTCP_BYE:
            if body + 4 * count > end:
                raise RtcpError("truncated BYE")
            ssrcs = list(struct.unpack_from(f"!{count}I", data, body))
            reason = b""
            at = body + 4 * count
            if at < end:
                reason = bytes(data[at + 1 : min(end, at + 1 + data[at])])
            packets.append(Bye(ssrcs, reason))
        else:
            packets.append(RtcpUnknown(packet_type, count, bytes(data[body:end])))
        offset += 4 * (words + 1)
    return packets


_RTP_SEQ_MOD: Final = 1 << 16
_MAX_DROPOUT: Final = 3000
_MAX_MISORDER: Final = 100


class ReceiverStats:
    """Statistics of one incoming RTP source for RR report blocks (RFC 3550 §A.1, §A.3, §A.8).

    Arrival times are given in seconds; the clock rate converts them to timestamp units for
    the interarrival jitter.
    """

    def __init__(self, clock_rate: int = 8000) -> None:
        self.clock_rate = clock_rate
        self.ssrc: int | None = None
        self.received = 0
        self._base_seq = 0
        self._max_seq = 0
        self._cycles = 0
        self._bad_seq = _RTP_SEQ_MOD + 1
        self._expected_prior = 0
        self._received_prior = 0
        self._jitter = 0.0  # §A.8, in timestamp units, kept unscaled as a float
        self._transit: float | None = None
        self._last_sr: int = 0  # middle 32 bits of the last SR's NTP timestamp
        self._last_sr_at: float | None = None

    def _init_seq(self, seq: int) -> None:
        self._base_seq = seq
        self._max_seq = seq
        self._bad_seq = _RTP_SEQ_MOD + 1
        self._cycles = 0
        self.received = 0
        self._expected_prior = 0
        self._received_prior = 0

    def update(self, ssrc: int, seq: int, timestamp: int, arrival: float) -> None:
        if ssrc != self.ssrc:
            # A new source (§8.2 collision/restart): statistics start over.
            self.ssrc = ssrc
            self._init_seq(seq)
            self._transit = None
            self._jitter = 0.0
        else:
            delta = (seq - self._max_seq) % _RTP_SEQ_MOD
            if delta < _MAX_DROPOUT:
                if seq < self._max_seq:
                    self._cycles += _RTP_SEQ_MOD  # the 16-bit sequence number wrapped
                self._max_seq = seq
            elif delta <= _RTP_SEQ_MOD - _MAX_MISORDER:
                # A large jump: accept it only if the next packet confirms it (§A.1).
                if seq == self._bad_seq:
                    self._init_seq(seq)
                else:
                    self._bad_seq = (seq + 1) % _RTP_SEQ_MOD
                    return
            # else: a duplicate or reordered packet, counted below
        self.received += 1
        transit = arrival * self.clock_rate - timestamp
        if self._transit is not None:
            d = abs(transit - self._transit)
            self._jitter += (d - self._jitter) / 16  # §6.4.1 J(i) = J(i-1) + (|D| - J(i-1))/16
        self._transit = transit

    def on_sender_report(self, ntp_timestamp: int, arrival: float) -> None:
        self._last_sr = ntp_middle(ntp_timestamp)
        self._last_sr_at = arrival

    @property
    def extended_max(self) -> int:
        return self._cycles + self._max_seq

    @property
    def cumulative_lost(self) -> int:
        return self.extended_max - self._base_seq + 1 - self.received

    @property
    def jitter(self) -> int:
        return int(self._jitter)

    def report_block(self, now: float) -> ReportBlock | None:
        """The block for the next SR/RR, and the start of a new fraction-lost interval (§A.3)."""
        if self.ssrc is None:
            return None
        expected = self.extended_max - self._base_seq + 1
        expected_interval = expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = (lost_interval << 8) // expected_interval
        dlsr = 0
        if self._last_sr_at is not None:
            dlsr = int((now - self._last_sr_at) * 65536)
        return ReportBlock(
            self.ssrc,
            min(fraction, 255),
            self.cumulative_lost,
            self.extended_max,
            self.jitter,
            self._last_sr,
            dlsr,
        )
