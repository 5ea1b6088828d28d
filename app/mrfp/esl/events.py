"""ESL events, sans-IO: `text/event-plain` and `text/event-json` bodies, both ways.

FreeSWITCH 1.10 (`switch_event_serialize`, `switch_event_serialize_json`):
- plain: one `Name: value\\n` per header with the value URL-encoded by `switch_url_encode`
  (header names are not encoded), then `\\n`; an event with a body instead ends with
  `Content-Length: N\\n\\n<body>`.
- json: cJSON printed unformatted, one member per header in event order (duplicates kept: a
  `floor-change` repeats the Conference-* headers), array headers as JSON arrays, and a body as
  `"Content-Length": "N", "_body": "..."` at the end.
The outer frame is `Content-Length` then `Content-Type: text/event-<format>` (`frames.py`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from app.mrfp.esl.frames import (
    EVENT_JSON,
    EVENT_PLAIN,
    EslProtocolError,
    Frame,
    Headers,
    render_frame,
)

# switch_url_encode: these printable bytes are escaped, as is every byte outside ' '..'~'.
_URL_UNSAFE = frozenset(b'\r\n "#%&+:;<=>?@[\\]^`{|}')
_HEX_UPPER = b"0123456789ABCDEF"
_HEX_ANY = frozenset(b"0123456789abcdefABCDEF")

# FreeSWITCH writes an array header in plain events as `ARRAY::a|:b` (switch_event.c).
_ARRAY_PREFIX = "ARRAY::"
_ARRAY_SEP = "|:"


# A value with none of the bytes switch_url_encode escapes is written as it is (most of a
# verbose event's ~100 values): one regex scan instead of a loop over its bytes.
_NEEDS_ESCAPE = re.compile(r'[^ -~]|[\r\n "#%&+:;<=>?@\[\\\]^`{|}]')


def url_encode(value: str) -> str:
    """`switch_url_encode` of FreeSWITCH 1.10, byte for byte.

    It does not double-encode: a `%` already followed by two upper-case hex digits is kept.
    """
    if _NEEDS_ESCAPE.search(value) is None:
        return value
    return _escape(value)


def _escape(value: str) -> str:
    """url_encode's byte loop (what every value went through before the regex check)."""
    raw = value.encode("utf-8", "surrogateescape")
    out = bytearray()
    n = len(raw)
    for i, byte in enumerate(raw):
        keep_percent = (
            byte == 0x25
            and i + 2 < n  # two more bytes follow
            and raw[i + 1] in _HEX_UPPER
            and raw[i + 2] in _HEX_UPPER
        )
        if not keep_percent and (byte < 0x20 or byte > 0x7E or byte in _URL_UNSAFE):
            out += bytes((0x25, _HEX_UPPER[byte >> 4], _HEX_UPPER[byte & 15]))
        else:
            out.append(byte)
    return out.decode("ascii", "surrogateescape")


def url_decode(value: str) -> str:
    """`switch_url_decode`: `%XX` (either case) to the byte; nothing else changes (no `+`)."""
    if "%" not in value:
        return value
    return unquote_to_bytes(value.encode("utf-8", "surrogateescape")).decode(
        "utf-8", "surrogateescape"
    )


