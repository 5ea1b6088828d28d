"""CPU per FreeSWITCH event in the FreeSWITCH adapter: the asyncio loop that reads the events,
and greenswitch's hub thread.

A local TCP server plays FreeSWITCH (auth, the event subscription), then sends recorded
`conference::maintenance` frames (../shared/fixtures/freeswitch/events-verbose/, the format
the media processor sends with verbose-events on) to a `FreeSwitchNode`, one join+leave at a
time: add-member + floor-change, then floor-change to nobody + del-member, each member with its
own Member-ID and Call-ID. Measured over the whole run, divided by the events sent:
- loop: the CPU time of the asyncio thread (socket reads, cutting frames, the headers the
  mapper reads, mapping to media events, the sink), the loop being otherwise idle;
- hub: the CPU time of the node's `esl-<name>` thread (greenswitch's gevent hub), which sends
  commands and no longer touches events: it should stay at zero.
`paced` waits until the focus side has seen each half (join or leave) before sending the next,
so every half arrives on its own as under the join benchmark; `burst` sends everything at once.

    .venv/bin/python tests/bench/bench_esl.py [--joins 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.focus.media import MediaEvent, MemberAdded, MemberRemoved
from app.mrfp.esl import parse_event, render_event_plain
from app.mrfp.esl.frames import Frame
from app.mrfp.freeswitch import FreeSwitchNode
from tests.support.esl_replay import recorded_event
from tests.support.stack import read_esl_frame

EVENTS = "events-verbose"


def _frame(name: str, member: str | None = None) -> bytes:
    """A recorded frame, with another Member-ID and Call-ID when `member` is given."""
    event = parse_event(Frame.parse(recorded_event(f"{EVENTS}/{name}.txt")))
    if member is None:
        return render_event_plain(event.headers, event.body)
    renamed = {"Member-ID": member, "variable_sip_call_id": f"call-{member}@bench"}
    headers = [(k, renamed.get(k, v)) for k, v in event.headers]
    return render_event_plain(headers, event.body)


def join_leave_frames(joins: int) -> list[tuple[bytes, bytes]]:
    """(join half, leave half) per join: 2 event frames each."""
    floor_to = _frame("plain-03-floor-change")
    floor_none = _frame("plain-04-floor-change")
    out = []
    for i in range(joins):
        member = str(100 + i)
        out.append(
            (
                _frame("plain-02-add-member", member) + floor_to,
                floor_none + _frame("plain-05-del-member", member),
            )
        )
    return out


class FakeFreeSwitch:
    """Accepts one ESL client, authenticates it, then sends what it is handed."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.conn: socket.socket | None = None
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fake-fs", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(b"Content-Type: auth/request\n\n")
        buf = bytearray()
        for reply in (b"+OK accepted", b"+OK event listener enabled plain"):
            read_esl_frame(conn, buf)  # auth, then the event subscription
            conn.sendall(b"Content-Type: command/reply\nReply-Text: " + reply + b"\n\n")
        self.conn = conn
        self.ready.set()

    def close(self) -> None:
        for sock in (self.conn, self.listener):
            if sock is not None:
                sock.close()


class Counter:
    """The node's event sink: counts member events, wakes the sender thread."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.reached = threading.Event()

    def __call__(self, event: MediaEvent) -> None:
        if isinstance(event, MemberAdded | MemberRemoved):
            self.count += 1
            if self.count >= self.target:
                self.reached.set()


def _send_all(
    fs: FakeFreeSwitch, halves: list[bytes], counter: Counter, paced: bool, base: int
) -> None:
    assert fs.conn is not None
    if not paced:
        fs.conn.sendall(b"".join(halves))
        return
    for i, half in enumerate(halves, 1):
        counter.target = base + i
        counter.reached.clear()
        if counter.count >= counter.target:
            continue
        fs.conn.sendall(half)
        if not counter.reached.wait(30.0):
            raise TimeoutError("events did not come through")


async def run(joins: int, repeat: int) -> None:
    fs = FakeFreeSwitch()
    counter = Counter()
    node = FreeSwitchNode("bench", "127.0.0.1", fs.port, "ClueCon", backoff_jitter=0.0)
    await node.start(counter)
    try:
        if not await node.wait_connected(10.0):
            raise RuntimeError("node did not connect")
        await asyncio.to_thread(fs.ready.wait, 10.0)
        thread = node._thread
        assert thread is not None and thread.ident is not None
        reader_clock = time.pthread_getcpuclockid(thread.ident)
        warm = [h for pair in join_leave_frames(200) for h in pair]
        halves = [h for pair in join_leave_frames(joins) for h in pair]
        events = 2 * len(halves)
        await _measure(fs, counter, warm, True, reader_clock)  # warm-up
        for paced in (True, False):
            reader_us: list[float] = []
            loop_us: list[float] = []
            for _ in range(repeat):
                reader, loop = await _measure(fs, counter, halves, paced, reader_clock)
                reader_us.append(reader * 1e6 / events)
                loop_us.append(loop * 1e6 / events)
            mode = "paced (one join or leave per read)" if paced else "burst (all at once)"
            print(
                f"{mode:36s} {events} events: loop {statistics.median(loop_us):5.1f} us/event "
                f"(min {min(loop_us):.1f}), hub thread {statistics.median(reader_us):4.1f} us/event"
            )
    finally:
        await node.stop()
        fs.close()


async def _measure(
    fs: FakeFreeSwitch, counter: Counter, halves: list[bytes], paced: bool, clock: int
) -> tuple[float, float]:
    """(reader thread CPU s, loop thread CPU s) while `halves` go through."""
    base = counter.count
    counter.target = base + len(halves)
    counter.reached.clear()
    reader0 = time.clock_gettime(clock)
    loop0 = time.thread_time()
    await asyncio.to_thread(_send_all, fs, halves, counter, paced, base)
    if not paced:
        await asyncio.to_thread(counter.reached.wait, 60.0)
    loop1 = time.thread_time()
    reader1 = time.clock_gettime(clock)
    if counter.count < base + len(halves):
        raise TimeoutError("events did not come through")
    return reader1 - reader0, loop1 - loop0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--joins", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"FreeSwitchNode ESL events, CPU per event ({EVENTS}, 4 events per join+leave)")
    asyncio.run(run(args.joins, args.repeat))


if __name__ == "__main__":
    main()
