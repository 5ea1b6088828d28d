"""Talking members one core carries in real time with the built-in media processor (issue 6:
goal >= 300 per core; FreeSWITCH 1.10 does about 200 in conferences of 5).

The real engine (`app.mrfp.builtin.engine.MediaEngine`) runs conferences of 5 on loopback UDP:
every member has its own RTP/RTCP socket pair and receives a PCMU tone, 20 ms packets, from a
generator in another process; the engine sends every member its N-1 mix to a sink socket. The
engine's process CPU time over a measuring window gives CPU per member; members per core is
100% divided by that.

Counted (engine process): epoll + recvfrom per packet, RTP header parse, jitter buffer, G.711
decode/encode, N-1 mixing, talk detection, RTP header build, sendto per packet (the kernel's
loopback send path), RTCP reports, the asyncio timer. Not counted: the packet generator (another
process), SIP and ESL signalling.

    .venv/bin/python tests/bench/bench_mixer.py [members ...]
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np

from app.mrfp.builtin.engine import EngineEvent, MediaEngine
from app.mrfp.builtin.g711 import ulaw_encode

CONFERENCE_SIZE = 5
WARMUP = 1.5
WINDOW = 5.0
PORT_MIN, PORT_MAX = 30000, 39999


def generate(ports: list[int], seconds: float, ready: mp.synchronize.Event) -> None:
    """Send one 20 ms PCMU frame per member port every 20 ms (another process)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    t = np.arange(160 * 50) / 8000
    tone = ulaw_encode((8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)).tobytes()
    frames = [tone[i * 160 : (i + 1) * 160] for i in range(50)]
    packet = bytearray(12 + 160)
    header = struct.Struct("!BBHII")
    targets = [("127.0.0.1", p) for p in ports]
    ready.set()
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        packet[12:] = frames[n % 50]
        for i, target in enumerate(targets):
            header.pack_into(packet, 0, 0x80, 0, n & 0xFFFF, (n * 160) & 0xFFFFFFFF, i + 1)
            with contextlib.suppress(OSError):
                sock.sendto(packet, target)
        n += 1
        delay = start + n * 0.02 - time.monotonic()
        if delay > 0:
            time.sleep(delay)


async def measure(members: int) -> dict[str, float]:
    events: list[EngineEvent] = []
    engine = MediaEngine("127.0.0.1", PORT_MIN, PORT_MAX, on_event=events.append)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))  # never read: the kernel drops what overflows
    sink_port = sink.getsockname()[1]
    await engine.start()
    ports = []
    for i in range(members):
        member = f"m{i}"
        ports.append(await engine.add_member(f"conf{i // CONFERENCE_SIZE}", member))
        engine.set_remote(member, "127.0.0.1", sink_port, "PCMU", 0, 101)
    ready = mp.get_context("spawn").Event()
    gen = mp.get_context("spawn").Process(
        target=generate, args=(ports, WARMUP + WINDOW + 1.0, ready), daemon=True
    )
    gen.start()
    try:
        await asyncio.get_running_loop().run_in_executor(None, ready.wait, 30.0)
        await asyncio.sleep(WARMUP)
        stats = engine.stats
        cpu0, wall0 = time.process_time(), time.monotonic()
        ticks0, late0, skip0 = stats.ticks, stats.late_ticks, stats.skipped_ticks
        in0, out0 = stats.packets_in, stats.packets_out
        await asyncio.sleep(WINDOW)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        return {
            "cpu": cpu / wall,
            "ticks": stats.ticks - ticks0,
            "expected_ticks": wall / 0.02,
            "late": stats.late_ticks - late0,
            "skipped": stats.skipped_ticks - skip0,
            "in_pps": (stats.packets_in - in0) / wall,
            "out_pps": (stats.packets_out - out0) / wall,
            "talking": sum(engine.member_state(f"m{i}").talking for i in range(members)),
        }
    finally:
        gen.join(timeout=10)
        if gen.is_alive():
            gen.terminate()
        await engine.stop()
        sink.close()


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [100, 300, 600]
    best = None
    for members in sizes:
        r = asyncio.run(measure(members))
        per_member = r["cpu"] / members
        # Real time: every 20 ms frame went out (a late tick that catches up still delivers;
        # "late" counts ticks that started over 20 ms behind, e.g. when other work ran).
        realtime = r["skipped"] == 0 and r["ticks"] >= 0.99 * r["expected_ticks"]
        print(
            f"mixer: {members} members in {members // CONFERENCE_SIZE} conferences of "
            f"{CONFERENCE_SIZE}, {r['talking']:.0f} talking: engine CPU {100 * r['cpu']:.1f}% "
            f"of a core, {100 * per_member:.3f}% per member; RTP in {r['in_pps']:.0f}/s, "
            f"out {r['out_pps']:.0f}/s; ticks {r['ticks']:.0f}/{r['expected_ticks']:.0f}, "
            f"late {r['late']:.0f}, skipped {r['skipped']:.0f}"
            f"{'' if realtime else ' (NOT keeping up)'}"
        )
        if realtime and (best is None or members > best[0]):
            best = (members, per_member)
    if best is None:
        print("mixer: no run kept up in real time")
        return
    members, per_member = best
    print(
        f"mixer: {CONFERENCE_SIZE}-member conferences, {int(1 / per_member)} talking members in "
        f"real time on one core (CPU {100 * per_member:.3f}% per member, measured at {members}; "
        "counts RTP receive/parse, jitter buffer, G.711, N-1 mix, talk detection, RTP "
        "build/sendto, RTCP; not the packet generator or SIP/ESL)"
    )


if __name__ == "__main__":
    main()
