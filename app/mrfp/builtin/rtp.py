"""RTP packets (RFC 3550 §5.1) and RFC 4733 telephone-event payloads, sans-IO.

`RtpPacket.parse(data)` / `bytes(packet)` give a faithful round trip of every header field
(version, padding, extension, CSRC list, marker, payload type, sequence number, timestamp, SSRC).
The engine's per-packet path uses `parse_header`, which returns a plain tuple and allocates no
dataclass, because it runs for every packet of every member.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass, field
from typing import Final

RTP_VERSION: Final = 2
HEADER_SIZE: Final = 12
_HEADER: Final = struct.Struct("!BBHII")
_EXT_HEADER: Final = struct.Struct("!HH")


class RtpError(ValueError):
    """Bytes that are not a valid RTP packet (or RFC 4733 payload)."""


@dataclass(slots=True)
class RtpExtension:
    """A header extension (RFC 3550 §5.3.1): 16-bit profile value and whole 32-bit words."""

    profile: int
    data: bytes = b""


@dataclass(slots=True)
class RtpPacket:
    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: list[int] = field(default_factory=list)
    extension: RtpExtension | None = None
    padding: int = 0  # number of padding octets at the end, the last one included (§5.1 P)

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        pt, marker, seq, ts, ssrc, start, end = parse_header(data)
        first = data[0]
        cc = first & 0x0F
        csrc = list(struct.unpack_from(f"!{cc}I", data, HEADER_SIZE)) if cc else []
        extension = None
        if first & 0x10:
            ext_at = HEADER_SIZE + 4 * cc
            profile, words = _EXT_HEADER.unpack_from(data, ext_at)
            extension = RtpExtension(profile, bytes(data[ext_at + 4 : ext_at + 4 + 4 * words]))
        return cls(
            payload_type=pt,
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=bytes(data[start:end]),
            marker=marker,
            csrc=csrc,
            extension=extension,
            padding=len(data) - end,
        )

    def __bytes__(self) -> bytes:
        if not 0 <= self.payload_type <= 127:
            raise RtpError(f"payload type {self.payload_type} out of range")
        if len(self.csrc) > 15:
            raise RtpError("at most 15 CSRCs")
        first = (RTP_VERSION << 6) | len(self.csrc)
        if self.padding:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        out = bytearray(
            _HEADER.pack(
                first,
                (0x80 if self.marker else 0) | self.payload_type,
                self.sequence_number & 0xFFFF,
                self.timestamp & 0xFFFFFFFF,
                self.ssrc & 0xFFFFFFFF,
            )
        )
        for csrc in self.csrc:
            out += struct.pack("!I", csrc)
        if self.extension is not None:
            ext = self.extension
            if len(ext.data) % 4:
                raise RtpError("extension data must be whole 32-bit words")
            out += _EXT_HEADER.pack(ext.profile, len(ext.data) // 4) + ext.data
        out += self.payload
        if self.padding:
            if not 1 <= self.padding <= 255:
                raise RtpError("padding must be 1..255 octets")
            # §5.1: the last padding octet counts the padding octets, itself included.
            out += bytes(self.padding - 1) + bytes([self.padding])
        return bytes(out)


def parse_header(data: bytes) -> tuple[int, bool, int, int, int, int, int]:
    """(payload type, marker, seq, timestamp, ssrc, payload start, payload end) of an RTP packet.

    Validates what RFC 3550 §A.1 lists as cheap header checks: version 2, lengths consistent
    with CC, X and P. Raises `RtpError` otherwise.
    """
    size = len(data)
    if size < HEADER_SIZE:
        raise RtpError("shorter than the RTP header")
    first, second, seq, ts, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {first >> 6}")
    start = HEADER_SIZE + 4 * (first & 0x0F)
    if first & 0x10:
        if size < start + 4:
            raise RtpError("truncated header extension")
        start += 4 + 4 * _EXT_HEADER.unpack_from(data, start)[1]
    end = size
    if first & 0x20:
        pad = data[-1]
        if pad == 0:
            raise RtpError("padding length 0")
        end -= pad
    if end < start:
        raise RtpError("header longer than the packet")
    return second & 0x7F, bool(second & 0x80), seq, ts, ssrc, start, end


def is_rtcp(data: bytes) -> bool:
    """True for RTCP on a muxed port: packet types 192..223 sit where RTP has M+PT (RFC 5761 §4)."""
    return len(data) >= 2 and 192 <= data[1] <= 223


# RFC 4733 §3.2: events 0-9 are the digits, 10 '*', 11 '#', 12-15 'A'-'D'.
DTMF_DIGITS: Final = "0123456789*#ABCD"
_EVENT: Final = struct.Struct("!BBH")


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """An RFC 4733 §2.3 named-event payload (DTMF and other telephony events)."""

    event: int
    end: bool
    volume: int  # 0..63, in -dBm0
    duration: int  # timestamp units since the event began

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        if len(payload) < 4:
            raise RtpError("telephone-event payload shorter than 4 octets")
        event, flags, duration = _EVENT.unpack_from(payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def __bytes__(self) -> bytes:
        return _EVENT.pack(
            self.event, (0x80 if self.end else 0) | (self.volume & 0x3F), self.duration & 0xFFFF
        )

    @property
    def digit(self) -> str | None:
        return DTMF_DIGITS[self.event] if self.event < len(DTMF_DIGITS) else None


class RtpSendState:
    """Sending side of one RTP stream: SSRC, sequence number and timestamp (RFC 3550 §5.1).

    All three start random (§5.1, §8.1: it makes known-plaintext attacks on encryption harder
    and SSRC collisions unlikely); per frame the sequence number grows by one and the timestamp
    by the frame's samples (160 for 20 ms at 8 kHz). The first packet carries the marker bit
    (RFC 3551 §4.1: start of a talkspurt).
    """

    __slots__ = ("marker", "octets", "packets", "samples_per_frame", "seq", "ssrc", "timestamp")

    def __init__(self, samples_per_frame: int = 160) -> None:
        self.samples_per_frame = samples_per_frame
        self.ssrc = secrets.randbits(32)
        self.seq = secrets.randbits(16)
        self.timestamp = secrets.randbits(32)
        self.packets = 0
        self.octets = 0
        self.marker = True

    def advance(self, payload_len: int) -> tuple[int, int, bool]:
        """(seq, timestamp, marker) for the next packet, then step to the one after."""
        out = (self.seq, self.timestamp, self.marker)
        self.marker = False
        self.seq = (self.seq + 1) & 0xFFFF
        self.timestamp = (self.timestamp + self.samples_per_frame) & 0xFFFFFFFF
        self.packets += 1
        self.octets += payload_len
        return out

    def skip(self) -> None:
        """A frame time passed without sending (e.g. on hold): the timestamp still advances
        (§5.1: it reflects the sampling instant), and the next packet starts a talkspurt."""
        self.timestamp = (self.timestamp + self.samples_per_frame) & 0xFFFFFFFF
        self.marker = True
