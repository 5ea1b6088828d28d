"""`FreeSwitchNode`: one FreeSWITCH (or the built-in media processor) driven over ESL.

greenswitch's inbound client runs in a thread of its own, which gets its own gevent hub; the
asyncio process is never monkey-patched (../shared/notes/greenswitch.md). greenswitch 0.0.19
connects, authenticates and sends the commands; the stream FreeSWITCH sends back is read on
the asyncio loop. The two sides meet in these places only:
- asyncio -> hub: a command is handed over with the hub loop's `run_callback_threadsafe`,
  which wakes the hub through its async watcher (no polling); a greenlet runs it. Every frame
  read that is not an event (auth/request, a command's reply, the disconnect notice) goes to
  the hub the same way, to the greenswitch call that waits for it.
- hub -> asyncio: a new connection's socket (a duplicate of it), command results and
  connection changes go to the loop with `loop.call_soon_threadsafe`; all state (what the
  node holds, the sink) lives on the asyncio side and is touched from the loop thread only.

Why the loop reads, not greenswitch:
- greenswitch reads the frame envelope line by line through a socket file (one recv per
  buffer refill, a string concatenation per line) and parses every event fully
  (URL-decoding the whole block before splitting lines, so a value holding an encoded
  newline — an SDP in verbose events — broke into bogus headers), then hands it through a
  gevent queue to another greenlet that dispatches it. Here the socket is read in large
  chunks, split into frames by `EslFrameReader`; of the plain events the node keeps the
  actions its mapper reads and extracts only the headers the mapper uses
  (`plain_line_value`, `MAPPED_HEADERS`) (FreeSWITCH sends ~100 headers per event, ~170 with
  verbose-events).
- on the loop an event costs no thread switch: read in the hub, each chunk of events had to
  wake the loop (`call_soon_threadsafe`) and take the interpreter lock from it. At 600
  conference joins/s that thread cost about 0.15 ms of CPU per join and leave (four events).
- a connection closed before `auth/request` left greenswitch's `connect()` waiting forever,
  and one closed in the middle of a body made its `_read_socket` spin forever: here the end
  of the stream ends the reading, which wakes every waiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import gevent
import gevent.event
from greenswitch import esl as gs_esl

from app.focus.media import MemberInfo, NodeConnectionChanged
from app.mrfp.esl.conference import (
    MAINTENANCE_SUBCLASS,
    MAPPED_HEADERS,
    SUBSCRIBE_PLAIN,
    MaintenanceMapper,
    check_api_reply,
    check_command_reply,
    conference_command,
    members_from_json_list,
    parse_json_list,
)
from app.mrfp.esl.events import plain_line_value
from app.mrfp.esl.frames import (
    API_RESPONSE,
    AUTH_REQUEST,
    COMMAND_REPLY,
    DISCONNECT_NOTICE,
    EVENT_PLAIN,
    RUDE_REJECTION,
    EslFrameReader,
)
from app.mrfp.port import ConferenceNotFound, EventSink, MrfpError, MrfpUnavailable

log = logging.getLogger(__name__)


def backoff_delays(
    initial: float, maximum: float, *, factor: float = 2.0, jitter: float = 0.0
) -> Iterator[float]:
    """Reconnect delays: initial, x factor each time, capped at maximum.

    `jitter` (0..1) takes up to that fraction off each delay, so that several MRFC-AS nodes
    that lost the same FreeSWITCH do not all come back in the same instant.
    """
    delay = initial
    while True:
        yield delay * (1.0 - random.uniform(0.0, jitter)) if jitter else delay
        delay = min(delay * factor, maximum)


class _EslClosed(Exception):
    """The ESL socket closed."""


# One recv per this many bytes at most: a join's few events (2.5-7 kB each) in one read.
_RECV_SIZE = 256 * 1024


@dataclass(eq=False, slots=True)
class _Reply:
    """What greenswitch's `send()` returns: the reply's headers, and `data` (Reply-Text of a
    command/reply, the body of an api/response)."""

    headers: dict[str, str]
    data: str


class _InboundESL(gs_esl.InboundESL):  # type: ignore[misc]
    """greenswitch's client with its receive side replaced (module docstring).

    greenswitch spawns `receive_events` as a greenlet when it connects. Here that greenlet asks
    the node to read the socket on the asyncio loop (`start_reading`) and waits until the
    loop reports the end of the stream (`stream_ended`). The loop hands back, through the hub,
    every frame that is not an event (`_handle_frame`): auth/request, command replies, the
    disconnect notice.
    """

    connected: bool
    _run: bool
    _lingering: bool
    _commands_sent: list[Any]
    sock: Any

    def __init__(
        self,
        host: str,
        port: int,
        password: str,
        start_reading: Callable[[_InboundESL], None],
        timeout: float = 5.0,
    ) -> None:
        super().__init__(host, port, password, timeout=timeout)
        self._start_reading = start_reading
        self._stream_end = gevent.event.Event()

    def receive_events(self) -> None:
        try:
            self._start_reading(self)
            self._stream_end.wait()
        finally:
            self.connected = False
            self._run = False
            # Wake whoever waits: connect() for auth/request, send() for its reply.
            self._auth_request_event.set()
            pending, self._commands_sent = self._commands_sent, []
            for result in pending:
                result.set_exception(_EslClosed("ESL connection closed"))

    def _handle_frame(self, headers: dict[str, str], body: bytes) -> None:
        """Every frame but a plain event, as greenswitch's `handle_event` treats it."""
        ctype = headers.get("Content-Type")
        if ctype == AUTH_REQUEST:
            self._auth_request_event.set()
        elif ctype == COMMAND_REPLY:
            self._commands_sent.pop(0).set(_Reply(headers, headers.get("Reply-Text", "")))
        elif ctype == API_RESPONSE:
            text = body.decode("utf-8", "surrogateescape")
            self._commands_sent.pop(0).set(_Reply(headers, text))
        elif ctype == DISCONNECT_NOTICE:
            # FreeSWITCH closes the socket next (the loop ends on it), unless it lingers.
            if headers.get("Content-Disposition") == "linger":
                self._lingering = True
            else:
                self.connected = False
        elif ctype == RUDE_REJECTION:
            # Sent instead of auth/request to a peer the ACL refuses: connect() gives up.
            self.connected = False
            self._auth_request_event.set()
        else:
            # Only plain events are subscribed to; json/xml events or logs are not expected.
            log.debug("ESL frame of type %r ignored", ctype)

    def stream_ended(self) -> None:
        """In the hub: the loop read the end of the stream (or gave up on it)."""
        self._stream_end.set()

    def close(self) -> None:
        """Drop the connection without the `exit` round trip greenswitch's stop() waits for."""
        self._run = False
        self.connected = False
        sock = getattr(self, "sock", None)
        if sock is not None:
            # The loop reads a duplicate of this socket: shutting the connection down ends
            # that reader too (closing one descriptor would not).
            with contextlib.suppress(Exception):
                sock.shutdown(socket.SHUT_RDWR)
        self._stream_end.set()
        for attr in ("sock", "sock_file"):
            obj = getattr(self, attr, None)
            if obj is not None:
                with contextlib.suppress(Exception):
                    obj.close()
        greenlets = [self._receive_events_greenlet, self._process_events_greenlet]
        gevent.killall([g for g in greenlets if g is not None], block=False)