# `urllib.parse.unquote_to_bytes` has exactly those rules (a `%` without two hex digits after
# it stays as it is; `+` is not a space), and runs per `%` instead of per byte.
@dataclass(frozen=True, slots=True)
class EslEvent:
    """An event's headers (URL-decoded, in order, duplicates kept) and optional body."""

    headers: Headers
    body: str | None = None

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first header called `name` (exact case, as FreeSWITCH names are)."""
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def as_dict(self) -> dict[str, str]:
        """Headers as a dict; for a repeated name the first value wins."""
        out = dict(self.headers)  # at C speed; right unless a name repeats
        if len(out) != len(self.headers):
            out = {}
            for key, value in self.headers:
                out.setdefault(key, value)
        return out

    @property
    def name(self) -> str | None:
        return self.get("Event-Name")

    @property
    def subclass(self) -> str | None:
        return self.get("Event-Subclass")


# ---------------------------------------------------------------------------------------------
# plain

# Raw header line -> (name, decoded value), for the plain-event hot path; bounded.
_PLAIN_LINES: dict[bytes, tuple[str, str]] = {}
_PLAIN_LINES_MAX = 8192


def _plain_line(raw_line: bytes) -> tuple[str, str]:
    raw_name, colon, raw_value = raw_line.partition(b": ")
    if not colon:
        line = raw_line.decode("utf-8", "surrogateescape")
        raise EslProtocolError(f"event header without ': ': {line[:80]!r}")
    # Header names are not encoded (switch_event_serialize); values are.
    value = unquote_to_bytes(raw_value) if b"%" in raw_value else raw_value
    return raw_name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")


def parse_event_plain_body(body: bytes) -> EslEvent:
    """The body of a `text/event-plain` frame."""
    block, sep, rest = body.partition(b"\n\n")
    headers: list[tuple[str, str]] = []
    append = headers.append
    memo = _PLAIN_LINES
    # Hot path (the ESL reader, once per event): most lines (Core-UUID, host names, the
    # conference's name and profile, calling file and function ...) repeat from one event to
    # the next, so a line seen before is one dict lookup; a new one is split and decoded at
    # the byte level.
    for raw_line in block.split(b"\n"):
        pair = memo.get(raw_line)
        if pair is None:
            if not raw_line:
                continue
            pair = _plain_line(raw_line)
            if len(memo) >= _PLAIN_LINES_MAX:
                memo.clear()
            memo[raw_line] = pair
        append(pair)
    event_body: str | None = None
    # switch_event_serialize ends an event that has a body with `Content-Length: N\n\n<body>`;
    # that last header belongs to the body, not to the event.
    if headers and headers[-1][0] == "Content-Length" and sep:
        try:
            length = int(headers[-1][1])
        except ValueError as exc:
            raise EslProtocolError("bad event Content-Length") from exc
        raw_body = rest[:length]
        if len(raw_body) != length:
            raise EslProtocolError("event body shorter than its Content-Length")
        event_body = raw_body.decode("utf-8", "surrogateescape")
        headers.pop()
    return EslEvent(tuple(headers), event_body)


# Raw value -> decoded, bounded: most values read on the hot path (Event-Subclass, Action, the
# conference's name...) repeat from one event to the next, and urllib's unquote runs in Python.
_PLAIN_VALUES: dict[bytes, str] = {}
_PLAIN_VALUES_MAX = 4096


def _plain_value(raw: bytes) -> str:
    value = _PLAIN_VALUES.get(raw)
    if value is None:
        value = (unquote_to_bytes(raw) if b"%" in raw else raw).decode("utf-8", "surrogateescape")
        if len(_PLAIN_VALUES) >= _PLAIN_VALUES_MAX:
            _PLAIN_VALUES.clear()
        _PLAIN_VALUES[raw] = value
    return value


# Header name -> (b"Name: ", b"\nName: "), for `plain_line_value`; bounded.
_LINE_KEYS: dict[str, tuple[bytes, bytes]] = {}
_LINE_KEYS_MAX = 1024


def plain_line_value(body: bytes, name: str) -> str | None:
    """The value (URL-decoded) of the first line of a plain body that starts with `name: `.

    One `find` at C speed; no other line is split or decoded, so a reader that needs a few of
    the ~100 headers FreeSWITCH writes (~170 with verbose-events) pays for those only.
    FreeSWITCH URL-encodes every value (a line is always one whole header), so this is the
    value `parse_event_plain_body(body).get(name)` gives, except in two cases it never
    produces for `conference::maintenance` events: the headers lack `name` and the event's own
    body (after `Content-Length`) has a line starting with it; or the headers hold an empty
    line before it. Not for `Content-Length`, which belongs to the event's body.
    """
    keys = _LINE_KEYS.get(name)
    if keys is None:
        raw = name.encode("utf-8", "surrogateescape") + b": "
        keys = (raw, b"\n" + raw)
        if len(_LINE_KEYS) >= _LINE_KEYS_MAX:
            _LINE_KEYS.clear()
        _LINE_KEYS[name] = keys
    first, line = keys
    if body.startswith(first):
        start = len(first)
    else:
        at = body.find(line)
        if at < 0:
            return None
        start = at + len(line)
    stop = body.find(b"\n", start)
    return _plain_value(body[start:] if stop < 0 else body[start:stop])


# Encoded `Name: value` lines by (name, value): a conference's events repeat most of their
# lines (its name, the member's channel variables). Bounded: cleared when full.
_LINES: dict[tuple[str, str], str] = {}
_LINES_MAX = 8192


def serialize_event_plain(headers: Iterable[tuple[str, str]], body: str | None = None) -> bytes:
    """The body of a `text/event-plain` frame (switch_event_serialize with encoding on)."""
    lines = _LINES
    parts: list[str] = []
    for name, value in headers:
        key = (name, value)
        line = lines.get(key)
        if line is None:
            if len(lines) >= _LINES_MAX:
                lines.clear()
            line = lines[key] = f"{name}: {url_encode(value)}\n"
        parts.append(line)
    text = "".join(parts)
    if body:
        raw = body.encode("utf-8", "surrogateescape")
        return (text + f"Content-Length: {len(raw)}\n\n").encode("utf-8", "surrogateescape") + raw
    return (text + "\n").encode("utf-8", "surrogateescape")


def render_event_plain(headers: Iterable[tuple[str, str]], body: str | None = None) -> bytes:
    """A whole `text/event-plain` frame, as mod_event_socket writes it."""
    inner = serialize_event_plain(headers, body)
    return render_frame(
        Frame((("Content-Length", str(len(inner))), ("Content-Type", EVENT_PLAIN)), inner)
    )


# ---------------------------------------------------------------------------------------------
# json


def cjson_string(value: str) -> str:
    """A JSON string as cJSON prints it: only `"`, `\\\\` and control bytes escaped
    (`\\b \\f \\n \\r \\t`, others `\\u00xx`); `/` and non-ASCII are left alone."""
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif code < 0x20:
            out.append(
                {"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(
                    ch, f"\\u{code:04x}"
                )
            )
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _cjson_number(value: int | float) -> str:
    # cJSON print_number: integral values in int range as %d, others %f.
    if isinstance(value, int) or (value.is_integer() and abs(value) < 2**31):
        return str(int(value))
    return f"{value:f}"


def render_cjson(value: Any, *, formatted: bool = True, _depth: int = 0) -> str:
    """`cJSON_Print` (formatted: tabs, as in `json_list` replies) or `cJSON_PrintUnformatted`.

    Objects are dicts (insertion order) or lists of (key, value) pairs (duplicates kept).
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return _cjson_number(value)
    if isinstance(value, str):
        return cjson_string(value)
    if isinstance(value, Mapping) or (
        isinstance(value, list) and value and isinstance(value[0], _Pair)
    ):
        pairs = list(value.items()) if isinstance(value, Mapping) else list(value)
        depth = _depth + 1
        if not formatted:
            inner = ",".join(
                f"{cjson_string(k)}:{render_cjson(v, formatted=False, _depth=depth)}"
                for k, v in pairs
            )
            return "{" + inner + "}"
        if not pairs:
            return "{\n" + "\t" * (depth - 1) + "}"
        lines = [
            "\t" * depth + f"{cjson_string(k)}:\t{render_cjson(v, _depth=depth)}" for k, v in pairs
        ]
        return "{\n" + ",\n".join(lines) + "\n" + "\t" * (depth - 1) + "}"
    if isinstance(value, list | tuple):
        # cJSON print_array passes depth+1 to its items and joins them with ", " when formatted.
        items = [render_cjson(v, formatted=formatted, _depth=_depth + 1) for v in value]
        return "[" + (", " if formatted else ",").join(items) + "]"
    raise TypeError(f"cannot print {type(value).__name__} as cJSON")


