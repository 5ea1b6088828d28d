"""ESL framing, sans-IO: the frames FreeSWITCH's mod_event_socket sends, and the commands a
client sends it.

Wire format (mod_event_socket, FreeSWITCH 1.10): a frame is header lines `Name: value\\n`, an
empty line, then `Content-Length` bytes of body when that header is present. Lines end with a
bare `\\n`. Outer header values are sent as they are (only event bodies are URL-encoded, see
`events.py`). A client command is one line (`api status`), optionally followed by header lines,
and ends with an empty line.

Both directions keep the headers in arrival order as a tuple of pairs, so that
`render_frame(parse(raw)) == raw` holds byte for byte: FreeSWITCH writes `Content-Type` before
`Content-Length` in replies but the other way round in events.
"""

from __future__ import annotations

from dataclasses import dataclass

Headers = tuple[tuple[str, str], ...]

# Bounds against a peer that never ends a header block or announces an absurd body.
MAX_HEADER_BLOCK = 256 * 1024
MAX_BODY = 64 * 1024 * 1024

# Content types FreeSWITCH sends on an inbound connection.
AUTH_REQUEST = "auth/request"
COMMAND_REPLY = "command/reply"
API_RESPONSE = "api/response"
EVENT_PLAIN = "text/event-plain"
EVENT_JSON = "text/event-json"
EVENT_XML = "text/event-xml"
DISCONNECT_NOTICE = "text/disconnect-notice"
RUDE_REJECTION = "text/rude-rejection"

# The fixed bodies mod_event_socket writes (recorded from 1.10.12).
DISCONNECT_NOTICE_BODY = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
RUDE_REJECTION_BODY = "Access Denied, go away.\n"


class EslProtocolError(Exception):
    """The peer sent bytes that are not an ESL frame (or exceed the bounds above)."""


def _decode(raw: bytes) -> str:
    # FreeSWITCH strings are UTF-8 in practice; surrogateescape keeps any other byte so that
    # rendering gives back exactly what was received.
    return raw.decode("utf-8", "surrogateescape")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _parse_header_lines(block: bytes) -> Headers:
    headers: list[tuple[str, str]] = []
    for raw_line in block.split(b"\n"):
        line = _decode(raw_line.removesuffix(b"\r"))
        if not line:
            continue
        name, sep, value = line.partition(": ")
        if not sep:
            # `Name:` with an empty value is written as `Name: ` by FreeSWITCH; accept the bare
            # form from other peers too.
            name, sep, value = line.partition(":")
            if not sep:
                raise EslProtocolError(f"header line without ':': {line[:80]!r}")
        headers.append((name, value))
    return tuple(headers)


def _content_length(headers: Headers) -> int | None:
    for name, value in headers:
        if name.lower() == "content-length":
            return _parse_length(value)
    return None


def _parse_length(value: str) -> int:
    """A Content-Length value, refused unless a whole number within MAX_BODY."""
    try:
        length = int(value.strip())
    except ValueError as exc:
        raise EslProtocolError(f"bad Content-Length {value!r}") from exc
    if length < 0 or length > MAX_BODY:
        raise EslProtocolError(f"Content-Length {length} out of bounds")
    return length


def _header(headers: Headers, name: str) -> str | None:
    lname = name.lower()
    for key, value in headers:
        if key.lower() == lname:
            return value
    return None


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame from FreeSWITCH: outer headers in wire order and the raw body."""

    headers: Headers
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first header called `name` (case-insensitive), or None."""
        return _header(self.headers, name)

    @property
    def content_type(self) -> str:
        return self.header("Content-Type") or ""

    @property
    def reply_text(self) -> str | None:
        """`Reply-Text` of a `command/reply` (`+OK accepted`, `-ERR invalid`...)."""
        return self.header("Reply-Text")

    @property
    def text(self) -> str:
        """The body as text (api replies, disconnect notices)."""
        return _decode(self.body)

    def __bytes__(self) -> bytes:
        return render_frame(self)

    @classmethod
    def parse(cls, data: bytes) -> Frame:
        """Exactly one complete frame."""
        parser = EslClientParser()
        frames = parser.feed(data)
        if len(frames) != 1 or parser.buffered:
            raise EslProtocolError(f"expected one frame, got {len(frames)} (+{parser.buffered} B)")
        return frames[0]


