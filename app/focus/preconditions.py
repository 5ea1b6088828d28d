"""Segmented QoS preconditions (RFC 3312, updated by RFC 4032) as the focus answers them.

A VoLTE UE offers, per m= line, its view of the QoS status::

    a=curr:qos local none                 # its own access network: nothing reserved yet
    a=curr:qos remote none
    a=des:qos mandatory local sendrecv    # it needs its own segment before the call may ring
    a=des:qos mandatory remote sendrecv

The focus keeps a `PreconditionTable` from its own side (RFC 3312 §5: the UE's "local" is the
focus's "remote", and the UE's "send" is the focus's "recv"). Its own local segment is met at
once: the media processor reserves nothing. The media processor (FreeSWITCH) never sees these
lines: the focus strips them from what it forwards and adds its own to what it answers.

    table = PreconditionTable.from_offer(offer)          # INVITE from the UE
    to_mrfp = strip_preconditions(offer)
    answer_183 = add_preconditions(mrfp_answer, table)    # curr/des + conf:qos remote sendrecv
    table.update(update_offer)                            # UPDATE: a=curr:qos local sendrecv
    answer_200 = add_preconditions(mrfp_answer, table)    # no conf once the segment is met
    if preconditions_met(table): ...                      # now the 200 to the INVITE may go

`uses_preconditions(sdp)` tells whether an offer carries any precondition at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from app.sip.sdp import Attribute, SdpError, SessionDescription

__all__ = [
    "PRECONDITION_ATTRIBUTES",
    "PreconditionTable",
    "QosDirection",
    "QosLine",
    "StatusType",
    "StreamStatus",
    "Strength",
    "add_preconditions",
    "preconditions_failed",
    "preconditions_met",
    "strip_preconditions",
    "uses_preconditions",
]

PRECONDITION_ATTRIBUTES = frozenset({"curr", "des", "conf"})


class StatusType(Enum):
    """Which segment a line speaks of (RFC 3312 §5: e2e, or one end's access network)."""

    E2E = "e2e"
    LOCAL = "local"
    REMOTE = "remote"

    # Members are singletons: hash by identity (C) rather than Enum's hash of the name
    # (Python), as these key the status tables looked up on every offer and answer.
    __hash__ = object.__hash__

    def flip(self) -> StatusType:
        """The same segment seen from the other end."""
        return _FLIP_STATUS[self]


_FLIP_STATUS = {
    StatusType.E2E: StatusType.E2E,
    StatusType.LOCAL: StatusType.REMOTE,
    StatusType.REMOTE: StatusType.LOCAL,
}


class QosDirection(Enum):
    """none/send/recv/sendrecv, from the point of view of whoever wrote the line."""

    NONE = "none"
    SEND = "send"
    RECV = "recv"
    SENDRECV = "sendrecv"

    __hash__ = object.__hash__  # see StatusType

    # Whether the direction includes sending / receiving: set on each member below (plain
    # attributes, read on every offer and answer, rather than properties).
    send: bool
    recv: bool

    @staticmethod
    def of(send: bool, recv: bool) -> QosDirection:
        return _DIRECTION_OF[send, recv]

    def flip(self) -> QosDirection:
        """The other end's view: what one end sends, the other receives."""
        return _DIRECTION_OF[self.recv, self.send]

    def covers(self, other: QosDirection) -> bool:
        return (self.send or not other.send) and (self.recv or not other.recv)


_DIRECTION_OF = {
    (False, False): QosDirection.NONE,
    (True, False): QosDirection.SEND,
    (False, True): QosDirection.RECV,
    (True, True): QosDirection.SENDRECV,
}
for (_send, _recv), _direction in _DIRECTION_OF.items():
    _direction.send = _send
    _direction.recv = _recv


class Strength(Enum):
    """Strength tags of a=des (RFC 3312 §5); `rank` orders the three that can be negotiated."""

    NONE = "none"
    OPTIONAL = "optional"
    MANDATORY = "mandatory"
    FAILURE = "failure"  # RFC 3312 §5: the precondition cannot be met; the session fails
    UNKNOWN = "unknown"  # RFC 3312 §5: used in an answer-less offer (e.g. in a 183's re-offer)

    __hash__ = object.__hash__  # see StatusType

    # `rank` as a plain attribute set on each member below (read on every a=des line).
    _rank: int

    @property
    def rank(self) -> int:
        return self._rank


_RANK = {Strength.NONE: 0, Strength.OPTIONAL: 1, Strength.MANDATORY: 2}
for _strength in Strength:
    _strength._rank = _RANK.get(_strength, 0)


@dataclass(frozen=True, slots=True)
class QosLine:
    """One a=curr / a=des / a=conf line of precondition type qos."""

    kind: str  # "curr", "des" or "conf"
    status_type: StatusType
    direction: QosDirection
    strength: Strength | None = None  # only for "des"

    @classmethod
    def from_attribute(cls, attribute: Attribute) -> QosLine | None:
        """The line for `attribute`, None if it is not a qos precondition (other types exist)."""
        name = attribute.name
        if name not in PRECONDITION_ATTRIBUTES or attribute.value is None:
            return None
        # The same few lines come in every offer: parse each distinct one once.
        key = (name, attribute.value)
        line = _PARSED.get(key, _UNPARSED)
        if line is _UNPARSED:
            line = cls._parse(name, attribute.value)
            if len(_PARSED) >= _PARSED_LIMIT:
                _PARSED.clear()  # peers sending endless variants must not grow it
            _PARSED[key] = line
        return line  # type: ignore[return-value]

    @classmethod
    def _parse(cls, name: str, value: str) -> QosLine | None:
        parts = value.split()
        if not parts or parts[0] != "qos":
            return None  # RFC 3312 §5: only "qos" is defined; others are not ours to judge
        try:
            if name == "des":
                if len(parts) != 4:
                    raise SdpError(f"a=des needs 4 fields: {value!r}")
                return cls("des", StatusType(parts[2]), QosDirection(parts[3]), Strength(parts[1]))
            if len(parts) != 3:
                raise SdpError(f"a={name} needs 3 fields: {value!r}")
            return cls(name, StatusType(parts[1]), QosDirection(parts[2]))
        except ValueError as exc:
            if isinstance(exc, SdpError):
                raise
            raise SdpError(f"bad precondition a={name}:{value}: {exc}") from None

    def to_attribute(self) -> Attribute:
        return Attribute(self.kind, self.text)

    @property
    def text(self) -> str:
        """The attribute's value, e.g. `qos mandatory local sendrecv`."""
        if self.kind == "des":
            assert self.strength is not None
            strength = self.strength._value_
            return f"qos {strength} {self.status_type._value_} {self.direction._value_}"
        return f"qos {self.status_type._value_} {self.direction._value_}"


_UNPARSED = object()
_PARSED: dict[tuple[str, str], QosLine | object | None] = {}
_PARSED_LIMIT = 256


@dataclass(slots=True)
class SegmentStatus:
    """One row pair (send and recv) of the RFC 3312 §5 status table, from the focus's side."""

    current: QosDirection = QosDirection.NONE
    desired_send: Strength = Strength.NONE
    desired_recv: Strength = Strength.NONE

    def desire(self, strength: Strength, direction: QosDirection) -> None:
        """RFC 3312 §5.1: a strength may be upgraded by either side, never downgraded."""
        if strength in (Strength.FAILURE, Strength.UNKNOWN):
            if direction.send:
                self.desired_send = _stronger_special(self.desired_send, strength)
            if direction.recv:
                self.desired_recv = _stronger_special(self.desired_recv, strength)
            return
        if direction.send and strength._rank > self.desired_send._rank:
            self.desired_send = strength
        if direction.recv and strength._rank > self.desired_recv._rank:
            self.desired_recv = strength

    def met(self) -> bool:
        """Every mandatory direction is current (optional ones never hold a session back)."""
        wanted = QosDirection.of(
            self.desired_send is Strength.MANDATORY, self.desired_recv is Strength.MANDATORY
        )
        return self.current.covers(wanted)

    def failed(self) -> bool:
        return Strength.FAILURE in (self.desired_send, self.desired_recv)

    def des_lines(self, status_type: StatusType) -> list[QosLine]:
        """a=des lines for this segment: one sendrecv line when both directions agree."""
        if self.desired_send is self.desired_recv:
            return [QosLine("des", status_type, QosDirection.SENDRECV, self.desired_send)]
        return [
            QosLine("des", status_type, QosDirection.SEND, self.desired_send),
            QosLine("des", status_type, QosDirection.RECV, self.desired_recv),
        ]

    def unmet(self) -> QosDirection:
        """Desired (optional or mandatory) directions not yet current."""
        wanted_send = self.desired_send._rank > 0 and not self.current.send
        wanted_recv = self.desired_recv._rank > 0 and not self.current.recv
        return QosDirection.of(wanted_send, wanted_recv)


def _stronger_special(old: Strength, new: Strength) -> Strength:
    # failure wins over everything; unknown never replaces a strength already known.
    if new is Strength.FAILURE or old is Strength.FAILURE:
        return Strength.FAILURE
    return old if old is not Strength.NONE else new


@dataclass(slots=True)
class StreamStatus:
    """Status of one m= line: the local and remote segments (and e2e if the peer uses it)."""

    segments: dict[StatusType, SegmentStatus] = field(default_factory=dict)

    def segment(self, status_type: StatusType) -> SegmentStatus:
        return self.segments.setdefault(status_type, SegmentStatus())


@dataclass(slots=True)
class PreconditionTable:
    """The focus's view of the preconditions of a session, per m= line index.

    `local_current` is what the focus's own segment has reserved: sendrecv for the media
    processor, which needs no reservation. Streams without precondition lines are absent.
    """

    streams: dict[int, StreamStatus] = field(default_factory=dict)
    local_current: QosDirection = QosDirection.SENDRECV

    @classmethod
    def from_offer(
        cls, offer: SessionDescription, local_current: QosDirection = QosDirection.SENDRECV
    ) -> PreconditionTable:
        table = cls(local_current=local_current)
        table.update(offer)
        return table

    def update(self, sdp: SessionDescription) -> None:
        """Take in the peer's lines from an offer or answer (INVITE, PRACK, UPDATE bodies).

        RFC 3312 §5.1: the peer's segments and directions are turned around. The peer's view of
        the focus's own segment (its "curr:qos remote") is not authoritative; the focus knows it.
        """
        for index, media in enumerate(sdp.media):
            lines = [
                q
                for a in media.attributes
                if a.name in PRECONDITION_ATTRIBUTES and (q := QosLine.from_attribute(a))
            ]
            if not lines:
                continue
            stream = self.streams.setdefault(index, StreamStatus())
            local = stream.segment(StatusType.LOCAL)
            local.current = self.local_current
            for line in lines:
                ours = line.status_type.flip()
                direction = line.direction.flip()
                segment = stream.segment(ours)
                if line.kind == "curr" and ours is not StatusType.LOCAL:
                    segment.current = direction
                elif line.kind == "des":
                    assert line.strength is not None
                    segment.desire(line.strength, direction)
            if StatusType.E2E in stream.segments:
                # e2e status covers both ends: the peer's report already includes the focus's.
                stream.segments.pop(StatusType.LOCAL, None)

    def lines(self, index: int) -> list[QosLine]:
        """The focus's lines for m= line `index`, in the order of the RFC 3312 §6 examples.

        A conf line asks the peer to report (with an UPDATE, RFC 3312 §6) once its segment
        meets what is desired; it disappears when the remote segment is met.
        """
        written = self._written(index)
        return list(written[0]) if written is not None else []

    def attributes(self, index: int) -> list[Attribute]:
        """`lines(index)` as new SDP attributes."""
        written = self._written(index)
        if written is None:
            return []
        return [Attribute(kind, text) for kind, text in written[1]]

    def _written(self, index: int) -> _Written | None:
        stream = self.streams.get(index)
        if stream is None:
            return None
        segments = stream.segments
        # The lines follow from the segments' state alone, and the same few states come in
        # every join (reservation pending, then met): each is worked out once.
        # (A list made into a tuple: cheaper than a generator for two or three items.)
        key = tuple(
            [(t, seg.current, seg.desired_send, seg.desired_recv) for t, seg in segments.items()]
        )
        written = _WRITTEN.get(key)
        if written is None:
            lines = tuple(_stream_lines(stream))
            written = (lines, tuple((line.kind, line.text) for line in lines))
            if len(_WRITTEN) >= _WRITTEN_LIMIT:
                _WRITTEN.clear()
            _WRITTEN[key] = written
        return written


# A stream's lines and their (attribute name, value) pairs, by the state of its segments (see
# PreconditionTable._written). The states are few (a handful of enum values per segment),
# and the memo starts over if ever it fills.
_Written = tuple[tuple[QosLine, ...], tuple[tuple[str, str], ...]]
_WRITTEN: dict[tuple[object, ...], _Written] = {}
_WRITTEN_LIMIT = 256


def _stream_lines(stream: StreamStatus) -> list[QosLine]:
    order = [
        t for t in (StatusType.E2E, StatusType.LOCAL, StatusType.REMOTE) if t in stream.segments
    ]
    out = [QosLine("curr", t, stream.segments[t].current) for t in order]
    for t in order:
        out.extend(stream.segments[t].des_lines(t))
    for t in order:
        if t is not StatusType.LOCAL and stream.segments[t].unmet() is not QosDirection.NONE:
            out.append(QosLine("conf", t, stream.segments[t].unmet()))
    return out


def uses_preconditions(sdp: SessionDescription) -> bool:
    """Whether any m= line carries a qos precondition (RFC 3312 §5)."""
    for m in sdp.media:
        for a in m.attributes:
            if a.name in PRECONDITION_ATTRIBUTES and QosLine.from_attribute(a):
                return True
    return False


def _has_precondition_lines(sdp: SessionDescription) -> bool:
    # Loops rather than any() over a generator: this runs on every offer.
    for m in sdp.media:
        for a in m.attributes:
            if a.name in PRECONDITION_ATTRIBUTES:
                return True
    return False


def _is_qos(attribute: Attribute) -> bool:
    if attribute.name not in PRECONDITION_ATTRIBUTES:
        return False
    return QosLine.from_attribute(attribute) is not None


def strip_preconditions(sdp: SessionDescription) -> SessionDescription:
    """`sdp` without qos curr/des/conf lines (what the media processor is given): a copy, or
    `sdp` itself when it has none. Callers treat the result as read-only."""
    if not _has_precondition_lines(sdp):
        return sdp
    return _copy_with(sdp, [[a for a in m.attributes if not _is_qos(a)] for m in sdp.media])


def add_preconditions(sdp: SessionDescription, table: PreconditionTable) -> SessionDescription:
    """A copy of `sdp` (the media processor's answer) carrying the focus's status lines."""
    attributes: list[list[Attribute]] = []
    for index, media in enumerate(sdp.media):
        kept = [a for a in media.attributes if not _is_qos(a)]
        if not media.rejected:
            kept += table.attributes(index)
        attributes.append(kept)
    return _copy_with(sdp, attributes)


def _copy_with(sdp: SessionDescription, attributes: list[list[Attribute]]) -> SessionDescription:
    """`sdp.copy()` whose m= sections take these attribute lists instead of copies of their
    own, made without copying the attributes first only to drop some.

    As in `copy`, every list and field object is new, so changing the copy's structure never
    shows in `sdp`; the kept `Attribute`s are shared, which app.sip.sdp allows: its accessors
    (`set`, `remove`, `direction`) replace an attribute, never edit one in place.
    """
    out = sdp.copy_session()
    for media, attrs in zip(sdp.media, attributes, strict=True):
        out.media.append(media.copy_without_attributes(attrs))
    return out


def preconditions_met(table: PreconditionTable) -> bool:
    """RFC 3312 §5/§11: every mandatory desired direction is current, and none has failed."""
    if preconditions_failed(table):
        return False
    for stream in table.streams.values():
        for segment in stream.segments.values():
            if not segment.met():
                return False
    return True


def preconditions_failed(table: PreconditionTable) -> bool:
    """A peer declared a precondition it cannot meet (a=des:qos failure)."""
    for stream in table.streams.values():
        for segment in stream.segments.values():
            if segment.failed():
                return True
    return False
