"""What the focus hears from and asks of a media processor (MRFP), as plain data.

The focus core consumes `MediaEvent`s and emits `MediaCommand`s; the adapters in `app.mrfp`
(FreeSWITCH over ESL, or the built-in processor, which speaks the same ESL) translate them.
Member ids are the MRFP's own (FreeSWITCH `Member-ID`); a member is tied to the SIP leg the
MRFC-AS opened toward the MRFP by that leg's Call-ID.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class MemberRemovalCause(Enum):
    """Why the MRFP dropped a member (FreeSWITCH `del-member` after `kick-member`, hangup...)."""

    HANGUP = "hangup"  # the leg hung up (BYE on the MRFP leg, or media timeout)
    KICKED = "kicked"  # `conference <id> kick <member>`
    UNKNOWN = "unknown"  # vanished, e.g. found missing when reconciling after an ESL reconnect


@dataclass(frozen=True, slots=True)
class ConferenceCreated:
    node: str
    conference: str


@dataclass(frozen=True, slots=True)
class ConferenceDestroyed:
    node: str
    conference: str


@dataclass(frozen=True, slots=True)
class MemberAdded:
    node: str
    conference: str
    member_id: str
    call_id: str | None  # SIP Call-ID of the MRFP leg, when the MRFP reports it
    channel_uuid: str | None = None
    caller_id_number: str | None = None
    participant: str | None = None  # value of the X-Participant header of the leg, if any


@dataclass(frozen=True, slots=True)
class MemberRemoved:
    node: str
    conference: str
    member_id: str
    call_id: str | None
    cause: MemberRemovalCause = MemberRemovalCause.HANGUP


@dataclass(frozen=True, slots=True)
class MemberMuteChanged:
    node: str
    conference: str
    member_id: str
    muted: bool


@dataclass(frozen=True, slots=True)
class MemberTalkingChanged:
    node: str
    conference: str
    member_id: str
    talking: bool


@dataclass(frozen=True, slots=True)
class ConferenceLockChanged:
    node: str
    conference: str
    locked: bool


@dataclass(frozen=True, slots=True)
class NodeConnectionChanged:
    """The control connection (ESL) to a node went up or down."""

    node: str
    connected: bool


MediaEvent = (
    ConferenceCreated
    | ConferenceDestroyed
    | MemberAdded
    | MemberRemoved
    | MemberMuteChanged
    | MemberTalkingChanged
    | ConferenceLockChanged
    | NodeConnectionChanged
)


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """One row of `conference <id> json_list`."""

    member_id: str
    call_id: str | None
    channel_uuid: str | None
    caller_id_number: str | None
    muted: bool
    deaf: bool
    talking: bool
    flags: dict[str, bool] = field(default_factory=dict)
