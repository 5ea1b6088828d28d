"""The media engine over real loopback UDP: three "phones" send tones and record the mix."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Iterable

import numpy as np
import pytest

from app.mrfp.builtin.engine import (
    DtmfReceived,
    EngineEvent,
    MediaEngine,
    MediaTimeout,
    TalkingChanged,
)
from app.mrfp.builtin.g711 import ulaw_decode, ulaw_encode
from app.mrfp.builtin.rtcp import SenderReport, SourceDescription, parse_compound
from app.mrfp.builtin.rtp import RtpPacket, TelephoneEvent
from tests.support.ports import free_port

RATE = 8000
FRAME = 160


def port_range(count: int) -> int:
    """First of `count` consecutive free UDP ports. (`free_port_range` insists on an even first
    port, but Linux hands out odd ports for bind(0), so it finds none; the engine aligns RTP to
    even ports itself.)"""
    for _ in range(200):
        first = free_port()
        socks = []
        try:
            for port in range(first, first + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return first
    raise RuntimeError(f"no run of {count} free UDP ports")


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


class Phone:
    """A UDP endpoint that sends a PCMU tone and keeps what it receives."""

    def __init__(self, freq: float, amplitude: float = 6000.0) -> None:
        self.freq = freq
        self.amplitude = amplitude
        self.sock = _udp()
        self.rtcp = _udp()
        self.port: int = self.sock.getsockname()[1]
        self.rtcp_port: int = self.rtcp.getsockname()[1]
        self.seq = secrets.randbits(16)
        self.ts = secrets.randbits(32)
        self.ssrc = secrets.randbits(32)
        self.n = 0
        self.payloads: list[bytes] = []
        self.rtcp_packets: list[bytes] = []
        self.target: int | None = None

    def send_frame(self) -> None:
        assert self.target is not None
        t = (self.n + np.arange(FRAME)) / RATE
        pcm = (self.amplitude * np.sin(2 * np.pi * self.freq * t)).astype(np.int16)
        self.n += FRAME
        packet = RtpPacket(0, self.seq, self.ts, self.ssrc, ulaw_encode(pcm).tobytes())
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + FRAME) & 0xFFFFFFFF
        self.sock.sendto(bytes(packet), ("127.0.0.1", self.target))

    def drain(self) -> None:
        for sock, out in ((self.sock, None), (self.rtcp, self.rtcp_packets)):
            while True:
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    break
                if out is None:
                    self.payloads.append(RtpPacket.parse(data).payload)
                else:
                    out.append(data)

    def recording(self) -> np.ndarray:
        return ulaw_decode(b"".join(self.payloads)).astype(np.float64)

    def close(self) -> None:
        self.sock.close()
        self.rtcp.close()


def band_energy(signal: np.ndarray, freq: float, width: float = 25.0) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal)))) ** 2
    freqs = np.fft.rfftfreq(len(signal), 1 / RATE)
    return float(spectrum[(freqs > freq - width) & (freqs < freq + width)].sum())


async def run_phones(phones: Iterable[Phone], seconds: float, senders: Iterable[Phone]) -> None:
    """Send one frame per 20 ms from `senders` (catching up if the loop was late)."""
    loop = asyncio.get_running_loop()
    phones, senders = list(phones), list(senders)
    start = loop.time()
    frames = 0
    while loop.time() - start < seconds:
        due = int((loop.time() - start) / 0.02) + 1
        while frames < due:
            for phone in senders:
                phone.send_frame()
            frames += 1
        for phone in phones:
            phone.drain()
        await asyncio.sleep(max(0.0, start + frames * 0.02 - loop.time()))
    for phone in phones:
        phone.drain()


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@pytest.fixture
async def engine_events() -> AsyncIterator[tuple[MediaEngine, list[EngineEvent]]]:
    events: list[EngineEvent] = []
    first = port_range(21)
    engine = MediaEngine(
        "127.0.0.1",
        first,
        first + 20,
        media_timeout=30.0,
        on_event=events.append,
        rtcp_interval=0.2,
    )
    await engine.start()
    try:
        yield engine, events
    finally:
        await engine.stop()


async def test_each_member_hears_the_others_not_itself_and_mute_removes_a_tone(
    engine_events: tuple[MediaEngine, list[EngineEvent]],
) -> None:
    engine, events = engine_events
    tones = {"a": 440.0, "b": 660.0, "c": 880.0}
    phones = {name: Phone(freq) for name, freq in tones.items()}
    try:
        for name, phone in phones.items():
            phone.target = await engine.add_member("conf1", name)
            engine.set_remote(name, "127.0.0.1", phone.port, "PCMU", 0, 101, phone.rtcp_port)
        assert engine.members("conf1") == ["a", "b", "c"]

        await run_phones(phones.values(), 1.6, phones.values())
        for name, phone in phones.items():
            heard = phone.recording()[int(0.4 * RATE) :]  # past the jitter buffer's start
            assert len(heard) >= 0.6 * RATE, f"{name} got too little audio"
            own = band_energy(heard, tones[name])
            for other, freq in tones.items():
                if other != name:
                    assert band_energy(heard, freq) > 30 * own, (name, other)
        await wait_for(
            lambda: (
                {e.member_id for e in events if isinstance(e, TalkingChanged)} == {"a", "b", "c"}
            )
        )
        assert all(e.talking for e in events if isinstance(e, TalkingChanged))

        engine.set_muted("a", True)
        for phone in phones.values():
            phone.payloads.clear()
        await run_phones(phones.values(), 1.6, phones.values())
        for name in ("b", "c"):
            heard = phones[name].recording()[int(0.4 * RATE) :]
            other = "c" if name == "b" else "b"
            assert band_energy(heard, tones[other]) > 30 * band_energy(heard, tones["a"]), name
        heard_a = phones["a"].recording()[int(0.4 * RATE) :]
        assert band_energy(heard_a, tones["b"]) > 30 * band_energy(heard_a, tones["a"])
        assert band_energy(heard_a, tones["c"]) > 30 * band_energy(heard_a, tones["a"])
        assert TalkingChanged("conf1", "a", False) in events
        assert engine.member_state("a").muted and not engine.member_state("a").talking

        # RTCP: compound SR + SDES CNAME reached each phone (rtcp_interval is 0.2 s here).
        reports = [parse_compound(data) for data in phones["b"].rtcp_packets]
        assert reports
        assert any(
            isinstance(p[0], SenderReport) and isinstance(p[1], SourceDescription) for p in reports
        )
    finally:
        for phone in phones.values():
            phone.close()


async def test_silent_member_times_out_and_sending_member_does_not() -> None:
    events: list[EngineEvent] = []
    first = port_range(11)
    engine = MediaEngine("127.0.0.1", first, first + 10, media_timeout=0.4, on_event=events.append)
    await engine.start()
    talker, silent = Phone(440.0), Phone(660.0)
    try:
        talker.target = await engine.add_member("c2", "talker")
        silent.target = await engine.add_member("c2", "silent")
        for name, phone in (("talker", talker), ("silent", silent)):
            engine.set_remote(name, "127.0.0.1", phone.port, "PCMU", 0, None)
        await run_phones([talker, silent], 1.5, [talker])
        await wait_for(lambda: MediaTimeout("c2", "silent") in events)
        assert MediaTimeout("c2", "talker") not in events
        assert events.count(MediaTimeout("c2", "silent")) == 1
    finally:
        await engine.stop()
        talker.close()
        silent.close()


async def test_hold_stops_sending_and_dtmf_is_reported_not_mixed(
    engine_events: tuple[MediaEngine, list[EngineEvent]],
) -> None:
    engine, events = engine_events
    a, b = Phone(440.0), Phone(660.0)
    try:
        a.target = await engine.add_member("c3", "a")
        b.target = await engine.add_member("c3", "b")
        engine.set_remote("a", "127.0.0.1", a.port, "PCMU", 0, 101)
        engine.set_remote("b", "127.0.0.1", b.port, "PCMU", 0, 101)
        await run_phones([a, b], 0.4, [a, b])
        assert a.payloads and b.payloads

        # RFC 4733: the end packet three times; one digit comes out.
        for _ in range(3):
            event = TelephoneEvent(event=5, end=True, volume=10, duration=800)
            packet = RtpPacket(101, a.seq, a.ts, a.ssrc, bytes(event))
            a.seq += 1
            a.sock.sendto(bytes(packet), ("127.0.0.1", a.target))
        await wait_for(lambda: any(isinstance(e, DtmfReceived) for e in events))
        await asyncio.sleep(0.1)
        assert [e for e in events if isinstance(e, DtmfReceived)] == [
            DtmfReceived("c3", "a", "5", 100)
        ]

        engine.set_hold("b", "sendonly")  # b holds: we stop sending to it
        await run_phones([a, b], 0.2, [a, b])
        b.payloads.clear()
        await run_phones([a, b], 0.5, [a, b])
        assert b.payloads == []
        engine.set_hold("b", "sendrecv")
        await run_phones([a, b], 0.5, [a, b])
        assert b.payloads
    finally:
        a.close()
        b.close()


async def test_idle_and_emptied_engine_keeps_ticking(
    engine_events: tuple[MediaEngine, list[EngineEvent]], caplog: pytest.LogCaptureFixture
) -> None:
    # No member at all, then one that leaves: the shared clock must not fail on zero rows.
    engine, _ = engine_events
    await asyncio.sleep(0.1)
    await engine.add_member("c5", "1")
    await engine.remove_member("1")
    ticks = engine.stats.ticks
    await asyncio.sleep(0.1)
    assert engine.stats.ticks > ticks
    assert "media tick failed" not in caplog.text


async def test_ports_are_even_pairs_and_released(
    engine_events: tuple[MediaEngine, list[EngineEvent]],
) -> None:
    engine, _ = engine_events
    ports = [await engine.add_member("c4", str(i)) for i in range(10)]
    assert all(p % 2 == 0 for p in ports) and len(set(ports)) == 10
    with pytest.raises(Exception, match="no free"):
        await engine.add_member("c4", "extra")
    await engine.remove_member("3")
    assert await engine.add_member("c4", "extra") == ports[3]
    assert "3" not in engine.members("c4")


async def test_unroutable_sdp_address_latches_to_the_rtp_source(
    engine_events: tuple[MediaEngine, list[EngineEvent]],
) -> None:
    engine, _ = engine_events
    a, b = Phone(440.0), Phone(660.0)
    try:
        a.target = await engine.add_member("c5", "a")
        b.target = await engine.add_member("c5", "b")
        engine.set_remote("a", "0.0.0.0", 4000, "PCMU", 0, None)  # e.g. a UE behind NAT
        engine.set_remote("b", "127.0.0.1", b.port, "PCMU", 0, None)
        await run_phones([a, b], 1.0, [a, b])
        assert engine.member_state("a").remote == ("127.0.0.1", a.port)
        heard = a.recording()[int(0.4 * RATE) :]
        assert band_energy(heard, 660.0) > 30 * band_energy(heard, 440.0)
    finally:
        a.close()
        b.close()
