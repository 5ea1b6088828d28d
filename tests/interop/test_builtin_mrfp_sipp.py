"""The `mrfp-builtin` process driven as the MRFC-AS drives FreeSWITCH: SIPp places the legs
(with and without 100rel, and a late offer), a Python UDP socket per leg plays the RTP side,
and an ESL client sees the members come, kicks them, and sees them go."""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from app.mrfp.builtin.g711 import ulaw_decode, ulaw_encode
from app.mrfp.esl import EslClientParser, EslEvent, Frame, parse_event
from tests.support.ports import free_port, free_port_range
from tests.support.sipp import header_values, sipp_available, start_sipp

pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.skipif(not sipp_available(), reason="sipp (Debian sip-tester) is not installed"),
]

SCENARIOS = Path(__file__).parent / "scenarios" / "mrfp"
ROOT = Path(__file__).resolve().parents[2]
WAIT = 30.0


@dataclass
class Mrfp:
    proc: subprocess.Popen[bytes]
    sip_port: int
    esl_port: int
    log: Path


def _read_ready(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise TimeoutError("mrfp-builtin did not print its ready line")
        return proc.stdout.readline().decode()
    finally:
        sel.close()


@pytest.fixture
def mrfp(tmp_path: Path) -> Iterator[Mrfp]:
    sip_port, esl_port = free_port(), free_port()
    rtp_low = free_port_range(40)
    log = tmp_path / "mrfp.log"
    args = [
        sys.executable, "-m", "app.mrfp.builtin.main",
        "--sip-port", str(sip_port), "--esl-port", str(esl_port),
        "--rtp-ports", f"{rtp_low}-{rtp_low + 39}", "--media-timeout", "0",
        "--log-level", "DEBUG",
        # The scenarios follow the recorded FreeSWITCH calls, whose dialplan ran pre_answer
        # (a 183 with the answer, reliable with 100rel) before answer.
        "--pre-answer",
    ]  # fmt: skip
    with log.open("wb") as err:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, cwd=ROOT)
    try:
        line = _read_ready(proc, WAIT)
        assert line.strip() == f"ready sip=127.0.0.1:{sip_port} esl=127.0.0.1:{esl_port}", (
            line + log.read_text()
        )
        yield Mrfp(proc, sip_port, esl_port, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
    # Nothing went wrong inside the process (a failed tick, a failed handler).
    errors = [line for line in log.read_text().splitlines() if " ERROR " in line]
    assert not errors, "\n".join(errors)
    assert proc.returncode == 0


class Esl:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parser = EslClientParser()
        self.frames: list[Frame] = []
        self.events: list[EslEvent] = []

    async def _frame(self) -> Frame:
        while not self.frames:
            data = await asyncio.wait_for(self.reader.read(65536), WAIT)
            if not data:
                raise ConnectionError("ESL closed")
            self.frames += self.parser.feed(data)
        return self.frames.pop(0)

    async def command(self, line: str) -> Frame:
        self.writer.write(line.encode() + b"\n\n")
        await self.writer.drain()
        while True:
            frame = await self._frame()
            if frame.content_type.startswith("text/event-"):
                self.events.append(parse_event(frame))
                continue
            return frame

    async def event(self, action: str, seen: int = 0) -> EslEvent:
        """The next event with `action` after the first `seen` ones of that action."""
        while True:
            matching = [e for e in self.events if e.get("Action") == action]
            if len(matching) > seen:
                return matching[seen]
            frame = await self._frame()
            if frame.content_type.startswith("text/event-"):
                self.events.append(parse_event(frame))


@pytest.fixture
async def esl(mrfp: Mrfp) -> AsyncIterator[Esl]:
    reader, writer = await asyncio.open_connection("127.0.0.1", mrfp.esl_port)
    client = Esl(reader, writer)
    assert (await client._frame()).content_type == "auth/request"
    assert (await client.command("auth ClueCon")).reply_text == "+OK accepted"
    reply = await client.command("event plain CUSTOM conference::maintenance")
    assert reply.reply_text == "+OK event listener enabled plain"
    try:
        yield client
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def rtp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", free_port()))
    sock.setblocking(False)
    return sock


def tone_packets(freq: float, count: int, ssrc: int) -> list[bytes]:
    t = np.arange(160 * count) / 8000.0
    samples = (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    payload = ulaw_encode(samples).tobytes()
    return [
        struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + payload[seq * 160 : seq * 160 + 160]
        for seq in range(count)
    ]


async def play_and_listen(
    send: socket.socket, dest: tuple[str, int], listen: socket.socket, seconds: float
) -> list[bytes]:
    """Send a 440 Hz tone to `dest` in 20 ms packets while collecting what `listen` gets."""
    loop = asyncio.get_running_loop()
    received: list[bytes] = []
    packets = tone_packets(440.0, int(seconds * 50), 0x1234)
    start = loop.time()
    for index, packet in enumerate(packets):
        send.sendto(packet, dest)
        while True:
            try:
                received.append(listen.recv(2048))
            except BlockingIOError:
                break
        await asyncio.sleep(max(0.0, start + (index + 1) * 0.02 - loop.time()))
    return received


async def test_two_legs_join_hear_each_other_and_are_kicked(
    mrfp: Mrfp, esl: Esl, tmp_path: Path
) -> None:
    sock_a, sock_b = rtp_socket(), rtp_socket()
    a = start_sipp(
        SCENARIOS / "uac_join_100rel_wait_bye.xml",
        tmp_path / "a",
        remote=f"127.0.0.1:{mrfp.sip_port}",
        keys={"conf": "room1", "participant": "pa", "rtp_port": str(sock_a.getsockname()[1])},
        timeout=60.0,
    )
    b = start_sipp(
        SCENARIOS / "uac_join_wait_bye.xml",
        tmp_path / "b",
        remote=f"127.0.0.1:{mrfp.sip_port}",
        keys={"conf": "room1", "participant": "pb", "rtp_port": str(sock_b.getsockname()[1])},
        timeout=60.0,
    )
    try:
        first = await asyncio.wait_for(esl.event("add-member"), WAIT)
        second = await asyncio.wait_for(esl.event("add-member", 1), WAIT)
        assert (await asyncio.wait_for(esl.event("conference-create"), WAIT))[
            "Conference-Name"
        ] == "room1"
        by_participant = {e["variable_sip_h_X-Participant"]: e for e in (first, second)}
        assert set(by_participant) == {"pa", "pb"}
        for event in (first, second):
            assert event["Conference-Name"] == "room1"
            assert event["variable_sip_call_id"]
        port_a = int(by_participant["pa"]["variable_local_media_port"])
        # A talks (440 Hz to its media port); B's socket must hear it in the mix.
        heard = await play_and_listen(sock_a, ("127.0.0.1", port_a), sock_b, 2.0)
        assert len(heard) > 20, f"only {len(heard)} RTP packets reached B"
        payloads = np.concatenate([ulaw_decode(p[12:]) for p in heard if len(p) > 12])
        assert np.abs(payloads.astype(np.int32)).max() > 1000, "B heard only silence"
        listing = (await esl.command("api conference room1 list")).text
        assert len(listing.splitlines()) == 2
        for event in (first, second):
            member = event["Member-ID"]
            reply = await esl.command(f"api conference room1 kick {member}")
            assert reply.text == f"+OK kicked {member}\n"
        await asyncio.wait_for(esl.event("conference-destroy"), WAIT)
        actions = [e["Action"] for e in esl.events]
        assert actions.count("kick-member") == 2 and actions.count("del-member") == 2
        res_a = await asyncio.to_thread(a.wait)
        res_b = await asyncio.to_thread(b.wait)
        assert res_a.ok, res_a.report()
        assert res_b.ok, res_b.report()
        for res in (res_a, res_b):
            (bye,) = res.received_requests("BYE")
            assert header_values(bye, "Reason") == ['Q.850;cause=16;text="NORMAL_CLEARING"']
    finally:
        a.stop()
        b.stop()
        sock_a.close()
        sock_b.close()


async def test_late_offer_leg_joins_and_leaves_with_bye(
    mrfp: Mrfp, esl: Esl, tmp_path: Path
) -> None:
    sock = rtp_socket()
    uac = start_sipp(
        SCENARIOS / "uac_late_offer_bye.xml",
        tmp_path / "late",
        remote=f"127.0.0.1:{mrfp.sip_port}",
        keys={
            "conf": "late1",
            "participant": "pl",
            "rtp_port": str(sock.getsockname()[1]),
        },
        timeout=60.0,
    )
    try:
        added = await asyncio.wait_for(esl.event("add-member"), WAIT)
        assert added["Conference-Name"] == "late1"
        assert added["Caller-Destination-Number"] == "conf-late1"
        removed = await asyncio.wait_for(esl.event("del-member"), WAIT)
        assert removed["Answer-State"] == "hangup"
        await asyncio.wait_for(esl.event("conference-destroy"), WAIT)
        res = await asyncio.to_thread(uac.wait)
        assert res.ok, res.report()
        (ok,) = [m for m in res.received() if m.startswith("SIP/2.0 200") and "INVITE" in m]
        assert "RTP/AVP 0 8 101" in ok
    finally:
        uac.stop()
        sock.close()


async def test_tcp_leg_with_100rel_is_kicked_over_its_connection(
    mrfp: Mrfp, esl: Esl, tmp_path: Path
) -> None:
    sock = rtp_socket()
    uac = start_sipp(
        SCENARIOS / "uac_join_100rel_wait_bye.xml",
        tmp_path / "tcp",
        remote=f"127.0.0.1:{mrfp.sip_port}",
        transport="t1",
        keys={"conf": "room2", "participant": "pt", "rtp_port": str(sock.getsockname()[1])},
        timeout=60.0,
    )
    try:
        added = await asyncio.wait_for(esl.event("add-member"), WAIT)
        assert added["variable_sip_via_protocol"] == "tcp"
        member = added["Member-ID"]
        reply = await esl.command(f"api conference room2 kick {member}")
        assert reply.text == f"+OK kicked {member}\n"
        res = await asyncio.to_thread(uac.wait)
        assert res.ok, res.report()
        (bye,) = res.received_requests("BYE")
        assert "SIP/2.0/TCP" in header_values(bye, "Via")[0]
    finally:
        uac.stop()
        sock.close()
