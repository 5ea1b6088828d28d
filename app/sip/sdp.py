"""SDP (RFC 4566) as dataclasses, and the RFC 3264 offer/answer rules the focus needs.

Parsing and serializing::

    sdp = SessionDescription.parse(body)      # bytes or str; raises SdpError
    body = bytes(sdp)                          # byte-exact for well-formed input

Well-formed SDP has its lines in the order RFC 4566 §5 fixes (v o s i u e p c b t r z k a, then
m i c b k a per media), so a description keeps only what it must understand as fields (o=, s=, c=,
m=) and every other line in order: attributes as `Attribute`s, the rest (i= b= t= ...) as raw
`(letter, value)` pairs. Accessors (`direction`, `rtpmaps`, `fmtps`, `ptime`) read and write
those attribute lists, so unknown attributes survive a round trip where they were.

Offer/answer (RFC 3264), for the built-in media processor and the focus:

- `select_codecs(media, supported=SUPPORTED_CODECS) -> list[Codec]`: the offered codecs we can
  take (PCMU/0, PCMA/8, telephone-event/8000), in the offerer's order, with its payload types.
- `answer_direction(offered) -> Direction`: sendonly->recvonly, recvonly->sendonly, ...
- `build_answer(offer, *, address, port, session_id, version, ...) -> SessionDescription`:
  one answer m= line per offered one; the first usable audio stream is accepted at `port`,
  anything else is rejected with port 0 (RFC 3264 §6).
- `next_version(previous, new) -> SessionDescription`: keep the o= version when nothing changed,
  else previous + 1 (RFC 3264 §8).
- `needs_renegotiation(previous, new) -> bool`: whether a new offer from the same peer changes
  anything the media processor must hear about.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "PCMA",
    "PCMU",
    "SUPPORTED_CODECS",
    "TELEPHONE_EVENT",
    "Attribute",
    "Codec",
    "Connection",
    "Direction",
    "MediaDescription",
    "Origin",
    "RtpMap",
    "SdpError",
    "SessionDescription",
    "answer_direction",
    "build_answer",
    "needs_renegotiation",
    "next_version",
    "select_codecs",
]


class SdpError(ValueError):
    """Malformed SDP; a UAS answers such an offer with 488 (RFC 3261 §13.3.1.1) or 400."""


class Direction(Enum):
    """Media direction attributes (RFC 3264 §5.1); absent means sendrecv."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"


_DIRECTIONS = frozenset(d.value for d in Direction)

# RFC 3264 §6.1: the answer's direction mirrors the offer's.
_ANSWER_DIRECTION = {
    Direction.SENDRECV: Direction.SENDRECV,
    Direction.SENDONLY: Direction.RECVONLY,
    Direction.RECVONLY: Direction.SENDONLY,
    Direction.INACTIVE: Direction.INACTIVE,
}


def answer_direction(offered: Direction) -> Direction:
    """The direction an answerer willing to send and receive puts in its answer."""
    return _ANSWER_DIRECTION[offered]


