"""SIP requests and responses (RFC 3261 §7, §20, §25): parse, inspect, build, serialize.

Sans-IO. Parsing is eager only for what framing needs (the start line and where each header
begins) and lazy for header values: a typed accessor parses its header on first access and
caches the result until that header changes. `validate_request` / `validate_response` parse
the headers every transaction needs, so that a malformed message is refused with a 400 whose
reason names the fault before it reaches a transaction (RFC 3261 §16.3, §8.2, RFC 4475).

Serializing writes the start line from its fields and each header as `Name: value`, with a
Content-Length that matches the body. A parsed message whose headers are still equal to what
was parsed (and whose body length still matches its one Content-Length) writes its header
lines as they arrived instead: the same message, without rebuilding every line. Bytes that
are not UTF-8 survive either way (surrogateescape), so a message can be relayed unchanged.

Hot-path notes (tests/bench/bench_sip.py): one split into lines, then one dict lookup per line
seen before (whole lines and start lines recur within a dialog and across a conference), else
one `partition(": ")` and one lookup (header spellings seen before map straight to canonical
names), no regex per line; anything unusual (folding, odd spacing, a new spelling) drops to a
slow path. Validation gathers the headers with one `dict()` when no name repeats. Every memo
holds immutable values by their text and is bounded (cleared when full).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from app.sip.errors import ParseError
from app.sip.headers import (
    KNOWN_NAMES,
    MULTI_VALUE,
    CSeq,
    ParamValue,
    RAck,
    Via,
    canonical_name,
    split_commas,
)
from app.sip.uri import AbsoluteUri, NameAddr, SipUri, Uri, is_token, parse_uri_copy

SIP_VERSION = "SIP/2.0"
_ENC = "utf-8"
_ERR = "surrogateescape"

_T = TypeVar("_T")

# Default limits; the transports pass their configured ones.
MAX_MESSAGE_SIZE = 65535
MAX_HEADERS = 256

REASON_PHRASES = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


# Parsed From/To/Contact/Route values by their text: the messages of one dialog repeat the
# same addresses, so each is parsed once. A NameAddr is mutable, so every caller gets its own
# copy (equal to a fresh parse); values that fail to parse are not kept and fail again.
_ADDR_MEMO: dict[str, NameAddr] = {}
_MEMO_MAX = 1024


def _parse_name_addr(text: str) -> NameAddr:
    found = _ADDR_MEMO.get(text)
    if found is None:
        found = NameAddr.parse(text)
        if len(_ADDR_MEMO) >= _MEMO_MAX:
            _ADDR_MEMO.clear()  # crude but bounded: a busy focus refills it at once
        _ADDR_MEMO[text] = found
    return found.copy()


# CSeq is frozen, so one parsed value can be shared ("1 INVITE", "2 PRACK" ... recur).
_CSEQ_MEMO: dict[str, CSeq] = {}


def _parse_cseq(text: str) -> CSeq:
    found = _CSEQ_MEMO.get(text)
    if found is None:
        found = CSeq.parse(text)
        if len(_CSEQ_MEMO) >= _MEMO_MAX:
            _CSEQ_MEMO.clear()
        _CSEQ_MEMO[text] = found
    return found


# The received header section of a parsed message: the text after the start line, the
# headers as parsed, and its single Content-Length value (see Message.__bytes__).
_Wire = tuple[str, list[tuple[str, str]], str]


class Message:
    """Common part of requests and responses: an ordered header list and a body."""

    __slots__ = ("_cache", "_wire", "body", "headers")

    def __init__(self, headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> None:
        # (canonical name, raw value) in wire order; names of unknown headers keep their case.
        self.headers: list[tuple[str, str]] = headers if headers is not None else []
        self.body = body
        self._cache: dict[str, Any] = {}
        self._wire: _Wire | None = None

    # -- raw access -------------------------------------------------------------------------

    def get(self, name: str) -> str | None:
        """The first value of a header, as written (a list header's whole first line)."""
        name = canonical_name(name)
        if name in KNOWN_NAMES:
            # Known headers are always stored under their canonical spelling.
            for hname, value in self.headers:
                if hname == name:
                    return value
            return None
        lower = name.lower()
        for hname, value in self.headers:
            if hname.lower() == lower:
                return value
        return None

    def get_lines(self, name: str) -> list[str]:
        """Every header line of that name, unsplit."""
        name = canonical_name(name)
        if name in KNOWN_NAMES:
            return [v for n, v in self.headers if n == name]
        lower = name.lower()
        return [v for n, v in self.headers if n.lower() == lower]

    def values(self, name: str) -> list[str]:
        """Every value of a header, list headers split at commas (RFC 3261 §7.3.1)."""
        name = canonical_name(name)
        if name in KNOWN_NAMES:
            lines = [v for n, v in self.headers if n == name]  # get_lines, without a 2nd call
        else:
            lines = self.get_lines(name)
        if name not in MULTI_VALUE:
            return [v.strip() for v in lines]
        return _split_lines(name, lines)

    def has(self, name: str) -> bool:
        return self.get(name) is not None

    def set(self, name: str, value: str | object) -> None:
        """Replace every line of the header with one value (kept where the first one was)."""
        name = canonical_name(name)
        text = str(value)
        lower = name.lower()
        out: list[tuple[str, str]] = []
        placed = False
        for hname, hvalue in self.headers:
            if hname.lower() == lower:
                if not placed:
                    out.append((name, text))
                    placed = True
            else:
                out.append((hname, hvalue))
        if not placed:
            out.append((name, text))
        self.headers = out
        self._cache.clear()

    def add(self, name: str, value: str | object, *, first: bool = False) -> None:
        """Add a header line; `first` puts it above the other lines of the same name
        (a new Via or Record-Route goes on top, RFC 3261 §16.6)."""
        name = canonical_name(name)
        if first:
            lower = name.lower()
            for i, (hname, _) in enumerate(self.headers):
                if hname.lower() == lower:
                    self.headers.insert(i, (name, str(value)))
                    break
            else:
                self.headers.append((name, str(value)))
        else:
            self.headers.append((name, str(value)))
        self._cache.clear()

    def remove(self, name: str) -> None:
        lower = canonical_name(name).lower()
        self.headers = [(n, v) for n, v in self.headers if n.lower() != lower]
        self._cache.clear()

    def remove_first_value(self, name: str) -> None:
        """Pop the topmost value of a list header (a Via, a Route), keeping the rest."""
        name = canonical_name(name)
        lower = name.lower()
        for i, (hname, value) in enumerate(self.headers):
            if hname.lower() == lower:
                parts = split_commas(value)
                if len(parts) > 1:
                    self.headers[i] = (hname, ", ".join(parts[1:]))
                else:
                    del self.headers[i]
                break
        self._cache.clear()

    def set_top_via(self, via: Via) -> None:
        """Write `via` in place of the topmost Via value, leaving every other one as it was
        (RFC 3261 §18.2.1: received/rport go into the top Via)."""
        for i, (name, value) in enumerate(self.headers):
            if name == "Via":
                rest = split_commas(value)[1:]
                self.headers[i] = ("Via", ", ".join([str(via), *rest]))
                self._cache.clear()
                return
        raise ParseError("Missing Via header")

    def headers_changed(self) -> None:
        """Forget parsed header values after editing `headers` directly."""
        self._cache.clear()

    def release_parsed(self) -> None:
        """Forget the parsed header values and the received header block; they come back
        (parsed again) if asked for. For messages kept only in case they are needed again,
        as a finished transaction keeps its request and last response for 64*T1 to absorb
        retransmissions (RFC 3261 §17): their parsed Vias, URIs and name-addrs would live as
        long, for the garbage collector to walk again and again."""
        self._cache.clear()
        self._wire = None

    # -- typed access (parsed once, cached) -------------------------------------------------

    def _single(self, name: str) -> str:
        lines = self.get_lines(name)
        if not lines:
            raise ParseError(f"Missing {name} header")
        if len(lines) > 1:
            raise ParseError(f"Multiple {name} headers")
        return lines[0].strip()

    def _name_addr(self, name: str) -> NameAddr:
        found = self._cache.get(name)
        if found is None:
            found = self._cache[name] = _parse_name_addr(self._single(name))
        return found

    def _name_addrs(self, name: str) -> list[NameAddr]:
        found = self._cache.get(name)
        if found is None:
            found = self._cache[name] = [_parse_name_addr(v) for v in self.values(name)]
        return found

    def _optional_name_addr(self, name: str) -> NameAddr | None:
        return self._name_addr(name) if self.has(name) else None

    @property
    def vias(self) -> list[Via]:
        found = self._cache.get("Via")
        if found is None:
            found = self._cache["Via"] = [Via.parse(v) for v in self.values("Via")]
        return found

    @property
    def top_via(self) -> Via:
        vias = self._cache.get("Via")  # parsed by validation for every received message
        if not vias:
            vias = self.vias
            if not vias:
                raise ParseError("Missing Via header")
        return vias[0]

    @property
    def from_(self) -> NameAddr:
        found = self._cache.get("From")
        return self._name_addr("From") if found is None else found

    @property
    def to(self) -> NameAddr:
        found = self._cache.get("To")
        return self._name_addr("To") if found is None else found

    @property
    def call_id(self) -> str:
        found = self._cache.get("Call-ID")
        if found is None:
            found = self._cache["Call-ID"] = self._single("Call-ID")
        return found

    @property
    def cseq(self) -> CSeq:
        found = self._cache.get("CSeq")
        if found is None:
            found = self._cache["CSeq"] = _parse_cseq(self._single("CSeq"))
        return found

    @property
    def contacts(self) -> list[NameAddr]:
        found = self._cache.get("Contact")
        if found is None:
            found = self._cache["Contact"] = _contacts(self.get_lines("Contact"))
        return found

    @property
    def contact(self) -> NameAddr | None:
        contacts = self.contacts
        return contacts[0] if contacts else None

    @property
    def routes(self) -> list[NameAddr]:
        return self._name_addrs("Route")

    @property
    def record_routes(self) -> list[NameAddr]:
        return self._name_addrs("Record-Route")

    @property
    def path(self) -> list[NameAddr]:
        return self._name_addrs("Path")

    @property
    def service_routes(self) -> list[NameAddr]:
        return self._name_addrs("Service-Route")

    @property
    def p_asserted_identities(self) -> list[NameAddr]:
        return self._name_addrs("P-Asserted-Identity")

    @property
    def p_preferred_identities(self) -> list[NameAddr]:
        return self._name_addrs("P-Preferred-Identity")

    @property
    def refer_to(self) -> NameAddr | None:
        return self._optional_name_addr("Refer-To")

    @property
    def referred_by(self) -> NameAddr | None:
        return self._optional_name_addr("Referred-By")

    @property
    def max_forwards(self) -> int | None:
        value = self.get("Max-Forwards")
        if value is None:
            return None
        value = value.strip()
        if not value.isdigit():
            raise ParseError("Bad Max-Forwards")
        # RFC 4475 §3.1.2.4: an overlarge value may be treated as the maximum.
        return min(int(value), 255)

    def _tokens(self, name: str) -> frozenset[str]:
        # Immutable, so kept with the parsed values (under a key no header name has) until
        # the headers change: the focus asks for Require several times per request.
        key = "?" + name
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = frozenset(v.lower() for v in self.values(name) if v)
        return found

    @property
    def require(self) -> frozenset[str]:
        return self._tokens("Require")

    @property
    def proxy_require(self) -> frozenset[str]:
        return self._tokens("Proxy-Require")

    @property
    def supported(self) -> frozenset[str]:
        return self._tokens("Supported")

    @property
    def allow(self) -> frozenset[str]:
        return frozenset(v.upper() for v in self.values("Allow") if v)

    @property
    def allow_events(self) -> frozenset[str]:
        return self._tokens("Allow-Events")

    def _int(self, name: str) -> int | None:
        value = self.get(name)
        if value is None:
            return None
        value = value.strip()
        if not value.isdigit():
            raise ParseError(f"Bad {name} value")
        return int(value)

    @property
    def rseq(self) -> int | None:
        return self._int("RSeq")

    @property
    def rack(self) -> RAck | None:
        value = self.get("RAck")
        return None if value is None else RAck.parse(value)

    @property
    def expires(self) -> int | None:
        value = self.get("Expires")
        if value is None:
            return None
        value = value.strip()
        if not value.isdigit():
            raise ParseError("Bad Expires value")
        return min(int(value), 2**32 - 1)

    def _param_value(self, name: str) -> ParamValue | None:
        value = self.get(name)
        return None if value is None else ParamValue.parse(value)

    @property
    def event(self) -> ParamValue | None:
        return self._param_value("Event")

    @property
    def subscription_state(self) -> ParamValue | None:
        return self._param_value("Subscription-State")

    @property
    def session_expires(self) -> ParamValue | None:
        return self._param_value("Session-Expires")

    @property
    def content_type(self) -> str | None:
        value = self._param_value("Content-Type")
        return None if value is None else value.value.lower()

    @property
    def content_length(self) -> int | None:
        return self._int("Content-Length")

    # -- serialization ----------------------------------------------------------------------

    def _start_line(self) -> str:
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        # Content-Length always states the real body length (RFC 3261 §18.3, §20.14); a
        # message that had none gets one, so it can go over a stream transport as well.
        length = str(len(self.body))
        wire = self._wire
        if wire is not None and wire[2] == length and wire[1] == self.headers:
            # Unchanged since it was parsed (compared by value, so any edit shows): its header
            # lines go out as they came in, as a relaying element does (RFC 3261 §16.6 changes
            # only what it must), with their one Content-Length still right.
            head = f"{self._start_line()}\r\n{wire[0]}\r\n\r\n".encode(_ENC, _ERR)
            return head + self.body if self.body else head
        # Start line and header lines, each ended by CRLF.
        text = "\r\n".join([self._start_line(), *map(": ".join, self.headers), ""])
        # The common case, checked at C speed: one Content-Length line (found from the end,
        # where it usually is), already right.
        at = text.rfind("\r\nContent-Length: ")
        if at < 0:
            # None at all (what the focus builds; names are stored canonical, so none under
            # another spelling either): it goes at the end of the headers.
            text = f"{text}Content-Length: {length}\r\n\r\n"
        elif (
            not text.startswith(length + "\r\n", at + 18)
            or text.find("\r\nContent-Length: ", 0, at) >= 0
        ):
            text = self._head_fixing_length(length)
        else:
            text += "\r\n"
        head = text.encode(_ENC, _ERR)
        return head + self.body if self.body else head

    def _head_fixing_length(self, length: str) -> str:
        lines = [self._start_line()]
        wrote_length = False
        for name, value in self.headers:
            if name == "Content-Length":
                if wrote_length:
                    continue
                value = length
                wrote_length = True
            lines.append(f"{name}: {value}")
        if not wrote_length:
            lines.append("Content-Length: " + length)
        lines.append("\r\n")
        return "\r\n".join(lines)

    def __str__(self) -> str:
        return bytes(self).decode(_ENC, "replace")


class Request(Message):
    __slots__ = ("method", "uri_text", "version")

    def __init__(
        self,
        method: str,
        uri: str | Uri,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        # Slots set directly rather than through Message.__init__: this runs once per
        # received message (the parser's hot path).
        self.headers = headers if headers is not None else []
        self.body = body
        self._cache = {}
        self._wire = None
        self.method = method
        self.version = version
        if isinstance(uri, str):
            self.uri_text = uri
        else:
            self.uri_text = str(uri)
            self._cache["@uri"] = uri

    @property
    def uri(self) -> Uri:
        found = self._cache.get("@uri")
        if found is None:
            found = self._cache["@uri"] = parse_uri_copy(self.uri_text)
        return found

    @uri.setter
    def uri(self, value: Uri) -> None:
        self.uri_text = str(value)
        self._cache["@uri"] = value

    @property
    def sip_uri(self) -> SipUri:
        uri = self.uri
        if not isinstance(uri, SipUri):
            raise ParseError(f"Not a SIP URI: {uri}", status=416)
        return uri

    def _start_line(self) -> str:
        return f"{self.method} {self.uri_text} {self.version}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri_text}>"


class Response(Message):
    __slots__ = ("reason", "status", "version")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        self.headers = headers if headers is not None else []
        self.body = body
        self._cache = {}
        self._wire = None
        self.status = status
        self.reason = REASON_PHRASES.get(status, "") if reason is None else reason
        self.version = version

    def _start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    @property
    def is_provisional(self) -> bool:
        return self.status < 200

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


# -- parsing --------------------------------------------------------------------------------


def _split_head(data: bytes, stream: bool) -> tuple[bytes, bytes] | None:
    """(head, rest) at the first empty line; None when a stream has not brought it yet."""
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return data[:end], data[end + 4 :]
    end = data.find(b"\n\n")  # bare LF line ends: tolerated (RFC 3261 §7 says CRLF)
    if end >= 0:
        return data[:end], data[end + 2 :]
    if stream:
        return None
    # A datagram ends the message: a missing blank line ends the headers (RFC 4475 §3.1.2.15).
    return data.rstrip(b"\r\n"), b""


def parse_head(head: bytes, max_headers: int = MAX_HEADERS) -> Request | Response:
    """Parse the start line and find every header's boundaries; values stay raw strings."""
    return _parse_head(head, max_headers)[0]


def _parse_head(head: bytes, max_headers: int) -> tuple[Request | Response, list[str]]:
    """The message and the values of its Content-Length lines (needed for framing)."""
    text = head.decode(_ENC, _ERR)
    sep = "\r\n" if "\r\n" in text else "\n"  # bare LF: tolerated (RFC 3261 §7 says CRLF)
    if sep == "\n" and "\r" in text:
        raise ParseError("Bare CR in header section")
    lines = text.split(sep)
    if len(lines) > max_headers + 1:
        raise ParseError("Too many header lines")
    start = lines[0]
    msg: Request | Response
    if start.startswith("SIP/"):
        status = _STATUS_LINES.get(start)
        if status is None:
            msg = _parse_status_line(start)
            _remember(_STATUS_LINES, start, (msg.status, msg.reason))
        else:
            msg = Response(*status)
    else:
        request = _REQUEST_LINES.get(start)
        if request is None:
            msg = _parse_request_line(start)
            _remember(_REQUEST_LINES, start, (msg.method, msg.uri_text))
        else:
            msg = Request(*request)
    headers = msg.headers
    lengths: list[str] = []
    append = headers.append
    known = _NAME_CACHE.get
    seen = _LINES.get
    # A request's Via line names a new branch (transaction) each time: never worth keeping.
    unique = "Via" if msg.__class__ is Request else ""
    exact = sep == "\r\n"  # one header per line, CRLF: the lines can be sent again as they are
    it = iter(lines)
    next(it)
    for line in it:
        # Hottest path: a whole line seen before (see _LINES), already split.
        header = seen(line)
        if header is not None:
            append(header)
            continue
        # Hot path: `Name: value` with a name spelling seen before. Splitting at ": " leaves
        # the value without its usual leading space. The cache holds only valid tokens (never
        # a ':' or a leading blank) and never Content-Length, so a line of any other shape
        # takes the slow path, which also handles folding and notes Content-Length.
        raw_name, _, value = line.partition(": ")
        name = known(raw_name)
        if name is None:
            if raw_name == "Content-Length":  # one per message, kept out of the name cache
                value = value.strip()
                lengths.append(value)
                append(("Content-Length", value))
            else:
                exact = _add_unusual_line(headers, line, lengths) and exact
        else:
            header = (name, value.strip())
            append(header)
            if name != unique:
                if len(_LINES) >= _LINES_MAX:
                    _LINES.clear()  # crude but bounded: the lines that recur come back at once
                _LINES[line] = header
    if exact and len(lengths) == 1:
        msg._wire = (text[len(start) + 2 :], headers.copy(), lengths[0])
    return msg, lengths


# Raw header name -> canonical name, for names already seen valid: most messages reuse the
# same few spellings, so the token check and case folding run once per spelling.
_NAME_CACHE: dict[str, str] = {}
_NAME_CACHE_MAX = 4096

# Whole header lines -> (canonical name, value), for lines of the hot path's shape seen before.
# The messages of one dialog repeat their From, To, Call-ID and Contact lines, a transaction's
# responses its Via and CSeq lines, and every message lines such as `Max-Forwards: 70` or
# `Content-Type: application/sdp`: such a line costs one lookup, and its value is the same
# string object each time, whose hash the memos of parsed values downstream already know.
# The pairs are immutable, so messages share them. Content-Length lines never come here (a
# line that would not take the hot path is never stored), and neither does any other line
# that the hot path would not have split exactly the same way.
_LINES: dict[str, tuple[str, str]] = {}
_LINES_MAX = 4096


def _add_unusual_line(headers: list[tuple[str, str]], line: str, lengths: list[str]) -> bool:
    """Parse a line the hot path did not recognise; False if the line is not one header
    (a continuation or an empty line)."""
    if line[:1] in (" ", "\t"):
        # RFC 3261 §7.3.1: a line starting with whitespace continues the previous value;
        # the folding is equivalent to one SP.
        if not headers:
            raise ParseError("Continuation line before any header")
        name, value = headers[-1]
        more = line.strip()
        headers[-1] = (name, f"{value} {more}" if value and more else value or more)
        if name == "Content-Length":
            lengths[-1] = headers[-1][1]
        return False
    raw_name, colon, value = line.partition(":")
    if not colon:
        if not line.strip():
            return False  # an empty line left by mixed line ends
        raise ParseError(f"Header line without a colon: {line[:40]!r}")
    stripped = raw_name.rstrip()  # RFC 3261 §7.3.1: WS is allowed before the colon
    if not is_token(stripped):
        raise ParseError(f"Bad header name {stripped[:40]!r}")
    name = canonical_name(stripped)
    value = value.strip()
    if name == "Content-Length":
        lengths.append(value)
    elif len(_NAME_CACHE) < _NAME_CACHE_MAX:
        _NAME_CACHE[raw_name] = name
    headers.append((name, value))
    return True


def _parse_request_line(line: str) -> Request:
    # RFC 3261 §25.1: Method SP Request-URI SP SIP-Version, single spaces (RFC 4475 §3.1.2.8-10).
    parts = line.split(" ")
    if len(parts) != 3:
        raise ParseError("Malformed request line")
    method, uri, version = parts
    if method not in _METHODS_SEEN:
        if not is_token(method):
            raise ParseError(f"Bad method {method[:40]!r}")
        if len(_METHODS_SEEN) < _NAME_CACHE_MAX:
            _METHODS_SEEN.add(method)
    if version != SIP_VERSION and version.upper() != SIP_VERSION:
        if version.upper().startswith("SIP/"):
            raise ParseError(f"Version {version} not supported", status=505)
        raise ParseError("Malformed request line")
    if not uri:
        raise ParseError("Empty Request-URI")
    return Request(method, uri)


# Methods already checked to be tokens (method names are case-sensitive, RFC 3261 §7.1).
_METHODS_SEEN: set[str] = set()

# Start lines already parsed: `SIP/2.0 200 OK` and the like recur in every dialog, and the
# in-dialog requests of a conference's participants (`BYE sip:conf-...@... SIP/2.0`) too.
_STATUS_LINES: dict[str, tuple[int, str]] = {}
_REQUEST_LINES: dict[str, tuple[str, str]] = {}
_START_LINES_MAX = 1024


def _remember(memo: dict[str, _T], text: str, value: _T) -> None:
    if len(memo) >= _START_LINES_MAX:
        memo.clear()  # crude but bounded: the lines that recur come back at once
    memo[text] = value


def _parse_status_line(line: str) -> Response:
    parts = line.split(" ", 2)
    if len(parts) < 2:
        raise ParseError("Malformed status line")
    version, code = parts[0], parts[1]
    if version != SIP_VERSION and version.upper() != SIP_VERSION:
        raise ParseError(f"Version {version} not supported", status=505)
    # RFC 3261 §7.2: a three-digit code, 100-699 (RFC 4475 §3.1.2.19: drop anything else).
    if len(code) != 3 or not code.isdigit() or not 100 <= int(code) <= 699:
        raise ParseError(f"Bad status code {code[:12]!r}")
    return Response(int(code), parts[2] if len(parts) > 2 else "")


def _declared_length(values: list[str]) -> int | None:
    if not values:
        return None
    value = values[0]
    if len(values) > 1 and any(v != value for v in values):
        raise ParseError("Conflicting Content-Length values")  # RFC 4475 §3.3.9 mcl01
    if not value.isdigit():
        raise ParseError("Bad Content-Length")  # RFC 4475 §3.1.2.3: negative or not a number
    return int(value)


def parse_datagram(
    data: bytes, max_size: int = MAX_MESSAGE_SIZE, max_headers: int = MAX_HEADERS
) -> Request | Response:
    """One message from one UDP datagram (RFC 3261 §18.3: bytes past Content-Length are
    ignored; without Content-Length the body runs to the end of the datagram)."""
    if len(data) > max_size:
        raise ParseError("Message too large", status=513)  # RFC 3261 §18.1.1, §21.5.14
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")  # keep-alive CRLFs before the start line (§7.5)
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        head, rest = data[:end], data[end + 4 :]  # the usual case, as _split_head finds it
    else:
        split = _split_head(data, stream=False)
        assert split is not None
        head, rest = split
    msg, lengths = _parse_head(head, max_headers)
    if len(lengths) == 1 and lengths[0].isdigit():
        length: int | None = int(lengths[0])  # one valid Content-Length: _declared_length's
    else:
        length = _declared_length(lengths)
    if length is None:
        msg.body = rest
    elif length > len(rest):
        raise ParseError("Content-Length larger than the message")  # RFC 4475 §3.1.2.2
    else:
        msg.body = rest[:length] if length < len(rest) else rest
    return msg


parse_message = parse_datagram


class StreamFramer:
    """Frames messages out of a byte stream (TCP) by Content-Length (RFC 3261 §18.3).

    A framing error (bad or missing Content-Length, oversize, a malformed start line or
    header) is unrecoverable on a stream: `feed` raises and the transport closes the
    connection. Messages framed before the error have been yielded already.
    """

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE, max_headers: int = MAX_HEADERS) -> None:
        self._buffer = bytearray()
        self._max = max_size
        self._max_headers = max_headers

    def feed(self, data: bytes) -> Iterator[Request | Response]:
        """Add received bytes; yield every message they complete."""
        self._buffer += data
        buf = bytes(self._buffer)
        pos = 0  # start of the first unframed message in `buf`
        try:
            while True:
                # CRLF keep-alives between messages (RFC 5626 §3.5.1) are skipped.
                while buf.startswith(b"\r\n", pos):
                    pos += 2
                if pos >= len(buf):
                    return
                end = buf.find(b"\r\n\r\n", pos)
                if end >= 0:
                    body_at = end + 4
                else:
                    end = buf.find(b"\n\n", pos)  # bare LF line ends, as for datagrams
                    if end < 0:
                        if len(buf) - pos > self._max:
                            raise ParseError("Header section too large", status=513)
                        return
                    body_at = end + 2
                msg, lengths = _parse_head(buf[pos:end], self._max_headers)
                length = _declared_length(lengths)
                if length is None:
                    raise ParseError("Missing Content-Length on a stream transport")  # §18.3
                if body_at - pos + length > self._max:
                    raise ParseError("Message too large", status=513)
                if len(buf) - body_at < length:
                    return  # RFC 4475 §3.1.2.2: wait for the rest of the body
                msg.body = buf[body_at : body_at + length]
                pos = body_at + length
                yield msg
        finally:
            # Keep only what is not framed yet; after an error, the offending message first.
            del self._buffer[:pos]

    @property
    def pending(self) -> int:
        """Bytes received but not yet framed into a message."""
        return len(self._buffer)

    def buffered(self) -> bytes:
        """The bytes not yet framed (after a framing error: the offending message first)."""
        return bytes(self._buffer)


# -- validation -----------------------------------------------------------------------------

_UNIQUE_HEADERS = frozenset(("Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Type"))
# List headers validation parses (RFC 3261 §7.3.1: several lines, or commas in one).
_LISTS = frozenset(("Via", "Contact", "Route", "Record-Route"))


def _split_lines(name: str, lines: list[str]) -> list[str]:
    """The values of a list header's lines (RFC 3261 §7.3.1)."""
    out: list[str] = []
    for line in lines:
        if not line or line.isspace():
            # An empty list is legal for some (Supported, Allow, Accept: RFC 3261 §20);
            # where a value is required (Via), validation finds it missing.
            continue
        if "," not in line:
            out.append(line.strip())  # the usual single value: no need to look for quotes
            continue
        for part in split_commas(line):
            if not part:
                raise ParseError(f"Empty value in {name} header")
            out.append(part)
    return out


def _contacts(lines: list[str]) -> list[NameAddr]:
    for line in lines:
        if line.strip() == "*":
            return []  # RFC 3261 §10.2.2 wildcard, REGISTER only
    return [_parse_name_addr(v) for v in _split_lines("Contact", lines)]


def _gather(headers: list[tuple[str, str]]) -> tuple[dict[str, str], dict[str, list[str]] | None]:
    """The last line of every header by name, and, when some name has more than one line,
    the lines of each validated list header; a second line of a unique header is refused
    (RFC 4475 §3.3.8 multi01). Usually every name appears once: then `dict` alone, built in
    C, tells it (as many names as lines) and no Python loop runs over the headers."""
    last = dict(headers)
    if len(last) == len(headers):
        return last, None
    lists: dict[str, list[str]] = {}
    uniques = 0
    for name, value in headers:
        if name in _LISTS:
            lines = lists.get(name)
            if lines is None:
                lists[name] = [value]
            else:
                lines.append(value)
        elif name in _UNIQUE_HEADERS:
            uniques += 1
    if uniques != len(_UNIQUE_HEADERS.intersection(last)):
        seen: set[str] = set()
        for name, _ in headers:
            if name in _UNIQUE_HEADERS:
                if name in seen:
                    raise ParseError(f"Multiple {name} headers")  # the first one repeated
                seen.add(name)
    return last, lists


def _required(last: dict[str, str], name: str) -> str:
    """The value of a header every message must carry (RFC 3261 §8.1.1)."""
    value = last.get(name)
    if value is None:
        raise ParseError(f"Missing {name} header")
    return value


def _lines(last: dict[str, str], lists: dict[str, list[str]] | None, name: str) -> list[str] | None:
    """The lines of validated list header `name` (see _gather), None if it has none."""
    if lists is not None:
        return lists.get(name)
    value = last.get(name)
    return None if value is None else [value]


def _validate(msg: Message) -> tuple[dict[str, str], dict[str, list[str]] | None]:
    """validate_message; returns what `_gather` found.

    Each parsed value goes into the message's cache under the key its accessor uses, so
    callers find them parsed. Values already cached (an accessor ran before) are kept: a
    caller may have edited them.
    """
    last, lists = _gather(msg.headers)
    cache = msg._cache
    if "Via" not in cache:
        if lists is None:
            value = last.get("Via")
            if value is None:
                raise ParseError("Missing Via header")
            if "," not in value and value and not value.isspace():
                vias = [Via.parse(value)]  # one line, one value: the usual case
            else:
                vias = [Via.parse(v) for v in _split_lines("Via", [value])]
        else:
            lines = lists.get("Via")
            vias = [Via.parse(v) for v in _split_lines("Via", lines)] if lines else []
        cache["Via"] = vias
    if not cache["Via"]:
        raise ParseError("Missing Via header")
    # NameAddr.parse and CSeq.parse ignore surrounding blanks: their memos take the text as is.
    if "From" not in cache:
        cache["From"] = _parse_name_addr(_required(last, "From"))
    if "To" not in cache:
        cache["To"] = _parse_name_addr(_required(last, "To"))
    if "Call-ID" not in cache:
        cache["Call-ID"] = _required(last, "Call-ID").strip()
    if not cache["Call-ID"]:
        raise ParseError("Empty Call-ID")
    if "CSeq" not in cache:
        cache["CSeq"] = _parse_cseq(_required(last, "CSeq"))
    value = last.get("Max-Forwards")
    if value is not None and not value.strip().isdigit():
        raise ParseError("Bad Max-Forwards")
    if "Contact" not in cache:
        if lists is None:
            value = last.get("Contact")
            if value is not None:
                if "," in value or value.strip() == "*" or not value or value.isspace():
                    cache["Contact"] = _contacts([value])
                else:
                    cache["Contact"] = [_parse_name_addr(value)]
        else:
            lines = lists.get("Contact")
            if lines is not None:
                cache["Contact"] = _contacts(lines)
    return last, lists


def validate_message(msg: Message) -> None:
    """Parse what every transaction relies on; ParseError (400 with a reason) otherwise."""
    _validate(msg)


def validate_request(req: Request) -> None:
    last, lists = _validate(req)
    cache = req._cache
    uri = cache.get("@uri")
    if uri is None:
        uri = cache["@uri"] = parse_uri_copy(req.uri_text)
    if isinstance(uri, SipUri) and uri._s[5] is not None:
        # RFC 3261 §19.1.1: headers are not allowed in a Request-URI (RFC 4475 §3.1.2.11).
        raise ParseError("Request-URI has headers")
    if cache["CSeq"].method != req.method:
        raise ParseError("CSeq method does not match the request method")  # RFC 4475 §3.1.2.17
    if "Route" in last or "Record-Route" in last:
        for name in ("Record-Route", "Route"):
            lines = _lines(last, lists, name)
            if lines is not None and name not in cache:
                cache[name] = [_parse_name_addr(v) for v in _split_lines(name, lines)]


def validate_response(resp: Response) -> None:
    _validate(resp)


# -- building -------------------------------------------------------------------------------


# Headers a response copies from its request (RFC 3261 §8.2.6.2), and with Record-Route
# for a 18x/2xx (§12.1.1: only dialog-creating requests carry it).
_COPIED = ("Via", "From", "To", "Call-ID", "CSeq")
_COPIED_SET = frozenset(_COPIED)
_RESPONSE_COPIES = _COPIED_SET | {"Record-Route"}


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """A response to `request` (RFC 3261 §8.2.6.2): Via, From, To (+tag), Call-ID, CSeq copied;
    Record-Route too for 18x/2xx to a dialog-creating request (§12.1.1)."""
    out: list[tuple[str, str]] = []
    append = out.append
    copied = _RESPONSE_COPIES if 100 < status < 300 else _COPIED_SET
    for header in request.headers:
        name = header[0]
        if name in copied:
            if name == "To" and to_tag is not None and not request.to.has_param("tag"):
                header = ("To", f"{header[1]};tag={to_tag}")
            append(header)  # the request's own (immutable) pair otherwise
    out.extend(headers)
    resp = Response(status, reason, out, body)
    # CSeq and Call-ID are copied unchanged and their parsed values are immutable: the
    # response starts with them parsed (the transaction layer reads its CSeq).
    cache = request._cache
    cseq = cache.get("CSeq")
    if cseq is not None:
        resp._cache["CSeq"] = cseq
    call_id = cache.get("Call-ID")
    if call_id is not None:
        resp._cache["Call-ID"] = call_id
    return resp


_FOLDING = re.compile(r"[ \t]*\r?\n[ \t]+")


def error_response(data: bytes, error: ParseError, *, to_tag: str | None = None) -> Response | None:
    """The stateless error response for a request that failed to parse or validate.

    RFC 3261 §8.2.6 (and RFC 4475 throughout): a malformed request gets a 400 (or the status
    the error names: 505, 513 ...) whose reason phrase says what is wrong. The headers a
    response needs are salvaged line by line from the raw bytes, so even a request whose start
    line or other headers are broken can be answered. Returns None when no answer is possible
    or allowed: a response or an ACK (never answered), or no readable Via to send it to
    (§18.2.2).
    """
    head = data.lstrip(b"\r\n")
    split = _split_head(head[:MAX_MESSAGE_SIZE], stream=False)
    assert split is not None
    # Unfold first (RFC 3261 §7.3.1): not the hot path, so a regex is fine here.
    text = _FOLDING.sub(" ", split[0].decode(_ENC, _ERR))
    lines = text.replace("\r\n", "\n").split("\n")
    if lines[0].upper().startswith("SIP/") or lines[0].startswith("ACK "):
        return None  # responses and ACKs are never answered (RFC 3261 §17.1.3, §17.2.1)
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        raw_name, colon, value = line.partition(":")
        name = canonical_name(raw_name.strip()) if colon else ""
        if name in _COPIED:
            headers.append((name, value.strip()))
    if lenient_top_via(headers) is None:
        return None
    reason = escape_reason(error.reason)[:120] or REASON_PHRASES.get(error.status, "")
    if to_tag is not None and sum(1 for n, _ in headers if n == "To") == 1:
        headers = [(n, _with_tag(v, to_tag) if n == "To" else v) for n, v in headers]
    return Response(error.status, reason, headers)


def lenient_top_via(headers: list[tuple[str, str]]) -> Via | None:
    """The top Via of possibly malformed headers, as far as it can be read: whole, or else its
    sent-protocol and sent-by alone (enough to send a 400 back, RFC 4475 §3.1.2.1 badinv01)."""
    for name, value in headers:
        if name == "Via":
            try:
                top = split_commas(value)[0]
            except ParseError:  # an unbalanced quote further on: the first value may do
                top = value.partition(",")[0]
            for text in (top, top.partition(";")[0]):
                try:
                    return Via.parse(text)
                except ParseError:
                    continue
            return None
    return None


def _with_tag(to_value: str, tag: str) -> str:
    """RFC 3261 §8.2.6.2: the UAS adds a To tag to a final response (if the To parses)."""
    try:
        if NameAddr.parse(to_value).tag is None:
            return f"{to_value};tag={tag}"
    except ParseError:
        pass
    return to_value


def escape_reason(text: str) -> str:
    """A reason phrase may not contain CR/LF (RFC 3261 §25.1)."""
    return " ".join(text.replace("\r", " ").replace("\n", " ").split())


__all__ = [
    "MAX_HEADERS",
    "MAX_MESSAGE_SIZE",
    "REASON_PHRASES",
    "SIP_VERSION",
    "AbsoluteUri",
    "Message",
    "NameAddr",
    "Request",
    "Response",
    "SipUri",
    "StreamFramer",
    "error_response",
    "escape_reason",
    "lenient_top_via",
    "make_response",
    "parse_datagram",
    "parse_head",
    "parse_message",
    "validate_message",
    "validate_request",
    "validate_response",
]