class _FrameSplitter:
    """Shared incremental splitting: header block up to the empty line, then the body."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buf)

    def _next(self, first_line_is_command: bool = False) -> tuple[bytes, bytes] | None:
        # Blank lines between frames carry nothing; libesl skips them as well.
        while self._buf[:1] == b"\n" or self._buf[:2] == b"\r\n":
            del self._buf[: 1 if self._buf[:1] == b"\n" else 2]
        end = self._buf.find(b"\n\n")
        crlf_end = self._buf.find(b"\r\n\r\n")
        sep_len = 2
        if crlf_end != -1 and (end == -1 or crlf_end < end):
            end, sep_len = crlf_end, 4
        if end == -1:
            if len(self._buf) > MAX_HEADER_BLOCK:
                raise EslProtocolError("header block too long")
            return None
        block = bytes(self._buf[:end])
        header_part = block.partition(b"\n")[2] if first_line_is_command else block
        length = _content_length(_parse_header_lines(header_part)) or 0
        start = end + sep_len
        if len(self._buf) < start + length:
            return None
        body = bytes(self._buf[start : start + length])
        del self._buf[: start + length]
        return block, body


class EslClientParser(_FrameSplitter):
    """What a client runs on the bytes FreeSWITCH sends: `feed(data)` returns whole frames."""

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        while (split := self._next()) is not None:
            block, body = split
            frames.append(Frame(_parse_header_lines(block), body))
        return frames


@dataclass(frozen=True, slots=True)
class Command:
    """One command from a client: `api conference room1 list`, `auth ClueCon`, ..."""

    line: str
    headers: Headers = ()
    body: bytes = b""

    @property
    def name(self) -> str:
        """The command word, lower-cased: `auth`, `api`, `bgapi`, `event`, `exit`..."""
        return self.line.split(" ", 1)[0].lower()

    @property
    def arg(self) -> str:
        """Everything after the command word (`status` for `api status`)."""
        parts = self.line.split(" ", 1)
        return parts[1].strip() if len(parts) == 2 else ""

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)

    def __bytes__(self) -> bytes:
        return render_command(self.line, self.headers, self.body)


@dataclass(frozen=True, slots=True)
class EventSubscription:
    """The argument of `event plain|json|xml <names...>`."""

    format: str
    names: tuple[str, ...]


def parse_event_subscription(arg: str) -> EventSubscription:
    """`plain CUSTOM conference::maintenance` -> format `plain`, names (CUSTOM, conf...)."""
    words = arg.split()
    if not words or words[0].lower() not in ("plain", "json", "xml"):
        # mod_event_socket takes a missing format as plain.
        return EventSubscription("plain", tuple(words))
    return EventSubscription(words[0].lower(), tuple(words[1:]))


class EslServerParser(_FrameSplitter):
    """What a server runs on the bytes a client sends: `feed(data)` returns whole commands."""

    def feed(self, data: bytes) -> list[Command]:
        self._buf += data
        commands: list[Command] = []
        while (split := self._next(first_line_is_command=True)) is not None:
            block, body = split
            first, _, rest = block.partition(b"\n")
            line = _decode(first.removesuffix(b"\r")).strip()
            commands.append(Command(line, _parse_header_lines(rest), body))
        return commands


def render_frame(frame: Frame) -> bytes:
    """A frame's bytes, headers in the order given."""
    head = "".join(f"{name}: {value}\n" for name, value in frame.headers)
    return _encode(head) + b"\n" + frame.body


def render_command(line: str, headers: Headers = (), body: bytes = b"") -> bytes:
    """A client command: `api status` -> b'api status\\n\\n'."""
    if "\n" in line or "\r" in line:
        # A newline would end the command early and smuggle in another one.
        raise ValueError("an ESL command line must not contain a line break")
    head = line + "\n" + "".join(f"{name}: {value}\n" for name, value in headers)
    return _encode(head) + b"\n" + body