@dataclass(slots=True)
class Origin:
    """o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>."""

    username: str
    session_id: str  # kept as text: often larger than 64 bits, and compared, never summed
    session_version: int
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "127.0.0.1"

    @classmethod
    def parse(cls, value: str) -> Origin:
        parts = value.split(" ")
        if len(parts) != 6:
            raise SdpError(f"o= needs 6 fields: {value!r}")
        try:
            version = int(parts[2])
        except ValueError:
            raise SdpError(f"o= session version is not a number: {value!r}") from None
        return cls(parts[0], parts[1], version, parts[3], parts[4], parts[5])

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(slots=True)
class Connection:
    """c=<nettype> <addrtype> <connection-address> (address may carry /ttl/count)."""

    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"

    @classmethod
    def parse(cls, value: str) -> Connection:
        parts = value.split(" ")
        if len(parts) != 3:
            raise SdpError(f"c= needs 3 fields: {value!r}")
        return cls(parts[2], parts[0], parts[1])

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(slots=True)
class Attribute:
    """a=<name>[:<value>]; `value` None is a property attribute such as a=sendrecv."""

    name: str
    value: str | None = None

    @classmethod
    def parse(cls, text: str) -> Attribute:
        name, sep, value = text.partition(":")
        if not name:
            raise SdpError(f"empty attribute name: a={text!r}")
        return cls(name, value if sep else None)

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True, slots=True)
class RtpMap:
    """a=rtpmap:<payload type> <encoding name>/<clock rate>[/<channels>]."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    @classmethod
    def parse(cls, value: str) -> RtpMap:
        try:
            pt, _, spec = value.partition(" ")
            fields = spec.strip().split("/")
            channels = int(fields[2]) if len(fields) > 2 else None
            return cls(int(pt), fields[0], int(fields[1]), channels)
        except (ValueError, IndexError):
            raise SdpError(f"bad rtpmap: {value!r}") from None

    def __str__(self) -> str:
        tail = f"/{self.channels}" if self.channels is not None else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{tail}"


class _Attributes:
    """Accessors over an ordered attribute list, shared by session and media level."""

    __slots__ = ()  # the dataclasses below are slotted: no __dict__ per description

    attributes: list[Attribute]

    def get(self, name: str) -> str | None:
        """Value of the first `a=name`; "" for a property attribute; None if absent."""
        for a in self.attributes:
            if a.name == name:
                return "" if a.value is None else a.value
        return None

    def get_all(self, name: str) -> list[str]:
        return [a.value or "" for a in self.attributes if a.name == name]

    def remove(self, name: str) -> None:
        self.attributes[:] = [a for a in self.attributes if a.name != name]

    def set(self, name: str, value: str | None = None) -> None:
        """Replace the first `a=name` in place (keeping its position), or append it."""
        for i, a in enumerate(self.attributes):
            if a.name == name:
                self.attributes[i] = Attribute(name, value)
                self.attributes[i + 1 :] = [x for x in self.attributes[i + 1 :] if x.name != name]
                return
        self.attributes.append(Attribute(name, value))

    @property
    def direction(self) -> Direction | None:
        """The direction attribute given at this level, None when there is none."""
        for a in self.attributes:
            if a.value is None and a.name in _DIRECTIONS:
                return Direction(a.name)
        return None

    @direction.setter
    def direction(self, value: Direction | None) -> None:
        for i, a in enumerate(self.attributes):
            if a.value is None and a.name in _DIRECTIONS:
                if value is None:
                    del self.attributes[i]
                else:
                    self.attributes[i] = Attribute(value.value)
                return
        if value is not None:
            self.attributes.append(Attribute(value.value))


# Lines that precede c= at each level (RFC 4566 §5); everything else follows it.
_SESSION_BEFORE_C = frozenset("iuep")
_MEDIA_BEFORE_C = frozenset("i")


@dataclass(slots=True)
class MediaDescription(_Attributes):
    """One m= section: m=<media> <port>[/<count>] <proto> <fmt> ..."""

    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    connection: Connection | None = None
    attributes: list[Attribute] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=list)  # i= b= k= ..., in order

    @classmethod
    def parse_m_line(cls, value: str) -> MediaDescription:
        parts = value.split(" ")
        if len(parts) < 4:
            raise SdpError(f"m= needs media, port, proto and formats: {value!r}")
        port_text, _, count_text = parts[1].partition("/")
        try:
            port = int(port_text)
            count = int(count_text) if count_text else None
        except ValueError:
            raise SdpError(f"bad m= port: {value!r}") from None
        if not 0 <= port <= 65535:
            raise SdpError(f"m= port out of range: {value!r}")
        return cls(parts[0], port, parts[2], parts[3:], count, None, [], [])

    @property
    def rejected(self) -> bool:
        """RFC 3264 §6: port 0 rejects (or, in an offer, disables) the stream."""
        return self.port == 0

    @property
    def rtpmaps(self) -> dict[int, RtpMap]:
        maps = (RtpMap.parse(v) for v in self.get_all("rtpmap"))
        return {m.payload_type: m for m in maps}

    @property
    def fmtps(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for v in self.get_all("fmtp"):
            pt, _, params = v.partition(" ")
            try:
                out[int(pt)] = params
            except ValueError:
                raise SdpError(f"bad fmtp: {v!r}") from None
        return out

    @property
    def ptime(self) -> int | None:
        value = self.get("ptime")
        if value is None:
            return None
        try:
            return int(float(value))  # RFC 4566 §6 allows a decimal (e.g. 20.0)
        except ValueError:
            raise SdpError(f"bad ptime: {value!r}") from None

    def copy(self) -> MediaDescription:
        """A deep copy (see SessionDescription.copy)."""
        return self.copy_without_attributes([Attribute(a.name, a.value) for a in self.attributes])

    def copy_without_attributes(self, attributes: list[Attribute]) -> MediaDescription:
        """A deep copy of everything but the attributes, which are `attributes` (taken as
        they are: the caller's to make)."""
        c = self.connection
        return MediaDescription(
            self.media,
            self.port,
            self.proto,
            self.formats.copy(),
            self.port_count,
            None if c is None else Connection(c.address, c.nettype, c.addrtype),
            attributes,
            self.other.copy(),
        )

    def _write(self, out: list[str]) -> None:
        """Append this section's lines, without line ends, in RFC 4566 §5 order."""
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        formats = " ".join(self.formats)
        if formats:
            out.append(f"m={self.media} {port} {self.proto} {formats}")
        else:  # a section a caller built without formats: no blank after the proto
            out.append(f"m={self.media} {port} {self.proto}")
        other = self.other
        if other:
            out += [f"{k}={v}" for k, v in other if k in _MEDIA_BEFORE_C]
        c = self.connection
        if c is not None:
            out.append(f"c={c.nettype} {c.addrtype} {c.address}")
        if other:
            out += [f"{k}={v}" for k, v in other if k not in _MEDIA_BEFORE_C]
        attrs = self.attributes
        out += [f"a={a.name}" if a.value is None else f"a={a.name}:{a.value}" for a in attrs]


@dataclass(slots=True)
class SessionDescription(_Attributes):
    """A whole SDP body; `media` keeps the m= sections in order (their index is their id)."""

    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=lambda: [("t", "0 0")])
    version: int = 0
    line_ending: str = "\r\n"  # RFC 4566 §5 says CRLF; an LF-only body is kept LF-only

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        text = data if isinstance(data, str) else data.decode("utf-8")
        if not text:
            raise SdpError("empty SDP")
        eol = "\r\n" if "\r\n" in text else "\n"
        lines = text.split(eol)
        if lines and lines[-1] == "":
            lines.pop()
        else:
            raise SdpError("SDP does not end with a line break")
        try:
            return cls._parse_lines(lines, eol)
        except SdpError:
            # The line shapes are checked as the lines are read; a fault found in an earlier
            # line must not hide a malformed line further on, which is the one reported.
            _check_shapes(lines)
            raise

    @classmethod
    def _parse_lines(cls, lines: list[str], eol: str) -> SessionDescription:
        if len(lines) < 3:
            _check_shapes(lines)
            if lines[0][0] != "v":
                raise SdpError("SDP must start with v=")
            raise SdpError("v= must be followed by o= and s=")
        v, o, s = lines[0], lines[1], lines[2]
        if v[1:2] != "=" or o[1:2] != "=" or s[1:2] != "=":
            raise SdpError("not a <type>=<value> line")  # (_check_shapes names it)
        if v[0] != "v":
            raise SdpError("SDP must start with v=")
        try:
            version = int(v[2:])
        except ValueError:
            raise SdpError(f"bad v= line: {v[2:]!r}") from None
        if o[0] != "o" or s[0] != "s":
            raise SdpError("v= must be followed by o= and s=")
        other: list[tuple[str, str]] = []
        attributes: list[Attribute] = []
        media: list[MediaDescription] = []
        sdp = cls(Origin.parse(o[2:]), s[2:], None, attributes, media, other, version, eol)
        current: SessionDescription | MediaDescription = sdp
        has_t = False
        for line in lines[3:]:
            if line[1:2] != "=":
                raise SdpError(f"not a <type>=<value> line: {line!r}")
            key = line[0]
            if key == "a":
                # Attribute.parse, inline: most lines of an offer are attributes.
                name, sep, value = line.partition(":")
                if len(name) == 2:
                    raise SdpError(f"empty attribute name: a={line[2:]!r}")
                attributes.append(Attribute(name[2:], value if sep else None))
            elif key == "m":
                current = MediaDescription.parse_m_line(line[2:])
                media.append(current)
                attributes = current.attributes
                other = current.other
            elif key == "c":
                if current.connection is not None:
                    raise SdpError("more than one c= line at one level")
                current.connection = Connection.parse(line[2:])
            elif not key.isalpha():
                raise SdpError(f"not a <type>=<value> line: {line!r}")
            elif key in "vos":
                raise SdpError(f"{key}= may appear only once, at the top")
            else:
                if key == "t" and current is sdp:
                    has_t = True
                other.append((key, line[2:]))
        if not has_t:
            raise SdpError("SDP needs a t= line")
        return sdp

    def __bytes__(self) -> bytes:
        # RFC 4566 §5 order (v o s i u e p c b t r z k a, then m i c b k a per media), every
        # line into one list and joined once.
        o = self.origin
        out = [
            f"v={self.version}",
            f"o={o.username} {o.session_id} {o.session_version} {o.nettype} {o.addrtype} "
            f"{o.address}",
            f"s={self.session_name}",
        ]
        other = self.other
        out += [f"{k}={v}" for k, v in other if k in _SESSION_BEFORE_C]
        c = self.connection
        if c is not None:
            out.append(f"c={c.nettype} {c.addrtype} {c.address}")
        out += [f"{k}={v}" for k, v in other if k not in _SESSION_BEFORE_C]
        attrs = self.attributes
        out += [f"a={a.name}" if a.value is None else f"a={a.name}:{a.value}" for a in attrs]
        for m in self.media:
            m._write(out)
        eol = self.line_ending
        out.append("")
        return eol.join(out).encode("utf-8")

    def __str__(self) -> str:
        return bytes(self).decode("utf-8")

    def copy(self) -> SessionDescription:
        """A deep copy, for building an altered description without touching this one.

        Built field by field (every mutable part new; strings and tuples are shared, being
        immutable) rather than by writing and re-parsing the text: a join copies a few
        descriptions, and a re-parse costs ten times as much."""
        out = self.copy_session()
        out.media = [m.copy() for m in self.media]
        return out

    def copy_session(self) -> SessionDescription:
        """A deep copy of the session level, with no m= sections (the caller adds them)."""
        o, c = self.origin, self.connection
        return SessionDescription(
            Origin(o.username, o.session_id, o.session_version, o.nettype, o.addrtype, o.address),
            self.session_name,
            None if c is None else Connection(c.address, c.nettype, c.addrtype),
            [Attribute(a.name, a.value) for a in self.attributes],
            [],
            self.other.copy(),
            self.version,
            self.line_ending,
        )

    def media_connection(self, index: int) -> Connection | None:
        """The connection of m= section `index`: its own c=, else the session's (RFC 4566 §5.7)."""
        return self.media[index].connection or self.connection

    def media_direction(self, index: int) -> Direction:
        """Effective direction of m= section `index` (RFC 3264 §5.1: media over session level)."""
        return self.media[index].direction or self.direction or Direction.SENDRECV


