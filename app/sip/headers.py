"""Header names and the typed header values the product uses (RFC 3261 §7.3, §20), sans-IO.

Header values are kept as strings and parsed on first access by `app.sip.message`; the
classes here turn one value into a typed object and back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.sip.errors import ParseError
from app.sip.uri import _closing_quote, _parse_params, format_params, is_token, split_hostport

# RFC 3261 §7.3.3 compact forms, plus RFC 3515 (r), RFC 3892 (b), RFC 4028 (x), RFC 6665 (o, u).
COMPACT_FORMS = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "r": "Refer-To",
    "b": "Referred-By",
    "x": "Session-Expires",
    "o": "Event",
    "u": "Allow-Events",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "y": "Identity",
}

_CANONICAL = [
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "In-Reply-To",
    "Max-Forwards",
    "Min-Expires",
    "Min-SE",
    "MIME-Version",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "P-Access-Network-Info",
    "P-Charging-Vector",
    "P-Visited-Network-ID",
    "Path",
    "Priority",
    "Privacy",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-Sub",
    "Refer-To",
    "Referred-By",
    "Reply-To",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Service-Route",
    "Session-Expires",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
    "Replaces",
    "Target-Dialog",
    "Identity",
    "Request-Disposition",
    "Reject-Contact",
]
_BY_LOWER: dict[str, str] = {name.lower(): name for name in _CANONICAL}
_BY_LOWER.update(COMPACT_FORMS)
KNOWN_NAMES = frozenset(_BY_LOWER.values())

# Headers whose values may be comma-separated lists (RFC 3261 §7.3.1). Others (Authorization,
# WWW-Authenticate, Date, ...) contain commas inside a single value.
MULTI_VALUE = frozenset(
    {
        "Via",
        "Route",
        "Record-Route",
        "Contact",
        "Path",
        "Service-Route",
        "Allow",
        "Supported",
        "Require",
        "Proxy-Require",
        "Unsupported",
        "Allow-Events",
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Content-Encoding",
        "Content-Language",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Reason",
        "Warning",
        "In-Reply-To",
        "Call-Info",
        "Alert-Info",
        "Error-Info",
        "Privacy",
    }
)


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name (compact forms expanded)."""
    if name in KNOWN_NAMES:
        return name
    found = _BY_LOWER.get(name.lower())
    if found is not None:
        return found
    # Unknown headers keep their spelling; lookups compare case-insensitively.
    return name


def split_commas(value: str) -> list[str]:
    """Split a list-valued header at commas outside quotes and <> (RFC 3261 §7.3.1)."""
    if "," not in value:
        return [value.strip()]
    if '"' not in value and "<" not in value:
        return [part.strip() for part in value.split(",")]  # Allow, Supported, a bare Via list
    parts: list[str] = []
    depth = 0
    start = 0
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if c == '"':
            i = _closing_quote(value, i)
        elif c == "<":
            depth += 1
        elif c == ">":
            depth = max(0, depth - 1)
        elif c == "," and depth == 0:
            parts.append(value[start:i].strip())
            start = i + 1
        i += 1
    parts.append(value[start:].strip())
    return parts


def split_semicolons(value: str) -> tuple[str, str]:
    """`value;params` -> (value, params) with the first ';' outside quotes."""
    i = value.find(";")
    if i < 0 or '"' not in value[:i]:
        return (value, "") if i < 0 else (value[:i], value[i + 1 :])
    j = 0
    n = len(value)
    while j < n:
        if value[j] == '"':
            j = _closing_quote(value, j)
        elif value[j] == ";":
            return value[:j], value[j + 1 :]
        j += 1
    return value, ""


_TRANSPORTS = {t: t for t in ("UDP", "TCP", "TLS", "SCTP", "WS", "WSS")}


