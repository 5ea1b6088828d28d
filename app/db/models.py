"""The tables of the MRFC-AS: conferences, participants, subscriptions, HSS data, tokens, log.

`subscribers` and `filter_criteria` are read directly by the Kamailio CSCFs (sqlops and
auth_db), so their names, columns and types are part of an outside contract: change them only
together with the Kamailio configuration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    TIMESTAMP,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# RFC 4575 values are the focus's; the columns store them as text.
from app.focus.conference_info import DisconnectionMethod, EndpointStatus, JoiningMethod

# Re-exported for the repositories and the API, which read them from here.
__all__ = ["DisconnectionMethod", "EndpointStatus", "JoiningMethod"]

# Stable constraint names, so migrations can name what they alter on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC on every backend, returned timezone-aware.

    SQLite has no time zones and PostgreSQL's `timestamp` drops them; normalising here keeps
    comparisons and cursors identical on both.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; pass an aware UTC time")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class IntBool(TypeDecorator[bool]):
    """A boolean stored as INTEGER 0/1: Kamailio's sqlops compares it as a number."""

    impl = Integer
    cache_ok = True

    def process_bind_param(self, value: bool | None, dialect: Dialect) -> int | None:
        return None if value is None else int(bool(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> bool | None:
        return None if value is None else bool(value)


def utcnow() -> datetime:
    return datetime.now(UTC)


class ConferenceState(StrEnum):
    ACTIVE = "active"
    ENDED = "ended"


class SubscriptionState(StrEnum):
    """RFC 6665 §4.1.3 Subscription-State values."""

    PENDING = "pending"
    ACTIVE = "active"
    TERMINATED = "terminated"


class TokenScope(StrEnum):
    READ = "read"
    ADMIN = "admin"


class Conference(Base):
    __tablename__ = "conferences"

    # The random, URL-safe part of sip:conf-<id>@domain; never reused.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    uri: Mapped[str] = mapped_column(Text, unique=True)
    factory_uri: Mapped[str] = mapped_column(Text)
    initiator: Mapped[str | None] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default=ConferenceState.ACTIVE, index=True)
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    mrfp_node: Mapped[str | None] = mapped_column(String(64))
    # The MRFC-AS node that owns the conference when several share one database.
    owner_node: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    participants: Mapped[list[Participant]] = relationship(
        back_populates="conference",
        cascade="all, delete-orphan",
        order_by="(Participant.created_at, Participant.id)",
    )
    subscriptions: Mapped[list[Subscription]] = relationship(
        back_populates="conference",
        cascade="all, delete-orphan",
        order_by="(Subscription.created_at, Subscription.id)",
    )

    __table_args__ = (Index("ix_conferences_created", "created_at", "id"),)


class Participant(Base):
    __tablename__ = "participants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Indexed by ix_participants_conf_created below (conference_id is its first column).
    conference_id: Mapped[str] = mapped_column(ForeignKey("conferences.id", ondelete="CASCADE"))
    uri: Mapped[str] = mapped_column(Text)
    display_name: Mapped[str | None] = mapped_column(Text)
    # The dialog with the UE (RFC 3261 §12: Call-ID + local tag + remote tag).
    call_id: Mapped[str | None] = mapped_column(Text, index=True)
    local_tag: Mapped[str | None] = mapped_column(Text)
    remote_tag: Mapped[str | None] = mapped_column(Text)
    # The member in the MRFP's conference and the Call-ID of the focus-to-MRFP leg.
    mrfp_member_id: Mapped[str | None] = mapped_column(String(64))
    mrfp_call_id: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32), default=EndpointStatus.PENDING)
    joining_method: Mapped[str | None] = mapped_column(String(32))
    disconnection_method: Mapped[str | None] = mapped_column(String(32))
    muted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    joined_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Everything needed to rebuild both dialogs after a restart: route set, remote target,
    # CSeqs, contact, transport (RFC 3261 §12.2). Written by the focus, opaque here.
    dialog_state: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    conference: Mapped[Conference] = relationship(back_populates="participants")

    __table_args__ = (Index("ix_participants_conf_created", "conference_id", "created_at", "id"),)


class Subscription(Base):
    """A conference event package subscription (RFC 4575 §3, RFC 6665)."""

    __tablename__ = "subscriptions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    conference_id: Mapped[str] = mapped_column(
        ForeignKey("conferences.id", ondelete="CASCADE"), index=True
    )
    subscriber_uri: Mapped[str] = mapped_column(Text)
    call_id: Mapped[str | None] = mapped_column(Text, index=True)
    local_tag: Mapped[str | None] = mapped_column(Text)
    remote_tag: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # RFC 4575 §4.1: the version of the last conference-info sent to this subscriber.
    version: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default=SubscriptionState.ACTIVE)
    dialog_state: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    conference: Mapped[Conference] = relationship(back_populates="subscriptions")


class Subscriber(Base):
    """HSS data read by the CSCFs: one IMS public identity and its digest credentials."""

    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    impu: Mapped[str] = mapped_column(Text, unique=True)
    impi: Mapped[str] = mapped_column(Text)
    realm: Mapped[str] = mapped_column(Text)
    # RFC 2617 §3.2.2.2 HA1 = MD5(username:realm:password), lowercase hex.
    ha1: Mapped[str] = mapped_column(Text)
    scscf: Mapped[str | None] = mapped_column(Text)
    barred: Mapped[bool] = mapped_column(IntBool, default=False, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP, server_default=func.current_timestamp())


class FilterCriterion(Base):
    """An initial filter criterion (3GPP TS 29.228 iFC, flattened) used by the S-CSCF."""

    __tablename__ = "filter_criteria"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    priority: Mapped[int] = mapped_column(Integer)
    method: Mapped[str | None] = mapped_column(Text)
    request_uri_regex: Mapped[str] = mapped_column(Text)
    as_uri: Mapped[str] = mapped_column(Text)
    default_handling: Mapped[str] = mapped_column(
        Text, default="continue", server_default=text("'continue'")
    )


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    # sha256 hex of the token; the token itself is shown once and never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class EventLogEntry(Base):
    """Append-only record of every change: the call record operators bill and debug from.

    No foreign keys on purpose: the log outlives the rows it talks about.
    """

    __tablename__ = "event_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    conference_id: Mapped[str | None] = mapped_column(String(64), index=True)
    participant_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