class _Pair(tuple[str, Any]):
    """A (key, value) member of a JSON object kept as pairs (to allow repeated keys)."""

    __slots__ = ()


def _pairs_hook(pairs: list[tuple[str, Any]]) -> list[_Pair]:
    return [_Pair(p) for p in pairs]


def parse_event_json_body(body: bytes) -> EslEvent:
    """The body of a `text/event-json` frame."""
    try:
        members = json.loads(body.decode("utf-8", "surrogateescape"), object_pairs_hook=_pairs_hook)
    except ValueError as exc:
        raise EslProtocolError(f"event-json body is not JSON: {exc}") from exc
    if not isinstance(members, list):
        raise EslProtocolError("event-json body is not an object")
    headers: list[tuple[str, str]] = []
    event_body: str | None = None
    for name, value in members:
        if name == "_body" and isinstance(value, str):
            event_body = value
            continue
        if isinstance(value, list):
            value = _ARRAY_PREFIX + _ARRAY_SEP.join(str(v) for v in value)
        elif not isinstance(value, str):
            raise EslProtocolError(f"event-json header {name!r} is not a string")
        headers.append((name, value))
    if event_body is not None and headers and headers[-1][0] == "Content-Length":
        headers.pop()
    return EslEvent(tuple(headers), event_body)


def serialize_event_json(headers: Iterable[tuple[str, str]], body: str | None = None) -> bytes:
    """The body of a `text/event-json` frame (switch_event_serialize_json)."""
    members: list[_Pair] = []
    for name, value in headers:
        if value.startswith(_ARRAY_PREFIX):
            members.append(_Pair((name, value[len(_ARRAY_PREFIX) :].split(_ARRAY_SEP))))
        else:
            members.append(_Pair((name, value)))
    if body is not None:
        raw_len = len(body.encode("utf-8", "surrogateescape"))
        members.append(_Pair(("Content-Length", str(raw_len))))
        members.append(_Pair(("_body", body)))
    if not members:
        return b"{}"
    return render_cjson(members, formatted=False).encode("utf-8", "surrogateescape")


def render_event_json(headers: Iterable[tuple[str, str]], body: str | None = None) -> bytes:
    """A whole `text/event-json` frame, as mod_event_socket writes it."""
    inner = serialize_event_json(headers, body)
    return render_frame(
        Frame((("Content-Length", str(len(inner))), ("Content-Type", EVENT_JSON)), inner)
    )


# ---------------------------------------------------------------------------------------------


def parse_event(frame: Frame) -> EslEvent:
    """The event carried by a `text/event-plain` or `text/event-json` frame."""
    ctype = frame.content_type
    if ctype == EVENT_PLAIN:
        return parse_event_plain_body(frame.body)
    if ctype == EVENT_JSON:
        return parse_event_json_body(frame.body)
    raise EslProtocolError(f"not an event frame: {ctype!r}")


def render_event(event: EslEvent, fmt: str = "plain") -> bytes:
    """`render_event_plain` or `render_event_json` of a parsed event."""
    if fmt == "json":
        return render_event_json(event.headers, event.body)
    if fmt == "plain":
        return render_event_plain(event.headers, event.body)
    raise ValueError(f"unsupported event format {fmt!r}")


def parse_cjson(text: str) -> Any:
    """JSON as written by FreeSWITCH (`json_list`), objects as dicts in order."""
    return json.loads(text)
