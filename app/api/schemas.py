"""Request and response bodies of the REST API (pydantic, shown in /openapi.json)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.db.models import Conference, Participant, Subscriber

T = TypeVar("T")

# No whitespace, angle brackets or control characters: the URI goes into SIP headers as is,
# and PostgreSQL refuses NUL in text.
SIP_URI_PATTERN = r"^sips?:[^\s@<>\x00-\x1f\x7f]+@[^\s<>\x00-\x1f\x7f]+$"
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"

ConferenceStateName = Literal["active", "ended"]
# RFC 4575 §5.6.4
EndpointStatusName = Literal[
    "pending",
    "dialing-out",
    "dialing-in",
    "alerting",
    "on-hold",
    "connected",
    "muted-via-focus",
    "disconnecting",
    "disconnected",
]


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page"
    )


class ConferenceOut(BaseModel):
    id: str
    uri: str
    factory_uri: str
    state: ConferenceStateName
    initiator: str | None
    subject: str | None
    locked: bool
    mrfp_node: str | None
    participant_count: int = Field(description="Participants not (yet) disconnected")
    created_at: datetime
    ended_at: datetime | None

    @classmethod
    def of(cls, conf: Conference, participant_count: int) -> ConferenceOut:
        return cls(
            id=conf.id,
            uri=conf.uri,
            factory_uri=conf.factory_uri,
            state=conf.state,  # type: ignore[arg-type]
            initiator=conf.initiator,
            subject=conf.subject,
            locked=conf.locked,
            mrfp_node=conf.mrfp_node,
            participant_count=participant_count,
            created_at=conf.created_at,
            ended_at=conf.ended_at,
        )


class ConferencePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    locked: bool = Field(description="A locked conference answers new joins with 403")


class ParticipantOut(BaseModel):
    id: str
    conference_id: str
    uri: str
    display_name: str | None
    status: str = Field(description="RFC 4575 endpoint status")
    joining_method: str | None
    disconnection_method: str | None
    muted: bool
    mrfp_member_id: str | None
    created_at: datetime
    joined_at: datetime | None
    left_at: datetime | None

    @classmethod
    def of(cls, part: Participant) -> ParticipantOut:
        return cls(
            id=part.id,
            conference_id=part.conference_id,
            uri=part.uri,
            display_name=part.display_name,
            status=part.status,
            joining_method=part.joining_method,
            disconnection_method=part.disconnection_method,
            muted=part.muted,
            mrfp_member_id=part.mrfp_member_id,
            created_at=part.created_at,
            joined_at=part.joined_at,
            left_at=part.left_at,
        )


class ParticipantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uri: str = Field(
        pattern=SIP_URI_PATTERN,
        max_length=2048,
        description="The user to dial out to (RFC 4579 §5.5)",
        examples=["sip:user3_public1@home1.net"],
    )


class ParticipantPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    muted: bool


class SubscriberCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    impu: str = Field(
        pattern=SIP_URI_PATTERN, max_length=512, examples=["sip:user1_public1@home1.net"]
    )
    password: str = Field(min_length=1, max_length=256, description="Stored only as HA1")
    impi: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        pattern=PRINTABLE,
        description="Default: the IMPU's user part",
    )
    realm: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        pattern=PRINTABLE,
        description="Default: the IMPU's domain",
    )
    scscf: str | None = Field(default=None, max_length=512, pattern=PRINTABLE)
    barred: bool = False


class SubscriberPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str | None = Field(default=None, min_length=1, max_length=256)
    scscf: str | None = Field(default=None, max_length=512, pattern=PRINTABLE)
    barred: bool | None = None


class SubscriberOut(BaseModel):
    id: int
    impu: str
    impi: str
    realm: str
    scscf: str | None
    barred: bool
    created_at: datetime

    _tz = field_validator("created_at")(_aware)

    @classmethod
    def of(cls, row: Subscriber) -> SubscriberOut:
        return cls(
            id=row.id,
            impu=row.impu,
            impi=row.impi,
            realm=row.realm,
            scscf=row.scscf,
            barred=row.barred,
            created_at=row.created_at,
        )


class Health(BaseModel):
    status: Literal["ok", "ready", "not ready"]
    checks: dict[str, bool] = Field(default_factory=dict)
