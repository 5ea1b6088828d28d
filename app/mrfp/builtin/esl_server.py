"""The built-in media processor's Event Socket server: FreeSWITCH's inbound ESL protocol
(mod_event_socket, 1.10) for what the MRFC-AS's adapter uses.

Per connection: `auth/request` first; `auth <password>` (`+OK accepted`, or `-ERR invalid`, a
disconnect notice and close, as `esl-badauth.*` records); then `api` / `bgapi`, `event
plain|json <names>`, `noevents`, `exit`. Frames are rendered with `app.mrfp.esl`, so the bytes
have FreeSWITCH's header order; `execute_api` gives FreeSWITCH's reply texts (`api/*.txt`).

Events: the registry's `conference::maintenance` events go to every authenticated connection
subscribed to `CUSTOM conference::maintenance` (or `CUSTOM` alone, or `ALL`), in the format of
its last `event` command; `BACKGROUND_JOB` events (results of `bgapi`) to those subscribed to
`BACKGROUND_JOB` or `ALL`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from app.mrfp.builtin.conference import (
    MAINTENANCE_SUBCLASS,
    Conference,
    ConferenceError,
    ConferenceRegistry,
    MaintenanceEvent,
    Member,
)
from app.mrfp.esl.events import render_cjson, render_event_json, render_event_plain
from app.mrfp.esl.frames import (
    Command,
    EslProtocolError,
    EslServerParser,
    parse_event_subscription,
    render_api_response,
    render_auth_request,
    render_command_reply,
    render_disconnect_notice,
)

log = logging.getLogger(__name__)

VERSION = "mrfp-builtin 1.0 (FreeSWITCH 1.10 ESL compatible)"

# conference_list prints these profile flags; ours are fixed by the profile we imitate.
_LIST_FLAGS = ("running", "answered", "enforce_min", "dynamic", "exit_sound", "enter_sound")


# ---------------------------------------------------------------------------------------------
# api commands (sans-IO: registry in, reply text out)


def _member_row(m: Member) -> str:
    flags = []
    if not m.deaf:
        flags.append("hear")
    if not m.muted:
        flags.append("speak")
    if m.talking:
        flags.append("talking")
    if m.conference.floor is m:
        flags.append("floor")
    leg = m.leg
    # id;channel name;uuid;caller id name;caller id number;flags;volume in;volume out;energy
    return (
        f"{m.member_id};sofia/mrfp/{leg.channel_name};{leg.channel_uuid};"
        f"{leg.caller_id_name};{leg.from_user};{'|'.join(flags)};0;0;0\n"
    )


def _conference_heading(conf: Conference) -> str:
    count = len(conf.members)
    flags = (("locked",) if conf.locked else ()) + _LIST_FLAGS + ("json_status",)
    noun = "member" if count == 1 else "members"
    return f"+OK Conference {conf.name} ({count} {noun} rate: 8000 flags: {'|'.join(flags)})\n"


def _member_json(m: Member, now: float) -> dict[str, object]:
    last = int(now - m.last_talking) if m.last_talking is not None else 0
    return {
        "type": "caller",
        "id": m.member_id,
        "flags": {
            "can_hear": not m.deaf,
            "can_see": True,
            "can_speak": not m.muted,
            "hold": m.hold,
            "mute_detect": False,
            "talking": m.talking,
            "has_video": False,
            "video_bridge": False,
            "has_floor": m.conference.floor is m,
            "is_moderator": False,
            "end_conference": False,
            "mandatory_member_end_conference": False,
            "pass_digits": False,
        },
        "uuid": m.leg.channel_uuid,
        "caller_id_name": m.leg.caller_id_name,
        "caller_id_number": m.leg.from_user,
        "join_time": int(now - m.joined_at),
        "last_talking": last,
        "energy": m.energy,
        "volume_in": 0,
        "volume_out": 0,
        "output-volume": 0,
        "input-volume": 0,
    }


def _conference_json(conf: Conference, now: float) -> dict[str, object]:
    return {
        "conference_name": conf.name,
        "member_count": len(conf.members),
        "ghost_count": 0,
        "rate": 8000,
        "run_time": int(now - conf.created_at),
        "conference_uuid": conf.uuid,
        "canvas_count": 0,
        "max_bw_in": 0,
        "force_bw_in": 0,
        "video_floor_packets": 0,
        "locked": conf.locked,
        "destruct": False,
        "wait_mod": False,
        "audio_always": False,
        "running": True,
        "answered": True,
        "enforce_min": True,
        "bridge_to": False,
        "dynamic": True,
        "exit_sound": True,
        "enter_sound": True,
        "recording": False,
        "video_bridge": False,
        "video_floor_only": False,
        "video_rfc4579": False,
        "variables": {},
        "members": [_member_json(m, now) for m in conf.members],
    }


def _json_list(confs: list[Conference]) -> str:
    now = time.monotonic()
    if not confs:
        return "[]"
    return render_cjson([_conference_json(c, now) for c in confs])


def conference_api(registry: ConferenceRegistry, arg: str) -> str:
    """`conference ...` as mod_conference answers it (texts of `api/*.txt`)."""
    words = arg.split()
    if not words:
        return "-USAGE: conference <conference_name> <command> [args]\n"
    if words[0] == "list":
        confs = list(registry.conferences.values())
        if not confs:
            return "+OK No active conferences.\n"
        return "".join(_conference_heading(c) + "".join(map(_member_row, c.members)) for c in confs)
    if words[0] == "json_list":
        if len(words) > 1:  # `conference json_list <name>`
            conf = registry.conferences.get(words[1])
            if conf is None:
                return f"-ERR Conference {words[1]} not found\n"
            return _json_list([conf])
        return _json_list(list(registry.conferences.values()))
    name = words[0]
    verb = words[1] if len(words) > 1 else ""
    args = words[2:]
    try:
        conf = registry.conference(name)
        if verb == "list":
            if args[:1] == ["count"]:
                return str(len(conf.members))
            return "".join(map(_member_row, conf.members))
        if verb == "json_list":
            return _json_list([conf])
        if verb in ("lock", "unlock"):
            registry.set_lock(name, verb == "lock")
            return f"+OK {name} {verb}ed\n"
        if verb in ("kick", "hup", "mute", "unmute", "deaf", "undeaf"):
            if not args:
                return f"-ERR Missing member ID for {verb}\n"
            return _member_command(registry, name, verb, args[0])
        if not verb:
            return "-ERR Command not specified\n"
        return f"-ERR Unknown command {verb}\n"
    except ConferenceError as exc:
        return f"-ERR {exc}\n"


def _member_command(registry: ConferenceRegistry, name: str, verb: str, target: str) -> str:
    conf = registry.conference(name)
    ids = [str(m.member_id) for m in conf.members] if target == "all" else [target]
    out = []
    for member_id in ids:
        if verb == "kick":
            registry.kick(name, member_id)
            out.append(f"+OK kicked {member_id}\n")
        elif verb == "hup":
            registry.hup(name, member_id)
            out.append(f"+OK hup {member_id}\n")
        elif verb in ("mute", "unmute"):
            registry.set_mute(name, member_id, verb == "mute")
            out.append(f"+OK {verb} {member_id}\n")
        else:
            registry.set_deaf(name, member_id, verb == "deaf")
            out.append(f"+OK {verb} {member_id}\n")
    return "".join(out)


def status_text(registry: ConferenceRegistry, started: float) -> str:
    """`status` in FreeSWITCH's layout (the adapter only needs it to answer)."""
    up = time.monotonic() - started
    days, rest = divmod(int(up), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    millis = int((up - int(up)) * 1000)
    micros = int((up - int(up)) * 1_000_000) % 1000
    sessions = len(registry.members())
    return (
        f"UP 0 years, {days} days, {hours} hours, {minutes} minutes, {seconds} seconds, "
        f"{millis} milliseconds, {micros} microseconds\n"
        f"FreeSWITCH (Version {VERSION}) is ready\n"
        f"{registry.sessions_since_start} session(s) since startup\n"
        f"{sessions} session(s) - peak {sessions}, last 5min {sessions} \n"
        "0 session(s) per Sec out of max 100, peak 0, last 5min 0 \n"
        "1000 session(s) max\n"
        "min idle cpu 0.00/99.70\n"
        "Current Stack Size/Max 240K/8192K\n"
    )


def execute_api(registry: ConferenceRegistry, line: str, started: float) -> str:
    """The body of the reply to `api <line>`."""
    command, _, arg = line.strip().partition(" ")
    arg = arg.strip()
    if command == "conference":
        return conference_api(registry, arg)
    if command == "status":
        return status_text(registry, started)
    if command == "version":
        return f"FreeSWITCH Version {VERSION}\n"
    if command == "uptime":
        return str(int(time.monotonic() - started))
    return f"-ERR {command} Command not found!\n"


# ---------------------------------------------------------------------------------------------
# the server


@dataclass(eq=False)
class _Connection:
    writer: asyncio.StreamWriter
    authenticated: bool = False
    format: str = "plain"
    names: set[str] = field(default_factory=set)
    closing: bool = False

    def wants(self, event_name: str, subclass: str | None) -> bool:
        if not self.authenticated or self.closing:
            return False
        if "ALL" in self.names:
            return True
        if event_name == "CUSTOM":
            # `event plain CUSTOM` without subclasses takes every CUSTOM event.
            subs = self.names - {"CUSTOM"}
            return "CUSTOM" in self.names and (not subs or subclass in subs)
        return event_name in self.names

    def send(self, data: bytes) -> None:
        if not self.closing:
            self.writer.write(data)


class EslServer:
    """An asyncio TCP server speaking FreeSWITCH's inbound event socket."""

    def __init__(
        self,
        registry: ConferenceRegistry,
        host: str = "127.0.0.1",
        port: int = 8021,
        password: str = "ClueCon",
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self._password = password
        self._clock = clock
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = time.monotonic()
        self._job_sequence = 0
        registry.listeners.append(self._on_maintenance)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.closing = True
            conn.writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(ValueError):
            self.registry.listeners.remove(self._on_maintenance)

    # -- events -------------------------------------------------------------------------------

    def _on_maintenance(self, event: MaintenanceEvent) -> None:
        plain: bytes | None = None
        json: bytes | None = None
        for conn in list(self._connections):
            if not conn.wants("CUSTOM", MAINTENANCE_SUBCLASS):
                continue
            if conn.format == "json":
                json = json or render_event_json(event.headers)
                conn.send(json)
            else:
                plain = plain or render_event_plain(event.headers)
                conn.send(plain)

    def _background_job(self, job_uuid: str, line: str, body: str) -> None:
        command, _, arg = line.partition(" ")
        ctx = self.registry.context
        now = self._clock()
        self._job_sequence += 1
        # Job-* are added before the event fires, the core headers when it fires.
        headers = [
            ("Job-UUID", job_uuid),
            ("Job-Command", command),
            *([("Job-Command-Arg", arg)] if arg else []),
            ("Event-Name", "BACKGROUND_JOB"),
            ("Core-UUID", ctx.core_uuid),
            ("FreeSWITCH-Hostname", ctx.hostname),
            ("FreeSWITCH-Switchname", ctx.hostname),
            ("FreeSWITCH-IPv4", ctx.ipv4),
            ("FreeSWITCH-IPv6", ctx.ipv6),
            ("Event-Date-Local", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))),
            (
                "Event-Date-GMT",
                time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)),
            ),
            ("Event-Date-Timestamp", str(int(now * 1_000_000))),
            ("Event-Calling-File", "mod_event_socket.c"),
            ("Event-Calling-Function", "api_exec"),
            ("Event-Calling-Line-Number", "1572"),
            ("Event-Sequence", str(self._job_sequence)),
        ]
        for conn in list(self._connections):
            if conn.wants("BACKGROUND_JOB", None):
                if conn.format == "json":
                    conn.send(render_event_json(headers, body))
                else:
                    conn.send(render_event_plain(headers, body))

    # -- one connection -----------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        conn = _Connection(writer)
        self._connections.add(conn)
        parser = EslServerParser()
        try:
            writer.write(render_auth_request())
            await writer.drain()
            while not conn.closing:
                data = await reader.read(65536)
                if not data:
                    break
                try:
                    commands = parser.feed(data)
                except EslProtocolError as exc:
                    log.info("esl: protocol error from client: %s", exc)
                    break
                for command in commands:
                    self._command(conn, command)
                    if conn.closing:
                        break
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            conn.closing = True
            self._connections.discard(conn)
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    def _close(self, conn: _Connection) -> None:
        conn.send(render_disconnect_notice())
        conn.closing = True

    def _command(self, conn: _Connection, command: Command) -> None:
        name = command.name
        if not conn.authenticated:
            if name == "auth" and command.arg == self._password:
                conn.authenticated = True
                conn.send(render_command_reply("+OK accepted"))
                return
            # A wrong password (or anything before auth): refused, then closed (recorded).
            conn.send(render_command_reply("-ERR invalid"))
            self._close(conn)
            return
        if name == "api":
            try:
                body = execute_api(self.registry, command.arg, self._started)
            except Exception:  # a bug must not take the connection down
                log.exception("esl: api %s failed", command.arg)
                body = "-ERR internal error\n"
            conn.send(render_api_response(body))
        elif name == "bgapi":
            job_uuid = command.header("Job-UUID") or str(uuid.uuid4())
            conn.send(render_command_reply(f"+OK Job-UUID: {job_uuid}", (("Job-UUID", job_uuid),)))
            try:
                body = execute_api(self.registry, command.arg, self._started)
            except Exception:
                log.exception("esl: bgapi %s failed", command.arg)
                body = "-ERR internal error\n"
            self._background_job(job_uuid, command.arg, body)
        elif name == "event":
            sub = parse_event_subscription(command.arg)
            conn.format = "json" if sub.format == "json" else "plain"
            conn.names.update(sub.names)
            conn.send(render_command_reply(f"+OK event listener enabled {conn.format}"))
        elif name == "noevents":
            conn.names.clear()
            conn.send(render_command_reply("+OK no longer listening for events"))
        elif name == "exit":
            conn.send(render_command_reply("+OK bye"))
            self._close(conn)
        elif name == "auth":
            conn.send(render_command_reply("+OK accepted"))
        else:
            conn.send(render_command_reply("-ERR command not found"))