def _check_shapes(lines: list[str]) -> None:
    """RFC 4566 §5: every line is <type>=<value>, the type one letter."""
    for line in lines:
        if line[1:2] != "=" or not line[:1].isalpha():
            raise SdpError(f"not a <type>=<value> line: {line!r}")


@dataclass(frozen=True, slots=True)
class Codec:
    """A payload format; `payload_type` is ours by default, the offer's once selected."""

    payload_type: int
    encoding: str
    clock_rate: int
    fmtp: str | None = None

    def matches(self, rtpmap: RtpMap) -> bool:
        return (
            self.encoding.lower() == rtpmap.encoding.lower()
            and self.clock_rate == rtpmap.clock_rate
            and rtpmap.channels in (None, 1)
        )


PCMU = Codec(0, "PCMU", 8000)
PCMA = Codec(8, "PCMA", 8000)
TELEPHONE_EVENT = Codec(101, "telephone-event", 8000, "0-16")  # RFC 4733 DTMF events
SUPPORTED_CODECS: tuple[Codec, ...] = (PCMU, PCMA, TELEPHONE_EVENT)

# RFC 3551 §6: static payload types need no rtpmap in the offer.
_STATIC = {0: RtpMap(0, "PCMU", 8000), 8: RtpMap(8, "PCMA", 8000)}