@dataclass(slots=True)
class Via:
    """One Via value: `SIP/2.0/UDP host:port;branch=...;rport;received=...` (RFC 3261 §20.42)."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @classmethod
    def parse(cls, text: str) -> Via:
        # Nearly every Via ends with its branch, after a part its sender repeats in every
        # request (`SIP/2.0/UDP host:port;rport`): that part is parsed once (see _VIA_HEADS).
        at = text.rfind(";branch=")
        if at > 0:
            head = _VIA_HEADS.get(text[:at])
            if head is not None:
                branch = text[at + 8 :]
                # One more plain parameter: no ';' (more parameters), no blank or quote (the
                # slow shape), nothing that the whole's strip() would remove.
                if (
                    ";" not in branch
                    and " " not in branch
                    and '"' not in branch
                    and branch.isprintable()
                ):
                    params = head.params.copy()
                    params["branch"] = branch
                    return cls(head.transport, head.host, head.port, params, head.protocol)
            elif _plain_via_head(text[:at]):
                try:
                    head = cls._parse(text[:at])
                except ParseError:
                    pass  # the whole is parsed below, and refused with its own reason
                else:
                    if len(_VIA_HEADS) >= _VIA_HEADS_MAX:
                        _VIA_HEADS.clear()  # bounded; the busy senders come back at once
                    _VIA_HEADS[text[:at]] = head
        return cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> Via:
        text = text.strip()
        if text.startswith("SIP/2.0/"):
            protocol, rest = "SIP/2.0", text[8:]  # nearly always
        else:
            # sent-protocol = name / version / transport, with LWS allowed around '/'.
            proto, sep, rest = text.partition("/")
            version, sep2, rest = rest.partition("/")
            if not sep or not sep2:
                raise ParseError(f"Bad Via {text[:60]!r}")
            protocol = f"{proto.strip()}/{version.strip()}"
        transport, _, sentby_params = rest.partition(" ")
        if transport not in _TRANSPORTS or not sentby_params or sentby_params[0].isspace():
            # Not the one-space shape: LWS of any length around the transport (RFC 3261 §25.1).
            parts = rest.split(None, 1)
            if len(parts) != 2:
                raise ParseError(f"Bad Via {text[:60]!r}")
            transport, sentby_params = parts
        sentby, _, paramtext = sentby_params.partition(";")
        if " " in sentby or "\t" in sentby:
            sentby = sentby.replace(" ", "").replace("\t", "")
        host, port = split_hostport(sentby)
        params = _parse_params(paramtext, "Via") if paramtext else {}
        upper = _TRANSPORTS.get(transport)
        return cls(transport.upper() if upper is None else upper, host, port, params, protocol)

    def __str__(self) -> str:
        hostport = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"{self.protocol}/{self.transport} {hostport}{format_params(self.params)}"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        value = self.params.get("received")
        if value and value.startswith("[") and value.endswith("]"):
            return value[1:-1]  # RFC 5118 §4.5: implementations send it bracketed too
        return value

    @property
    def rport(self) -> int | None:
        value = self.params.get("rport")
        return int(value) if value and value.isdigit() else None

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port


# The part of a Via before `;branch=`, parsed (never handed out: parse copies its params).
# A part is kept only if it parsed and has the plain shape (printable, one space, no quote,
# not ending in ';'); then `head;branch=<plain value>` parses to exactly `head`'s value plus
# that branch parameter: the parameters split plainly at ';' and the branch adds one more
# (or, repeated, replaces the value in its place, as the whole's parse does).
_VIA_HEADS: dict[str, Via] = {}
_VIA_HEADS_MAX = 1024


def _plain_via_head(text: str) -> bool:
    return (
        text.isprintable()  # no tab, CR, LF or other blank but the one space
        and text.count(" ") == 1
        and '"' not in text
        and not text.endswith(";")
        and not text.startswith(" ")
    )


MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5: must be less than 2**31


@dataclass(slots=True, frozen=True)
class CSeq:
    number: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ParseError(f"Bad CSeq {text!r}")
        number = int(parts[0])
        if number > 2**32 - 1:
            # RFC 4475 §3.1.2.4: a CSeq beyond 32 bits is a 400.
            raise ParseError("CSeq number too large")
        if not is_token(parts[1]):
            raise ParseError(f"Bad CSeq method {parts[1]!r}")
        return cls(number, parts[1])

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


@dataclass(slots=True, frozen=True)
class RAck:
    """RFC 3262 §7.2: `RAck: <rseq> <cseq-number> <method>`."""

    rseq: int
    cseq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> RAck:
        parts = text.split()
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            raise ParseError(f"Bad RAck {text!r}")
        return cls(int(parts[0]), int(parts[1]), parts[2])

    def __str__(self) -> str:
        return f"{self.rseq} {self.cseq} {self.method}"


@dataclass(slots=True)
class ParamValue:
    """`token;param=value`: Event, Subscription-State, Content-Type, Session-Expires ..."""

    value: str
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> ParamValue:
        value, paramtext = split_semicolons(text.strip())
        return cls(value.strip(), _parse_params(paramtext, "header"))

    def __str__(self) -> str:
        return self.value + format_params(self.params)

    def param(self, name: str) -> str | None:
        value = self.params.get(name)
        if value is not None and len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            return value[1:-1]
        return value
