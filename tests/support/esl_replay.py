"""An asyncio TCP server that plays FreeSWITCH's side of ESL with bytes recorded from a real
FreeSWITCH 1.10.12 (../shared/fixtures/freeswitch/): auth request, replies to the commands it
gets, events it is told to push, disconnect notices. Used to run the FreeSWITCH adapter
without a FreeSWITCH.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.mrfp.esl import (
    EslClientParser,
    EslServerParser,
    parse_event_subscription,
    render_api_response,
)

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "freeswitch"

_BLOCK = re.compile(rb"===== (FS -> client|client -> FS) [0-9:]+ \((\d+) bytes\) =====\n")


def load_conversation(path: Path) -> list[tuple[str, bytes]]:
    """A `*.conversation.txt` as (direction, exact bytes) pairs; direction `fs` or `client`."""
    data = path.read_bytes()
    out: list[tuple[str, bytes]] = []
    pos = 0
    while pos < len(data):
        m = _BLOCK.match(data, pos)
        if m is None:
            if data[pos:].strip():
                raise ValueError(f"{path.name}: no block header at {pos}")
            break
        start = m.end()
        length = int(m.group(2))
        direction = "fs" if m.group(1) == b"FS -> client" else "client"
        out.append((direction, data[start : start + length]))
        pos = start + length
        # A block not ending in a newline is followed by one before the next block header.
        if data[pos : pos + 1] == b"\n" and not data.startswith(b"=====", pos):
            pos += 1
    return out


def recorded_exchanges(path: Path) -> list[tuple[str, bytes]]:
    """(client command line, FreeSWITCH's reply bytes) in recorded order; the reply is every
    FS block up to the next client block (`exit` gets `+OK bye` and the disconnect notice)."""
    out: list[tuple[str, bytes]] = []
    for direction, chunk in load_conversation(path):
        if direction == "client":
            command = EslServerParser().feed(chunk)[0].line
            out.append((command, b""))
        elif out:
            out[-1] = (out[-1][0], out[-1][1] + chunk)
    return out


def recorded_api_replies() -> dict[str, list[bytes]]:
    """Every recorded command of esl-api.conversation.txt -> its replies, in order."""
    replies: dict[str, list[bytes]] = {}
    for command, reply in recorded_exchanges(FIXTURES / "esl-api.conversation.txt"):
        replies.setdefault(command, []).append(reply)
    # mod_conference takes `json_list <id>` and `<id> json_list` alike; both were recorded.
    for command in list(replies):
        words = command.split(" ")
        if words[:3] == ["api", "conference", "json_list"] and len(words) == 4:
            replies.setdefault(f"api conference {words[3]} json_list", replies[command])
    return replies


def recorded_event(name: str) -> bytes:
    """A recorded event frame, e.g. `events-plain/02-add-member-room1.txt`."""
    return (FIXTURES / name).read_bytes()


def _first_frames() -> dict[str, bytes]:
    api = recorded_exchanges(FIXTURES / "esl-api.conversation.txt")
    bad = recorded_exchanges(FIXTURES / "esl-badauth.conversation.txt")
    plain = recorded_exchanges(FIXTURES / "esl-events-plain.conversation.txt")
    json_ = recorded_exchanges(FIXTURES / "esl-events-json.conversation.txt")
    greeting = load_conversation(FIXTURES / "esl-api.conversation.txt")[0][1]
    return {
        "greeting": greeting,  # Content-Type: auth/request
        "auth-ok": dict(api)["auth ClueCon"],
        "auth-bad": dict(bad)["auth WrongPassword"],  # -ERR invalid + disconnect notice
        "event-plain": _first_frame(dict(plain)["event plain CUSTOM conference::maintenance"]),
        "event-json": _first_frame(dict(json_)["event json CUSTOM conference::maintenance"]),
        "exit": dict(api)["exit"],
    }


def _first_frame(data: bytes) -> bytes:
    # The subscription reply block may be followed by the first event in the same capture
    # block; keep the command/reply only.
    frames = EslClientParser().feed(data)
    return bytes(frames[0])


@dataclass(eq=False)
class _Conn:
    writer: asyncio.StreamWriter
    authed: bool = False
    fmt: str | None = None  # event format subscribed to


@dataclass(eq=False)
class EslReplayServer:
    """Plays a recorded FreeSWITCH. Replies per command line are consumed in order; the last
    one repeats. Unknown commands get FreeSWITCH's `-ERR <cmd> Command not found!`."""

    password: str = "ClueCon"
    host: str = "127.0.0.1"
    replies: dict[str, list[bytes]] = field(default_factory=recorded_api_replies)
    refuse_connections: int = 0  # close the next N connections right after accepting them
    commands: list[str] = field(default_factory=list)
    accept_times: list[float] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _conns: list[_Conn] = field(default_factory=list)
    _frames: dict[str, bytes] = field(default_factory=_first_frames)
    _changed: asyncio.Condition | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, port: int = 0) -> int:
        self._changed = asyncio.Condition()
        self._server = await asyncio.start_server(self._handle, self.host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self.drop_all()
        # Let the handlers end on their own rather than be cancelled at loop teardown.
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)
        if self._server is not None:
            await self._server.wait_closed()

    def set_reply(self, command: str, *replies: bytes) -> None:
        """Replies to `command` in turn (the last repeats); none at all: never answer it."""
        self.replies[command] = list(replies)

    def set_api_body(self, command: str, body: str) -> None:
        """A reply not in the recordings, framed as FreeSWITCH frames api replies."""
        self.replies[command] = [render_api_response(body)]

    @property
    def subscribed(self) -> int:
        return sum(1 for c in self._conns if c.fmt is not None)

    async def push_event(self, plain: bytes, json_: bytes | None = None) -> None:
        """Send an event to every subscribed connection, in the format it asked for."""
        for conn in list(self._conns):
            if conn.fmt == "plain":
                conn.writer.write(plain)
            elif conn.fmt == "json" and json_ is not None:
                conn.writer.write(json_)
            else:
                continue
            with contextlib.suppress(ConnectionError):
                await conn.writer.drain()

    async def drop_all(self) -> None:
        """Close every connection at once, as a crashing FreeSWITCH would."""
        for conn in list(self._conns):
            conn.writer.transport.abort()
        self._conns.clear()
        await self._notify()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        assert self._changed is not None
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    async def _notify(self) -> None:
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.accept_times.append(asyncio.get_running_loop().time())
        if self.refuse_connections > 0:
            self.refuse_connections -= 1
            writer.transport.abort()
            await self._notify()
            return
        conn = _Conn(writer)
        self._conns.append(conn)
        parser = EslServerParser()
        try:
            writer.write(self._frames["greeting"])
            await writer.drain()
            await self._notify()
            while data := await reader.read(65536):
                for command in parser.feed(data):
                    if not await self._answer(conn, command.line):
                        return
                await self._notify()
        except ConnectionError:
            pass
        finally:
            if conn in self._conns:
                self._conns.remove(conn)
            writer.transport.abort()
            await self._notify()

    async def _answer(self, conn: _Conn, line: str) -> bool:
        """Reply to one command; False when the connection is to be closed."""
        self.commands.append(line)
        name, _, arg = line.partition(" ")
        writer = conn.writer
        if name == "auth":
            if arg == self.password:
                conn.authed = True
                writer.write(self._frames["auth-ok"])
                await writer.drain()
                return True
            writer.write(self._frames["auth-bad"])
            await writer.drain()
            return False
        if not conn.authed:
            writer.write(self._frames["auth-bad"])
            await writer.drain()
            return False
        if name == "exit":
            writer.write(self._frames["exit"])
            await writer.drain()
            return False
        if name == "event":
            sub = parse_event_subscription(arg)
            conn.fmt = sub.format
            writer.write(self._frames["event-json" if sub.format == "json" else "event-plain"])
            await writer.drain()
            return True
        queue = self.replies.get(line)
        if queue is not None and not queue:
            return True  # told to stay silent (a hung FreeSWITCH)
        if queue:
            reply = queue.pop(0) if len(queue) > 1 else queue[0]
        else:
            cmd = arg.split(" ", 1)[0] if name in ("api", "bgapi") else name
            reply = render_api_response(f"-ERR {cmd} Command not found!\n")
        writer.write(reply)
        await writer.drain()
        return True