def select_codecs(
    media: MediaDescription, supported: Sequence[Codec] = SUPPORTED_CODECS
) -> list[Codec]:
    """The offered formats we support, in the offerer's preference order (RFC 3264 §6.1).

    Dynamic payload types keep the offerer's number (RFC 3264 §6.1: the answer uses the offer's
    mapping). telephone-event alone is not a usable stream, so without a voice codec the result
    is empty.
    """
    rtpmaps = media.rtpmaps
    fmtps = media.fmtps
    chosen: list[Codec] = []
    for fmt in media.formats:
        try:
            pt = int(fmt)
        except ValueError:
            continue  # not an RTP payload type (e.g. a non-RTP proto)
        rtpmap = rtpmaps.get(pt) or _STATIC.get(pt)
        if rtpmap is None:
            continue
        for codec in supported:
            if codec.matches(rtpmap) and all(c.encoding != codec.encoding for c in chosen):
                fmtp = fmtps.get(pt, codec.fmtp) if codec is TELEPHONE_EVENT else fmtps.get(pt)
                chosen.append(Codec(pt, codec.encoding, codec.clock_rate, fmtp))
                break
    if all(c.encoding == TELEPHONE_EVENT.encoding for c in chosen):
        return []
    return chosen


def build_answer(
    offer: SessionDescription,
    *,
    address: str,
    port: int,
    session_id: str,
    version: int,
    username: str = "-",
    supported: Sequence[Codec] = SUPPORTED_CODECS,
    ptime: int | None = None,
    session_name: str = "-",
) -> SessionDescription:
    """An RFC 3264 §6 answer accepting the first usable audio stream at `address`:`port`.

    Every offered m= line gets an answer m= line in the same place; streams offered with port 0,
    non-audio streams, further audio streams (one mixer leg per participant) and streams without
    a common codec are rejected with port 0. Raises SdpError when nothing can be accepted, which
    a UAS turns into 488 Not Acceptable Here.
    """
    addrtype = "IP6" if ":" in address else "IP4"
    answer = SessionDescription(
        Origin(username, session_id, version, "IN", addrtype, address),
        session_name,
        Connection(address, "IN", addrtype),
    )
    accepted = False
    for index, offered in enumerate(offer.media):
        codecs = (
            []
            if offered.rejected or offered.media != "audio"
            else select_codecs(offered, supported)
        )
        if accepted or not codecs:
            # RFC 3264 §6: keep the media type and proto, port 0, at least one format.
            answer.media.append(
                MediaDescription(offered.media, 0, offered.proto, offered.formats[:1])
            )
            continue
        accepted = True
        m = MediaDescription("audio", port, offered.proto, [str(c.payload_type) for c in codecs])
        for c in codecs:
            m.attributes.append(
                Attribute("rtpmap", f"{c.payload_type} {c.encoding}/{c.clock_rate}")
            )
            if c.fmtp is not None:
                m.attributes.append(Attribute("fmtp", f"{c.payload_type} {c.fmtp}"))
        if ptime is not None:
            m.attributes.append(Attribute("ptime", str(ptime)))
        m.direction = answer_direction(offer.media_direction(index))
        answer.media.append(m)
    if not accepted:
        raise SdpError("no acceptable audio stream in the offer")
    return answer