def render_auth_request() -> bytes:
    """What FreeSWITCH sends first on every inbound connection."""
    return b"Content-Type: auth/request\n\n"


def render_command_reply(text: str, extra_headers: Headers = ()) -> bytes:
    """`Content-Type: command/reply` + `Reply-Text` (auth, event, exit, bgapi acks...)."""
    return render_frame(
        Frame((("Content-Type", COMMAND_REPLY), ("Reply-Text", text), *extra_headers))
    )


def render_api_response(body: str | bytes) -> bytes:
    """The reply to `api ...`: Content-Type first, then Content-Length (bytes, not chars)."""
    raw = body if isinstance(body, bytes) else _encode(body)
    return render_frame(
        Frame((("Content-Type", API_RESPONSE), ("Content-Length", str(len(raw)))), raw)
    )


def render_disconnect_notice(body: str = DISCONNECT_NOTICE_BODY) -> bytes:
    """Sent before FreeSWITCH closes the socket (after `exit`, or a refused `auth`)."""
    raw = _encode(body)
    return render_frame(
        Frame((("Content-Type", DISCONNECT_NOTICE), ("Content-Length", str(len(raw)))), raw)
    )


def render_rude_rejection(body: str = RUDE_REJECTION_BODY) -> bytes:
    """Sent instead of `auth/request` to a peer the event-socket ACL refuses."""
    raw = _encode(body)
    return render_frame(
        Frame((("Content-Type", RUDE_REJECTION), ("Content-Length", str(len(raw)))), raw)
    )


# ---------------------------------------------------------------------------------------------
# the adapter's reader

RawFrame = tuple[dict[str, str], bytes]


def _outer_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_line in block.split(b"\n"):
        name, sep, value = raw_line.partition(b": ")
        if not sep:
            name, sep, value = raw_line.partition(b":")
            if not sep:
                line = _decode(raw_line)
                raise EslProtocolError(f"header line without ':': {line[:80]!r}")
        headers[_decode(name)] = _decode(value)
    return headers


class EslFrameReader:
    """What the FreeSWITCH adapter's reader runs on the bytes FreeSWITCH sends.

    Same frames as `EslClientParser`, made for a reader that receives large chunks (several
    events per `recv`): headers come as a dict (a repeated name: the last value, as
    greenswitch's own events have them), the body stays bytes, and received chunks are only
    joined once the pending frame can be complete, so a large body is not copied again for
    every chunk. Lines end with `\\n` only, as mod_event_socket writes them.
    """

    __slots__ = ("_chunks", "_have", "_need")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._have = 0
        self._need = 1  # bytes buffered before the pending frame can be whole

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return self._have

    def feed(self, data: bytes) -> list[RawFrame]:
        """Whole frames completed by `data`, in order, as (outer headers, body)."""
        if data:
            self._chunks.append(data)
            self._have += len(data)
        if self._have < self._need:
            return []
        chunks = self._chunks
        buf = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        frames: list[RawFrame] = []
        pos = 0
        size = len(buf)
        need = size + 1
        while pos < size:
            if buf[pos] == 0x0A:  # blank lines between frames carry nothing (libesl skips them)
                pos += 1
                continue
            end = buf.find(b"\n\n", pos)
            if end == -1:
                if size - pos > MAX_HEADER_BLOCK:
                    raise EslProtocolError("header block too long")
                break
            headers = _outer_headers(buf[pos:end])
            length = 0
            raw_length = headers.get("Content-Length")
            if raw_length is not None:
                length = _parse_length(raw_length)
            start = end + 2
            if start + length > size:
                need = start + length
                break
            frames.append((headers, buf[start : start + length]))
            pos = start + length
        if pos >= size:
            self._chunks, self._have, self._need = [], 0, 1
        else:
            rest = buf[pos:] if pos else buf
            self._chunks, self._have = [rest], size - pos
            self._need = need - pos
        return frames
