"""The media engine of the built-in media processor: RTP in, N-1 mix, RTP out, on one clock.

Usage (all on one asyncio loop)::

    engine = MediaEngine("127.0.0.1", 20000, 29999, on_event=handle)
    await engine.start()
    port = await engine.add_member("conf-1", "7")       # RTP on `port`, RTCP on port + 1
    engine.set_remote("7", "192.0.2.10", 4000, "PCMU", 0, 101)   # from the SDP answer
    engine.set_muted("7", True); engine.set_deaf("7", False); engine.set_hold("7", "sendonly")
    await engine.remove_member("7")
    await engine.stop()

`on_event` receives `TalkingChanged`, `MediaTimeout` and `DtmfReceived` (synchronously, from the
clock tick; it must not block). `member_state(id)` gives a snapshot for `conference list`.

How it works, and why:
- One clock for every conference: an asyncio timer re-armed at absolute times
  `start + k * ptime` (so it does not drift with the loop's lateness). A tick that is more than
  `_MAX_LAG` ticks late skips ahead instead of bursting.
- Receiving is batched per tick: every member's RTP and RTCP socket is registered with one
  epoll set that the tick polls without blocking, then reads one datagram per ready socket,
  re-polling until nothing is left. Per packet that is one `recvfrom`, a header parse into a
  tuple and a dict insert into the member's jitter buffer; nothing else happens per packet.
  (Interarrival jitter is therefore measured at the tick's 20 ms granularity.)
- Per tick, every member's jitter buffer yields one frame (silence if none); the frames of all
  members form one (members x 160) matrix that is decoded, mixed N-1 per conference, checked for
  talking and encoded with a few numpy operations (`mixer`, `g711`); the RTP headers are written
  into one packet buffer with `struct.pack_into` and each packet goes out with one `sendto`.
- Hold: `set_hold(direction)` takes the direction the *member* declared in its SDP (RFC 3264
  §6.1): `sendonly` (it holds us) means we receive but do not send; `recvonly` means we send but
  ignore what it sends; `inactive` neither. A remote address of 0.0.0.0 (RFC 3264 §8.4, the old
  hold style) or port 0 means nothing is sent.
- Media timeout: a member expected to send (negotiated, direction sendrecv/sendonly) that sends
  no RTP for `media_timeout` seconds yields one `MediaTimeout`; the owner decides (BYE, remove).
- Symmetric RTP (RFC 4961): with `symmetric_rtp=True`, or when the SDP gave no usable address,
  media goes to where the member's RTP comes from (behind NAT the SDP address is unroutable).
- RTCP (RFC 3550 §6): every `rtcp_interval` seconds (randomised 0.5-1.5x, §6.3.1) a compound
  SR (or RR while we have sent nothing) + SDES CNAME to the member, with a report block from
  the receive statistics; a BYE on removal. RTCP multiplexed on the RTP port is recognised.
- RFC 4733 telephone-events are not mixed: each completed event becomes `DtmfReceived`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import random
import select
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from app.mrfp.builtin.g711 import CODEC_NAMES, PCMU, SILENCE_BYTE, decode_rows, encode_rows
from app.mrfp.builtin.jitter import JitterBuffer
from app.mrfp.builtin.mixer import ConferenceLayout, TalkDetector, frame_rms, mix_minus
from app.mrfp.builtin.rtcp import (
    Bye,
    ReceiverReport,
    ReceiverStats,
    RtcpError,
    RtcpPacket,
    SenderReport,
    SourceDescription,
    ntp_from_unix,
    parse_compound,
)
from app.mrfp.builtin.rtp import RtpError, RtpSendState, TelephoneEvent, parse_header

log = logging.getLogger(__name__)

_RTP_HEADER: Final = struct.Struct("!BBHII")
_RTP_HEADER_SIZE: Final = 12
_MAX_LAG: Final = 10  # ticks: further behind than this, the clock skips ahead
_HOUSEKEEPING_TICKS: Final = 25  # media timeout and RTCP checks every 0.5 s at 20 ms
_MAX_POLL_ROUNDS: Final = 8  # bounds the receive work of one tick under a flood
_RECV_SIZE: Final = 2048
_DSCP_EF: Final = 0xB8  # RFC 4594 §4.5 telephony: Expedited Forwarding

# direction the member declared -> (it sends to us, it receives from us)
DIRECTIONS: Final = {
    "sendrecv": (True, True),
    "sendonly": (True, False),
    "recvonly": (False, True),
    "inactive": (False, False),
}


@dataclass(frozen=True, slots=True)
class TalkingChanged:
    conference: str
    member_id: str
    talking: bool


@dataclass(frozen=True, slots=True)
class MediaTimeout:
    conference: str
    member_id: str


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    conference: str
    member_id: str
    digit: str
    duration_ms: int


EngineEvent = TalkingChanged | MediaTimeout | DtmfReceived


@dataclass(frozen=True, slots=True)
class MemberState:
    """A snapshot of one member, e.g. for `conference <id> list`."""

    conference: str
    member_id: str
    rtp_port: int
    remote: tuple[str, int] | None
    codec: str | None
    muted: bool
    deaf: bool
    direction: str
    talking: bool
    energy: int  # RMS of the last frame received, int16 scale
    packets_received: int
    packets_sent: int
    packets_lost: int
    late: int
    concealed: int


@dataclass(slots=True)
class EngineStats:
    ticks: int = 0
    late_ticks: int = 0  # ticks that started more than one period late
    skipped_ticks: int = 0  # ticks dropped to catch up after a long stall
    tick_seconds: float = 0.0  # wall time spent inside ticks (work, not waiting)
    packets_in: int = 0
    packets_out: int = 0


class MediaEngineError(Exception):
    """A media engine call failed."""


class NoFreePort(MediaEngineError):
    """No RTP/RTCP port pair is free in the configured range."""


class UnknownMember(MediaEngineError, KeyError):
    """No member with that id."""


class _Member:
    __slots__ = (
        "bad_packets",
        "codec",
        "conference",
        "deaf",
        "direction",
        "dtmf_ts",
        "energy",
        "jitter",
        "joined",
        "last_rx",
        "latch",
        "member_id",
        "muted",
        "negotiated",
        "next_rtcp",
        "payload_type",
        "port",
        "remote",
        "row",
        "rtcp_remote",
        "rtcp_sock",
        "rtp_sock",
        "send_errors",
        "sender",
        "silence",
        "stats",
        "telephone_event_pt",
        "timed_out",
    )

    def __init__(
        self,
        conference: str,
        member_id: str,
        joined: int,
        port: int,
        rtp_sock: socket.socket,
        rtcp_sock: socket.socket,
        samples: int,
        prefetch: int,
        now: float,
    ) -> None:
        self.conference = conference
        self.member_id = member_id
        self.joined = joined
        self.port = port
        self.rtp_sock = rtp_sock
        self.rtcp_sock = rtcp_sock
        self.remote: tuple[str, int] | None = None
        self.rtcp_remote: tuple[str, int] | None = None
        self.latch = True  # follow the source address of incoming RTP (symmetric RTP)
        self.negotiated = False
        self.codec = PCMU
        self.payload_type: int | None = None
        self.telephone_event_pt: int | None = None
        self.silence = bytes([SILENCE_BYTE[PCMU]]) * samples
        self.muted = False
        self.deaf = False
        self.direction = "sendrecv"
        self.jitter = JitterBuffer(prefetch=prefetch)
        self.stats = ReceiverStats()
        self.sender = RtpSendState(samples)
        self.last_rx = now
        self.timed_out = False
        self.next_rtcp = now
        self.dtmf_ts: int | None = None
        self.energy = 0
        self.row: int | None = None
        self.bad_packets = 0
        self.send_errors = 0

    @property
    def sends(self) -> bool:
        return self.negotiated and DIRECTIONS[self.direction][0]

    @property
    def receives(self) -> bool:
        return (
            self.negotiated
            and DIRECTIONS[self.direction][1]
            and self.remote is not None
            and self.payload_type is not None
        )


OnEvent = Callable[[EngineEvent], None]


class MediaEngine:
    def __init__(
        self,
        host: str,
        port_min: int,
        port_max: int,
        *,
        ptime_ms: int = 20,
        media_timeout: float = 30.0,
        on_event: OnEvent,
        clock_rate: int = 8000,
        jitter_prefetch: int = 2,
        symmetric_rtp: bool = False,
        rtcp_interval: float = 5.0,
        cname: str | None = None,
        talk_detector: TalkDetector | None = None,
    ) -> None:
        if port_max - port_min < 1:
            raise ValueError("the port range must hold at least one RTP/RTCP pair")
        self.host = host
        self.port_min = port_min
        self.port_max = port_max
        self.ptime = ptime_ms / 1000.0
        self.samples = clock_rate * ptime_ms // 1000
        self.media_timeout = media_timeout
        self.symmetric_rtp = symmetric_rtp
        self.rtcp_interval = rtcp_interval
        self.cname = (cname or f"mrfp@{host}").encode()
        self.stats = EngineStats()
        self._on_event = on_event
        self._prefetch = jitter_prefetch
        self._members: dict[str, _Member] = {}
        self._fds: dict[int, tuple[_Member, bool]] = {}  # fd -> (member, is RTCP socket)
        self._ports_in_use: set[int] = set()
        self._port_cursor = 0
        self._joined = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: select.epoll | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._next_at = 0.0
        # Per-tick arrays, rebuilt when membership or member flags change (`_rebuild`).
        self._dirty = True
        self._order: list[_Member] = []
        self._layout = ConferenceLayout.from_sizes([])
        self._codec: npt.NDArray[np.intp] = np.zeros(0, dtype=np.intp)
        self._speaks: npt.NDArray[np.bool_] = np.zeros(0, dtype=np.bool_)
        self._hears: npt.NDArray[np.bool_] = np.zeros(0, dtype=np.bool_)
        self._detector = talk_detector or TalkDetector()
        self._packets: npt.NDArray[np.uint8] = np.zeros((0, 0), dtype=np.uint8)
        self._packet_view = memoryview(b"")
        self._senders: list[
            tuple[int, _Member, int, tuple[str, int]]
        ] = []  # (offset, member, M|PT, to)
        self._idle: list[_Member] = []  # members we do not send to this tick

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._loop is not None:
            raise MediaEngineError("already started")
        self._loop = asyncio.get_running_loop()
        self._poller = select.epoll()
        for fd in self._fds:
            self._poller.register(fd, select.EPOLLIN)
        self._next_at = self._loop.time() + self.ptime
        self._timer = self._loop.call_at(self._next_at, self._on_timer)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for member_id in list(self._members):
            await self.remove_member(member_id)
        if self._poller is not None:
            self._poller.close()
            self._poller = None
        self._loop = None

    # -- members -----------------------------------------------------------------------------

    async def add_member(self, conference: str, member_id: str) -> int:
        """Bind an RTP port (even, RFC 3550 §11) and RTCP on the next one; returns the RTP port."""
        if member_id in self._members:
            raise MediaEngineError(f"member {member_id} exists")
        rtp_sock, rtcp_sock, port = self._bind_pair()
        member = _Member(
            conference,
            member_id,
            next(self._joined),
            port,
            rtp_sock,
            rtcp_sock,
            self.samples,
            self._prefetch,
            self._now(),
        )
        self._members[member_id] = member
        self._ports_in_use.add(port)
        for sock, is_rtcp in ((rtp_sock, False), (rtcp_sock, True)):
            self._fds[sock.fileno()] = (member, is_rtcp)
            if self._poller is not None:
                self._poller.register(sock.fileno(), select.EPOLLIN)
        self._dirty = True
        return port

    async def remove_member(self, member_id: str) -> None:
        member = self._member(member_id)
        if member.rtcp_remote is not None:
            # §6.6: a BYE tells the peer the source is gone.
            self._send_rtcp(member, self._now(), bye=True)
        del self._members[member_id]
        self._ports_in_use.discard(member.port)
        for sock in (member.rtp_sock, member.rtcp_sock):
            fd = sock.fileno()
            self._fds.pop(fd, None)
            if self._poller is not None:
                with contextlib.suppress(OSError):
                    self._poller.unregister(fd)
            sock.close()
        member.row = None
        self._dirty = True

    def members(self, conference: str) -> list[str]:
        found = [m for m in self._members.values() if m.conference == conference]
        return [m.member_id for m in sorted(found, key=lambda m: m.joined)]

    def conferences(self) -> list[str]:
        return sorted({m.conference for m in self._members.values()})

    def set_remote(
        self,
        member_id: str,
        host: str,
        port: int,
        codec: str,
        payload_type: int,
        telephone_event_pt: int | None,
        rtcp_port: int | None = None,
    ) -> None:
        """Where and how to send, from the SDP answer; call again on a re-INVITE.

        `host` must be an IPv4 literal (the SDP c= address). `rtcp_port` defaults to port + 1
        (RFC 3550 §11; RFC 3605 a=rtcp gives another).
        """
        member = self._member(member_id)
        index = CODEC_NAMES.get(codec.upper())
        if index is None:
            raise MediaEngineError(f"unsupported codec {codec}")
        address = ipaddress.IPv4Address(host)
        if index != member.codec or payload_type != member.payload_type:
            member.jitter.reset()
        member.codec = index
        member.silence = bytes([SILENCE_BYTE[index]]) * self.samples
        member.payload_type = payload_type
        member.telephone_event_pt = telephone_event_pt
        if address.is_unspecified or port == 0:
            member.remote = member.rtcp_remote = None
            member.latch = True
        else:
            member.remote = (host, port)
            member.rtcp_remote = (host, rtcp_port if rtcp_port is not None else port + 1)
            member.latch = self.symmetric_rtp
        if not member.negotiated:
            member.negotiated = True
            self._restart_timeout(member)
        self._dirty = True

    def set_muted(self, member_id: str, muted: bool) -> None:
        self._member(member_id).muted = muted
        self._dirty = True

    def set_deaf(self, member_id: str, deaf: bool) -> None:
        self._member(member_id).deaf = deaf
        self._dirty = True

    def set_hold(self, member_id: str, direction: str) -> None:
        """The direction the member's SDP declared: sendrecv, sendonly, recvonly or inactive."""
        if direction not in DIRECTIONS:
            raise MediaEngineError(f"unknown direction {direction}")
        member = self._member(member_id)
        if DIRECTIONS[direction][0] and not DIRECTIONS[member.direction][0]:
            self._restart_timeout(member)  # it resumes sending: give it the full timeout
        member.direction = direction
        self._dirty = True

    def member_state(self, member_id: str) -> MemberState:
        m = self._member(member_id)
        talking = m.row is not None and bool(self._detector.talking[m.row])
        codec = next(name for name, index in CODEC_NAMES.items() if index == m.codec)
        return MemberState(
            conference=m.conference,
            member_id=m.member_id,
            rtp_port=m.port,
            remote=m.remote,
            codec=codec if m.negotiated else None,
            muted=m.muted,
            deaf=m.deaf,
            direction=m.direction,
            talking=talking,
            energy=m.energy,
            packets_received=m.stats.received,
            packets_sent=m.sender.packets,
            packets_lost=max(m.stats.cumulative_lost, 0) if m.stats.ssrc is not None else 0,
            late=m.jitter.late,
            concealed=m.jitter.concealed,
        )

    # -- internals ---------------------------------------------------------------------------

    def _member(self, member_id: str) -> _Member:
        try:
            return self._members[member_id]
        except KeyError:
            raise UnknownMember(member_id) from None

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else time.monotonic()

    def _restart_timeout(self, member: _Member) -> None:
        member.last_rx = self._now()
        member.timed_out = False

    def _emit(self, event: EngineEvent) -> None:
        try:
            self._on_event(event)
        except Exception:
            log.exception("media event handler failed on %r", event)

    def _bind_pair(self) -> tuple[socket.socket, socket.socket, int]:
        first = self.port_min + (self.port_min % 2)
        pairs = (self.port_max - first + 1) // 2
        for k in range(pairs):
            # A rotating start avoids handing a just-freed port (late packets) to a new member.
            index = (self._port_cursor + k) % pairs
            port = first + 2 * index
            if port in self._ports_in_use:
                continue
            socks: list[socket.socket] = []
            try:
                for p in (port, port + 1):
                    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    socks.append(sock)
                    sock.setblocking(False)
                    sock.bind((self.host, p))
            except OSError:
                for sock in socks:
                    sock.close()
                continue
            with contextlib.suppress(OSError):
                socks[0].setsockopt(socket.IPPROTO_IP, socket.IP_TOS, _DSCP_EF)
            self._port_cursor = index + 1
            return socks[0], socks[1], port
        raise NoFreePort(f"no free RTP/RTCP pair in {self.port_min}-{self.port_max}")

    def _on_timer(self) -> None:
        loop = self._loop
        if loop is None:
            return
        started = loop.time()
        if started - self._next_at > self.ptime:
            self.stats.late_ticks += 1
        try:
            self._tick(started)
        except Exception:
            log.exception("media tick failed")
        self.stats.ticks += 1
        self.stats.tick_seconds += loop.time() - started
        self._next_at += self.ptime
        lag = loop.time() - self._next_at
        if lag > _MAX_LAG * self.ptime:
            skipped = int(lag / self.ptime)
            self.stats.skipped_ticks += skipped
            self._next_at += skipped * self.ptime
        self._timer = loop.call_at(self._next_at, self._on_timer)

    def _tick(self, now: float) -> None:
        self._receive(now)
        if self._dirty:
            self._rebuild()
        if self._order:
            self._mix_and_send()
        if self.stats.ticks % _HOUSEKEEPING_TICKS == 0:
            self._housekeeping(now)

    def _receive(self, now: float) -> None:
        poller = self._poller
        if poller is None:
            return
        fds = self._fds
        for _ in range(_MAX_POLL_ROUNDS):
            ready = poller.poll(0)
            if not ready:
                return
            for fd, _events in ready:
                entry = fds.get(fd)
                if entry is None:
                    continue
                member, is_rtcp = entry
                try:
                    if is_rtcp:
                        data, addr = member.rtcp_sock.recvfrom(_RECV_SIZE)
                    else:
                        data, addr = member.rtp_sock.recvfrom(_RECV_SIZE)
                except OSError:
                    continue
                if is_rtcp or 192 <= data[1] <= 223:  # RFC 5761 §4: RTCP muxed on the RTP port
                    self._on_rtcp(member, data, addr, now)
                else:
                    self._on_rtp(member, data, addr, now)

    def _on_rtp(self, member: _Member, data: bytes, addr: tuple[str, int], now: float) -> None:
        try:
            pt, _marker, seq, ts, ssrc, start, end = parse_header(data)
        except RtpError:
            member.bad_packets += 1
            return
        self.stats.packets_in += 1
        if member.latch and member.remote != addr:
            member.remote = addr
            member.rtcp_remote = (addr[0], addr[1] + 1)
            self._dirty = True
        member.last_rx = now
        member.stats.update(ssrc, seq, ts, now)
        if pt == member.payload_type:
            member.jitter.push(ssrc, seq, data[start:end])
        elif pt == member.telephone_event_pt and pt is not None:
            self._on_telephone_event(member, ts, data[start:end])

    def _on_telephone_event(self, member: _Member, timestamp: int, payload: bytes) -> None:
        try:
            event = TelephoneEvent.parse(payload)
        except RtpError:
            member.bad_packets += 1
            return
        # RFC 4733 §2.5.1.4: the end packet is sent three times; one event = one timestamp.
        if event.end and timestamp != member.dtmf_ts:
            member.dtmf_ts = timestamp
            digit = event.digit
            if digit is not None:
                self._emit(
                    DtmfReceived(
                        member.conference,
                        member.member_id,
                        digit,
                        event.duration * 1000 // member.stats.clock_rate,
                    )
                )

    def _on_rtcp(self, member: _Member, data: bytes, addr: tuple[str, int], now: float) -> None:
        try:
            packets: list[RtcpPacket] = parse_compound(data)
        except RtcpError:
            member.bad_packets += 1
            return
        if member.latch and member.rtcp_remote != addr:
            member.rtcp_remote = addr
        for packet in packets:
            if isinstance(packet, SenderReport) and packet.ssrc == member.stats.ssrc:
                member.stats.on_sender_report(packet.ntp_timestamp, now)

    def _rebuild(self) -> None:
        """Recompute the per-tick arrays: rows grouped by conference, in join order."""
        order = sorted(self._members.values(), key=lambda m: (m.conference, m.joined))
        sizes = [len(list(group)) for _, group in itertools.groupby(order, lambda m: m.conference)]
        old_rows = [m.row if m.row is not None else -1 for m in order]
        self._detector = self._detector.reordered(old_rows)
        for row, member in enumerate(order):
            member.row = row
        self._order = order
        self._layout = ConferenceLayout.from_sizes(sizes)
        self._codec = np.array([m.codec for m in order], dtype=np.intp)
        self._speaks = np.array([m.sends and not m.muted for m in order], dtype=np.bool_)
        self._hears = np.array([m.receives and not m.deaf for m in order], dtype=np.bool_)
        size = _RTP_HEADER_SIZE + self.samples
        # At least one row: memoryview.cast refuses a zero-length shape (last member gone).
        self._packets = np.zeros((max(1, len(order)), size), dtype=np.uint8)
        self._packet_view = self._packets.data.cast("B")
        self._senders = [
            (row * size, m, m.payload_type, m.remote)
            for row, m in enumerate(order)
            if m.receives and m.payload_type is not None and m.remote is not None
        ]
        self._idle = [m for m in order if not m.receives]
        self._dirty = False

    def _mix_and_send(self) -> None:
        samples = self.samples
        chunks = []
        for member in self._order:
            frame = member.jitter.pop()
            if frame is None:
                frame = member.silence
            elif len(frame) != samples:
                # Only the negotiated ptime is played; other sizes are cut or padded.
                frame = frame[:samples].ljust(samples, member.silence[:1])
            chunks.append(frame)
        raw = np.frombuffer(b"".join(chunks), dtype=np.uint8).reshape(len(chunks), samples)
        pcm = decode_rows(raw, self._codec)
        rms = frame_rms(pcm)
        started, stopped = self._detector.update(rms, self._speaks)
        if started.size or stopped.size:
            for row in started.tolist():
                m = self._order[row]
                self._emit(TalkingChanged(m.conference, m.member_id, True))
            for row in stopped.tolist():
                m = self._order[row]
                self._emit(TalkingChanged(m.conference, m.member_id, False))
        mixed = mix_minus(pcm, self._layout, self._speaks, self._hears)
        self._packets[:, _RTP_HEADER_SIZE:] = encode_rows(mixed, self._codec)
        view = self._packet_view
        size = _RTP_HEADER_SIZE + samples
        pack_into = _RTP_HEADER.pack_into
        sent = 0
        for offset, member, payload_type, remote in self._senders:
            sender = member.sender
            seq, ts, marker = sender.advance(samples)
            pack_into(
                view, offset, 0x80, payload_type | (0x80 if marker else 0), seq, ts, sender.ssrc
            )
            try:
                member.rtp_sock.sendto(view[offset : offset + size], remote)
                sent += 1
            except OSError:
                member.send_errors += 1  # UDP: a full buffer or an ICMP error drops the frame
        self.stats.packets_out += sent
        for member in self._idle:
            member.sender.skip()
        # Energy for `conference list`, updated in one pass only every housekeeping period.
        if self.stats.ticks % _HOUSEKEEPING_TICKS == 0:
            for member, level in zip(self._order, rms.tolist(), strict=True):
                member.energy = int(level)

    def _housekeeping(self, now: float) -> None:
        for member in list(self._members.values()):
            if member.sends and not member.timed_out and now - member.last_rx > self.media_timeout:
                member.timed_out = True
                self._emit(MediaTimeout(member.conference, member.member_id))
            if member.rtcp_remote is not None and now >= member.next_rtcp:
                self._send_rtcp(member, now)
                member.next_rtcp = now + self.rtcp_interval * random.uniform(0.5, 1.5)

    def _send_rtcp(self, member: _Member, now: float, *, bye: bool = False) -> None:
        block = member.stats.report_block(now)
        blocks = [block] if block is not None else []
        sender = member.sender
        report: SenderReport | ReceiverReport
        if sender.packets:
            report = SenderReport(
                sender.ssrc,
                ntp_from_unix(time.time()),
                sender.timestamp,
                sender.packets,
                sender.octets,
                blocks,
            )
        else:
            report = ReceiverReport(sender.ssrc, blocks)
        # §6.1: a compound packet starts with SR/RR and carries the CNAME.
        data = bytes(report) + bytes(SourceDescription.cname(sender.ssrc, self.cname))
        if bye:
            data += bytes(Bye([sender.ssrc]))
        if member.rtcp_remote is None:
            return
        try:
            member.rtcp_sock.sendto(data, member.rtcp_remote)
        except OSError:
            member.send_errors += 1