def _without_version(sdp: SessionDescription) -> SessionDescription:
    return dataclasses.replace(
        sdp, origin=dataclasses.replace(sdp.origin, session_version=0), line_ending="\r\n"
    )


def next_version(
    previous: SessionDescription | None, new: SessionDescription
) -> SessionDescription:
    """`new` with the o= version RFC 3264 §8 requires after `previous` from the same side.

    Unchanged content keeps the previous version; any change takes previous + 1. The session id
    stays the previous one, since it names the session for its whole life.
    """
    if previous is None:
        return new
    origin = dataclasses.replace(
        new.origin,
        session_id=previous.origin.session_id,
        session_version=previous.origin.session_version,
    )
    candidate = dataclasses.replace(new, origin=origin)
    if _without_version(candidate) != _without_version(previous):
        candidate.origin.session_version += 1
    return candidate


def needs_renegotiation(previous: SessionDescription, new: SessionDescription) -> bool:
    """Whether a new offer from a peer changes the session (RFC 3264 §8).

    Same origin (session id and version): by §8 the session is unchanged, so no. A different
    session id or origin address is a new session: yes. A higher version signals a change, but
    some UAs bump it on every re-INVITE (session refreshes, RFC 4028), so the content decides:
    a body identical apart from the version needs nothing from the media processor. Callers
    strip lines the media processor never sees (preconditions) before asking.
    """
    a, b = previous.origin, new.origin
    if (a.username, a.session_id, a.address) != (b.username, b.session_id, b.address):
        return True
    if a.session_version == b.session_version:
        return False
    return _without_version(previous) != _without_version(new)
