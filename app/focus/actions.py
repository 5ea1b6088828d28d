"""What the focus core asks its driver to do, and what it tells the driver happened.

The focus is sans-IO: every input returns a list of these. The driver (app.service) sends
SIP through the transaction layer, sends media commands to the MRFP node, runs timers on its
event loop, and writes changes to the database and the event stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.sip.message import Request, Response
from app.sip.uri import SipUri


@dataclass(frozen=True, slots=True)
class Respond:
    """Answer a request on its server transaction (an opaque handle from the driver)."""

    txn: object
    response: Response


@dataclass(frozen=True, slots=True)
class SendRequest:
    """Start a client transaction; responses come back with `context` (RFC 3261 §8.1)."""

    request: Request
    next_hop: SipUri
    context: object


@dataclass(frozen=True, slots=True)
class SendAck:
    """An ACK to a 2xx, sent outside any transaction (RFC 3261 §13.2.2.4)."""

    request: Request
    next_hop: SipUri


@dataclass(frozen=True, slots=True)
class MediaCommand:
    """A command for the conference's MRFP node: kick, hup, mute, unmute, deaf, undeaf,
    lock, unlock."""

    node: str
    verb: str
    conference: str
    member_id: str | None = None


@dataclass(frozen=True, slots=True)
class SetTimer:
    key: tuple[str, ...]
    at: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    key: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Changed:
    """A conference or participant changed: persist it and publish it (REST, SSE, metrics).

    `kind` names what happened (conference.created, participant.joined, participant.left,
    participant.muted, conference.locked, conference.ended, ...); `data` is a snapshot.
    """

    kind: str
    conference_id: str
    participant_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    actor: str | None = None


Action = Respond | SendRequest | SendAck | MediaCommand | SetTimer | CancelTimer | Changed