@dataclass(eq=False)
class _Job:
    command: str  # the whole ESL command: `api conference room1 kick 2`
    future: asyncio.Future[str]
    loop: asyncio.AbstractEventLoop
    timeout: float
    extra: dict[str, Any] = field(default_factory=dict)


class FreeSwitchNode:
    """A `MediaNode` over ESL. Commands raise `MrfpError`s; events go to the sink."""

    def __init__(
        self,
        name: str,
        host: str = "127.0.0.1",
        port: int = 8021,
        password: str = "ClueCon",
        *,
        command_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        backoff_jitter: float = 0.1,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self._password = password
        self.command_timeout = command_timeout
        self.connect_timeout = connect_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.backoff_jitter = backoff_jitter
        self._mapper = MaintenanceMapper(name)
        self._sink: EventSink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = False
        self._connected_event: asyncio.Event | None = None
        self._ever_connected = False
        self._reconcile_task: asyncio.Task[None] | None = None
        # hub side
        self._thread: threading.Thread | None = None
        self._hub_loop: Any = None
        self._hub_ready = threading.Event()
        self._supervisor: Any = None
        self._esl: _InboundESL | None = None
        self._stream: _Stream | None = None  # loop side: the connection being read
        self._stopping = False
        # Figures for tests and metrics.
        self.connect_attempts = 0
        self.reconnects = 0

    def __repr__(self) -> str:
        # Never the password.
        return f"FreeSwitchNode({self.name!r}, {self.host}:{self.port})"

    # ------------------------------------------------------------------ MediaNode: lifecycle

    @property
    def connected(self) -> bool:
        return self._connected

    async def start(self, sink: EventSink) -> None:
        """Start the ESL thread; returns at once (connection comes with NodeConnectionChanged)."""
        if self._thread is not None:
            raise RuntimeError("node already started")
        self._sink = sink
        self._loop = asyncio.get_running_loop()
        self._connected_event = asyncio.Event()
        self._stopping = False
        self._thread = threading.Thread(
            target=self._thread_main, name=f"esl-{self.name}", daemon=True
        )
        self._thread.start()
        if not await asyncio.to_thread(self._hub_ready.wait, 10.0):
            raise MrfpUnavailable(f"{self.name}: ESL thread did not start")

    async def stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        if self._reconcile_task is not None:
            self._reconcile_task.cancel()
        with contextlib.suppress(Exception):
            self._hub_loop.run_callback_threadsafe(self._hub_shutdown)
        await asyncio.to_thread(thread.join, 10.0)
        self._thread = None
        self._hub_ready.clear()
        self._close_stream()
        if self._connected:
            self._set_connected(False)

    async def wait_connected(self, timeout: float) -> bool:
        """True once connected (tests, readiness); False after `timeout` seconds."""
        if self._connected:
            return True
        if self._connected_event is None:
            return False
        try:
            await asyncio.wait_for(self._connected_event.wait(), timeout)
        except TimeoutError:
            return False
        return self._connected

    # ------------------------------------------------------------------ MediaNode: commands

    async def api(self, command: str) -> str:
        """`api <command>`: the reply body, or the typed error of an `-ERR` reply."""
        return check_api_reply(await self._send("api " + command))

    async def list_members(self, conference: str) -> list[MemberInfo]:
        body = await self.api(conference_command(conference, "json_list"))
        members = members_from_json_list(body, conference)
        return self._mapper.with_call_ids(conference, members)

    async def conference_count(self) -> int:
        return len(parse_json_list(await self.api("conference json_list")))

    async def kick(self, conference: str, member_id: str) -> None:
        await self.api(conference_command(conference, "kick", member_id))

    async def hup(self, conference: str, member_id: str) -> None:
        await self.api(conference_command(conference, "hup", member_id))

    async def mute(self, conference: str, member_id: str) -> None:
        await self.api(conference_command(conference, "mute", member_id))

    async def unmute(self, conference: str, member_id: str) -> None:
        await self.api(conference_command(conference, "unmute", member_id))

    async def deaf(self, conference: str, member_id: str) -> None:
        await self.api(conference_command(conference, "deaf", member_id))

    async def undeaf(self, conference: str, member_id: str) -> None:
        await self.api(conference_command(conference, "undeaf", member_id))

    async def lock(self, conference: str) -> None:
        await self.api(conference_command(conference, "lock"))

    async def unlock(self, conference: str) -> None:
        await self.api(conference_command(conference, "unlock"))

    async def play(self, conference: str, path: str, member_id: str | None = None) -> None:
        args = (path,) if member_id is None else (path, member_id)
        await self.api(conference_command(conference, "play", *args))

    async def record_start(self, conference: str, path: str) -> None:
        await self.api(conference_command(conference, "record", path))

    async def record_stop(self, conference: str, path: str) -> None:
        await self.api(conference_command(conference, "norecord", path))

    async def _send(self, command: str) -> str:
        if self._thread is None or self._hub_loop is None:
            raise MrfpUnavailable(f"{self.name}: not started")
        if not self._connected:
            raise MrfpUnavailable(f"{self.name}: ESL not connected")
        loop = asyncio.get_running_loop()
        job = _Job(command, loop.create_future(), loop, self.command_timeout)
        self._hub_loop.run_callback_threadsafe(self._hub_spawn_job, job)
        try:
            # The hub enforces the timeout too; this outer one also covers a stuck hub.
            return await asyncio.wait_for(job.future, self.command_timeout + 1.0)
        except TimeoutError as exc:
            raise MrfpUnavailable(f"{self.name}: no reply within {self.command_timeout}s") from exc

    # ------------------------------------------------------------------ asyncio side, events

    def _post(self, func: Callable[..., None], *args: Any) -> None:
        """From the hub thread: run func(*args) on the asyncio loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closed meanwhile
            loop.call_soon_threadsafe(func, *args)

    def _emit(self, event: Any) -> None:
        sink = self._sink
        if sink is None:
            return
        try:
            sink(event)
        except Exception:
            log.exception("%s: event sink raised on %r", self.name, event)

    def _on_esl_events(self, batch: list[dict[str, str]]) -> None:
        """The maintenance events of one received chunk, in order."""
        map_event = self._mapper.map
        for headers in batch:
            for event in map_event(headers):
                self._emit(event)

    def _set_connected(self, up: bool) -> None:
        if up == self._connected:
            return
        self._connected = up
        if self._connected_event is not None:
            if up:
                self._connected_event.set()
            else:
                self._connected_event.clear()
        self._emit(NodeConnectionChanged(self.name, up))
        if up:
            if self._ever_connected:
                self.reconnects += 1
                self._reconcile_task = asyncio.get_running_loop().create_task(self._reconcile())
            self._ever_connected = True

    async def _reconcile(self) -> None:
        """After a reconnect: what vanished while ESL was down is reported gone (issue 5 §3)."""
        for conference in self._mapper.conferences():
            try:
                body = await self.api(conference_command(conference, "json_list"))
                listed: list[MemberInfo] | None = members_from_json_list(body, conference)
            except ConferenceNotFound:
                listed = None
            except MrfpUnavailable:
                log.warning("%s: reconciliation stopped, ESL down again", self.name)
                return
            except MrfpError as exc:
                log.warning("%s: cannot list %s while reconciling: %s", self.name, conference, exc)
                continue
            for event in self._mapper.reconcile(conference, listed):
                self._emit(event)

    # ------------------------------------------------------------------ hub side

    def _thread_main(self) -> None:
        hub = gevent.get_hub()  # a new hub, this thread's own
        self._hub_loop = hub.loop
        self._supervisor = gevent.spawn(self._supervise)
        self._hub_ready.set()
        try:
            self._supervisor.join()
        finally:
            esl, self._esl = self._esl, None
            if esl is not None:
                esl.close()
            self._hub_loop = None
            with contextlib.suppress(Exception):
                hub.destroy(destroy_loop=True)

    def _hub_shutdown(self) -> None:
        if self._supervisor is not None:
            self._supervisor.kill(block=False)

    def _hub_spawn_job(self, job: _Job) -> None:
        gevent.spawn(self._hub_run_job, job)

    def _hub_run_job(self, job: _Job) -> None:
        esl = self._esl
        result: str | BaseException
        if esl is None or not esl.connected:
            result = MrfpUnavailable(f"{self.name}: ESL not connected")
        else:
            try:
                with gevent.Timeout(job.timeout):
                    reply = esl.send(job.command)
                result = str(reply.data)
            except gevent.Timeout:
                result = MrfpUnavailable(f"{self.name}: no reply within {job.timeout}s")
            except Exception as exc:  # socket errors, closed connection
                result = MrfpUnavailable(f"{self.name}: {type(exc).__name__}: {exc}")
        self._post(_resolve, job.future, result)

    def _supervise(self) -> None:
        """Connect, serve until the link drops, wait (backoff), again — until stopped."""
        delays = backoff_delays(self.backoff_initial, self.backoff_max, jitter=self.backoff_jitter)
        while not self._stopping:
            self.connect_attempts += 1
            esl = self._hub_connect()
            if esl is not None:
                delays = backoff_delays(
                    self.backoff_initial, self.backoff_max, jitter=self.backoff_jitter
                )
                self._esl = esl
                self._post(self._set_connected, True)
                log.info("%s: ESL connected to %s:%d", self.name, self.host, self.port)
                esl._receive_events_greenlet.join()
                self._esl = None
                esl.close()
                self._post(self._set_connected, False)
                if self._stopping:
                    return
                log.warning("%s: ESL connection to %s:%d lost", self.name, self.host, self.port)
            delay = next(delays)
            log.info("%s: ESL reconnect in %.2fs", self.name, delay)
            gevent.sleep(delay)

    def _hub_connect(self) -> _InboundESL | None:
        esl = _InboundESL(
            self.host,
            self.port,
            self._password,
            self._hub_start_reading,
            timeout=self.connect_timeout,
        )
        try:
            with gevent.Timeout(self.connect_timeout):
                esl.connect()  # auth/request, then `auth <password>`
                check_command_reply(esl.send(SUBSCRIBE_PLAIN).data)
            return esl
        except ValueError:
            # greenswitch raises ValueError('Invalid password.') on `-ERR invalid`.
            log.error(
                "%s: ESL %s:%d refused the password (check the configured ESL password)",
                self.name,
                self.host,
                self.port,
            )
        except gevent.Timeout:
            log.warning("%s: ESL %s:%d did not answer in time", self.name, self.host, self.port)
        except Exception as exc:
            log.warning(
                "%s: ESL %s:%d unreachable: %s", self.name, self.host, self.port, type(exc).__name__
            )
        esl.close()
        return None

    # ------------------------------------------------------------------ the ESL stream, on the loop

    def _hub_start_reading(self, esl: _InboundESL) -> None:
        """In the hub, as greenswitch opens the connection: from now on the asyncio loop reads
        it, from a duplicate of the socket made here (the hub's own may close any time)."""
        fd = os.dup(esl.sock.fileno())
        loop = self._loop
        try:
            if loop is None or loop.is_closed():
                raise RuntimeError("no event loop")
            loop.call_soon_threadsafe(self._open_stream, esl, fd)
        except RuntimeError:  # the loop is gone: nobody will read
            os.close(fd)
            esl.stream_ended()

    def _open_stream(self, esl: _InboundESL, fd: int) -> None:
        self._close_stream()  # a previous connection's, if its end was not read
        loop = self._loop
        assert loop is not None
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        stream = _Stream(esl, sock, EslFrameReader())
        self._stream = stream
        loop.add_reader(fd, self._on_stream_readable, stream)

    def _on_stream_readable(self, stream: _Stream) -> None:
        """Read what FreeSWITCH sent. The plain events are handled here, at once; every other
        frame goes to the hub, to the command that waits for it (in stream order: the
        events before a reply are handled before the command sees its reply)."""
        try:
            data = stream.sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # the connection reset or broken: the node reconnects
            log.debug("ESL receive loop ended: %s", type(exc).__name__)
            self._end_stream(stream)
            return
        if not data:
            if stream.reader.buffered:
                log.debug("ESL connection closed inside a frame")
            self._end_stream(stream)
            return
        try:
            events: list[bytes] = []
            for headers, body in stream.reader.feed(data):
                if headers.get("Content-Type") == EVENT_PLAIN:
                    events.append(body)
                    continue
                if events:
                    self._on_plain_events(events)
                    events = []
                self._hub_call(self._hub_frame, stream.esl, headers, body)
            if events:
                self._on_plain_events(events)
        except Exception:  # a stream that is not ESL, or a fault here: visible, then reconnect
            log.warning("ESL receive loop failed; dropping the connection", exc_info=True)
            self._end_stream(stream)

    def _end_stream(self, stream: _Stream) -> None:
        """The loop stops reading `stream`; the hub learns that its connection is over."""
        if self._stream is stream:
            self._close_stream()
        self._hub_call(stream.esl.stream_ended)

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.remove_reader(stream.sock.fileno())
        stream.sock.close()

    def _hub_call(self, func: Callable[..., None], *args: Any) -> None:
        """From the loop: run func(*args) in the hub."""
        hub_loop = self._hub_loop
        if hub_loop is None:
            return
        with contextlib.suppress(Exception):  # the hub stopped meanwhile
            hub_loop.run_callback_threadsafe(func, *args)

    @staticmethod
    def _hub_frame(esl: _InboundESL, headers: dict[str, str], body: bytes) -> None:
        try:
            esl._handle_frame(headers, body)
        except Exception:  # a reply nobody asked for, and the like
            log.warning("ESL receive loop failed; dropping the connection", exc_info=True)
            esl.close()

    def _on_plain_events(self, bodies: list[bytes]) -> None:
        """The events of one received chunk, each reduced to the headers the mapper reads for
        its action (`MAPPED_HEADERS`), found line by line without parsing the ~100 others. An
        action the mapper ignores (`floor-change`, one per join and leave) is dropped here.
        greenswitch dispatched CUSTOM events by subclass; only `conference::maintenance` is
        handled."""
        batch: list[dict[str, str]] = []
        for body in bodies:
            action = plain_line_value(body, "Action")
            names = MAPPED_HEADERS.get(action or "")
            if action is None or names is None:
                continue
            subclass = plain_line_value(body, "Event-Subclass")
            if subclass != MAINTENANCE_SUBCLASS or plain_line_value(body, "Event-Name") != "CUSTOM":
                continue
            headers = {"Event-Subclass": MAINTENANCE_SUBCLASS, "Action": action}
            for name in names:
                value = plain_line_value(body, name)
                if value is not None:
                    headers[name] = value
            batch.append(headers)
        if batch:
            self._on_esl_events(batch)


@dataclass(eq=False, slots=True)
class _Stream:
    """The ESL connection as the loop reads it: whose it is, the duplicate socket, the frames
    cut so far."""

    esl: _InboundESL
    sock: socket.socket
    reader: EslFrameReader


def _resolve(future: asyncio.Future[str], result: str | BaseException) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
