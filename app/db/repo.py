"""Repository functions: what the focus writes through and what the API and CLI read.

Every function takes an open `Session` and leaves committing to the caller (use
`session_scope(factory)`), so one focus decision writes its conference, participant and event
log rows in one transaction.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypedDict, TypeVar

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session, selectinload

from app.db.models import (
    ApiToken,
    Conference,
    ConferenceState,
    EndpointStatus,
    EventLogEntry,
    FilterCriterion,
    Participant,
    Subscriber,
    Subscription,
    SubscriptionState,
    TokenScope,
    utcnow,
)

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
TOKEN_PREFIX = "mrfc_"


class RepositoryError(Exception):
    """A write the database refuses for a domain reason (duplicate, unknown row)."""


class InvalidCursorError(RepositoryError):
    """A `cursor` that this server did not hand out."""


class DuplicateError(RepositoryError):
    """The row would repeat a unique value (token name, subscriber IMPU)."""


def new_id() -> str:
    """A URL-safe random id with 96 bits of entropy (CONVENTIONS: at least 64, never reused)."""
    # Hex: safe in URLs and on a command line (a leading "-" would read as an option).
    return secrets.token_hex(12)


# --- pagination -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    # Opaque; pass back as `cursor` for the next page. None on the last page.
    next_cursor: str | None


def _encode_cursor(at: datetime, key: str | int) -> str:
    raw = json.dumps([at.isoformat(), key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, key = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return datetime.fromisoformat(at), key
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursorError("invalid cursor") from exc


def _clamp(limit: int) -> int:
    return max(1, min(limit, MAX_LIMIT))


def _keyset(
    stmt: Select[T],
    at_col: Any,
    key_col: Any,
    *,
    limit: int,
    cursor: str | None,
    descending: bool,
) -> tuple[Select[T], int]:
    """Keyset pagination on (time, id): stable while rows are added, unlike OFFSET."""
    limit = _clamp(limit)
    if cursor is not None:
        at, key = _decode_cursor(cursor)
        cond: ColumnElement[bool]
        if descending:
            cond = or_(at_col < at, and_(at_col == at, key_col < key))
        else:
            cond = or_(at_col > at, and_(at_col == at, key_col > key))
        stmt = stmt.where(cond)
    if descending:
        stmt = stmt.order_by(at_col.desc(), key_col.desc())
    else:
        stmt = stmt.order_by(at_col.asc(), key_col.asc())
    # One extra row tells whether there is a next page without a COUNT query.
    return stmt.limit(limit + 1), limit


def _page(rows: Sequence[T], limit: int, at_attr: str, key_attr: str = "id") -> Page[T]:
    items = list(rows[:limit])
    if len(rows) > limit:
        last = items[-1]
        return Page(items, _encode_cursor(getattr(last, at_attr), getattr(last, key_attr)))
    return Page(items, None)


# --- conferences ------------------------------------------------------------------------------


def create_conference(
    session: Session,
    *,
    uri: str,
    factory_uri: str,
    initiator: str | None = None,
    conference_id: str | None = None,
    subject: str | None = None,
    mrfp_node: str | None = None,
    owner_node: str | None = None,
    at: datetime | None = None,
) -> Conference:
    conf = Conference(
        id=conference_id or new_id(),
        uri=uri,
        factory_uri=factory_uri,
        initiator=initiator,
        subject=subject,
        state=ConferenceState.ACTIVE,
        locked=False,
        mrfp_node=mrfp_node,
        owner_node=owner_node,
        created_at=at or utcnow(),
    )
    session.add(conf)
    session.flush()
    return conf


def get_conference(session: Session, conference_id: str) -> Conference | None:
    return session.get(Conference, conference_id)


def get_conference_by_uri(session: Session, uri: str) -> Conference | None:
    return session.scalars(select(Conference).where(Conference.uri == uri)).first()


class ConferenceChanges(TypedDict, total=False):
    state: str
    locked: bool
    subject: str | None
    mrfp_node: str | None
    owner_node: str | None
    ended_at: datetime | None


def update_conference(
    session: Session, conference_id: str, changes: ConferenceChanges
) -> Conference | None:
    conf = session.get(Conference, conference_id)
    if conf is None:
        return None
    for key, value in changes.items():
        setattr(conf, key, value)
    session.flush()
    return conf


def end_conference(
    session: Session, conference_id: str, *, at: datetime | None = None
) -> Conference | None:
    """Mark ended (idempotent: the first end time stays)."""
    conf = session.get(Conference, conference_id)
    if conf is None:
        return None
    if conf.state != ConferenceState.ENDED:
        conf.state = ConferenceState.ENDED
        conf.ended_at = at or utcnow()
        session.flush()
    return conf


def list_conferences(
    session: Session,
    *,
    state: str | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page[Conference]:
    """Newest first, like the operator consoles people know (Twilio lists by date desc)."""
    stmt = select(Conference)
    if state is not None:
        stmt = stmt.where(Conference.state == state)
    stmt, limit = _keyset(
        stmt, Conference.created_at, Conference.id, limit=limit, cursor=cursor, descending=True
    )
    return _page(session.scalars(stmt).all(), limit, "created_at")


def participant_counts(
    session: Session, conference_ids: Sequence[str], *, present_only: bool = True
) -> dict[str, int]:
    """Participants per conference; `present_only` counts those that have not left."""
    if not conference_ids:
        return {}
    stmt = (
        select(Participant.conference_id, func.count())
        .where(Participant.conference_id.in_(conference_ids))
        .group_by(Participant.conference_id)
    )
    if present_only:
        stmt = stmt.where(Participant.status != EndpointStatus.DISCONNECTED)
    counts = {cid: 0 for cid in conference_ids}
    counts.update({cid: int(n) for cid, n in session.execute(stmt)})
    return counts


def load_active_conferences(session: Session, *, owner_node: str | None = None) -> list[Conference]:
    """Active conferences with their present participants and live subscriptions loaded.

    Used on start to rebuild the in-memory focus state (dialogs come from `dialog_state`).
    Relationships are filtered in Python: the lists stay complete for the caller's view.
    """
    stmt = (
        select(Conference)
        .where(Conference.state == ConferenceState.ACTIVE)
        .options(selectinload(Conference.participants), selectinload(Conference.subscriptions))
        .order_by(Conference.created_at, Conference.id)
    )
    if owner_node is not None:
        stmt = stmt.where(Conference.owner_node == owner_node)
    return list(session.scalars(stmt).all())


# --- participants -----------------------------------------------------------------------------


class ParticipantChanges(TypedDict, total=False):
    uri: str
    display_name: str | None
    call_id: str | None
    local_tag: str | None
    remote_tag: str | None
    mrfp_member_id: str | None
    mrfp_call_id: str | None
    status: str
    joining_method: str | None
    disconnection_method: str | None
    muted: bool
    joined_at: datetime | None
    left_at: datetime | None
    dialog_state: dict[str, Any] | None


def add_participant(
    session: Session,
    conference_id: str,
    *,
    uri: str,
    participant_id: str | None = None,
    display_name: str | None = None,
    call_id: str | None = None,
    local_tag: str | None = None,
    remote_tag: str | None = None,
    status: str = EndpointStatus.PENDING,
    joining_method: str | None = None,
    dialog_state: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> Participant:
    if session.get(Conference, conference_id) is None:
        raise RepositoryError(f"no conference {conference_id}")
    part = Participant(
        id=participant_id or new_id(),
        conference_id=conference_id,
        uri=uri,
        display_name=display_name,
        call_id=call_id,
        local_tag=local_tag,
        remote_tag=remote_tag,
        status=status,
        joining_method=joining_method,
        muted=False,
        dialog_state=dialog_state,
        created_at=at or utcnow(),
    )
    session.add(part)
    session.flush()
    return part


def get_participant(
    session: Session, conference_id: str, participant_id: str
) -> Participant | None:
    part = session.get(Participant, participant_id)
    if part is None or part.conference_id != conference_id:
        return None
    return part


def find_participant_by_dialog(
    session: Session, call_id: str, local_tag: str | None = None, remote_tag: str | None = None
) -> Participant | None:
    """The participant whose UE dialog has this Call-ID (and tags when given)."""
    stmt = select(Participant).where(Participant.call_id == call_id)
    if local_tag is not None:
        stmt = stmt.where(Participant.local_tag == local_tag)
    if remote_tag is not None:
        stmt = stmt.where(Participant.remote_tag == remote_tag)
    return session.scalars(stmt.order_by(Participant.created_at.desc())).first()


def update_participant(
    session: Session, participant_id: str, changes: ParticipantChanges
) -> Participant | None:
    part = session.get(Participant, participant_id)
    if part is None:
        return None
    for key, value in changes.items():
        setattr(part, key, value)
    session.flush()
    return part


def list_participants(
    session: Session,
    conference_id: str,
    *,
    status: str | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page[Participant]:
    """In the order they came (joined or were dialed)."""
    stmt = select(Participant).where(Participant.conference_id == conference_id)
    if status is not None:
        stmt = stmt.where(Participant.status == status)
    stmt, limit = _keyset(
        stmt, Participant.created_at, Participant.id, limit=limit, cursor=cursor, descending=False
    )
    return _page(session.scalars(stmt).all(), limit, "created_at")


# --- subscriptions ----------------------------------------------------------------------------


class SubscriptionChanges(TypedDict, total=False):
    expires_at: datetime | None
    version: int
    state: str
    call_id: str | None
    local_tag: str | None
    remote_tag: str | None
    dialog_state: dict[str, Any] | None


def add_subscription(
    session: Session,
    conference_id: str,
    *,
    subscriber_uri: str,
    subscription_id: str | None = None,
    call_id: str | None = None,
    local_tag: str | None = None,
    remote_tag: str | None = None,
    expires_at: datetime | None = None,
    state: str = SubscriptionState.ACTIVE,
    version: int = 0,
    dialog_state: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> Subscription:
    if session.get(Conference, conference_id) is None:
        raise RepositoryError(f"no conference {conference_id}")
    sub = Subscription(
        id=subscription_id or new_id(),
        conference_id=conference_id,
        subscriber_uri=subscriber_uri,
        call_id=call_id,
        local_tag=local_tag,
        remote_tag=remote_tag,
        expires_at=expires_at,
        state=state,
        version=version,
        dialog_state=dialog_state,
        created_at=at or utcnow(),
    )
    session.add(sub)
    session.flush()
    return sub


def update_subscription(
    session: Session, subscription_id: str, changes: SubscriptionChanges
) -> Subscription | None:
    sub = session.get(Subscription, subscription_id)
    if sub is None:
        return None
    for key, value in changes.items():
        setattr(sub, key, value)
    session.flush()
    return sub


def list_subscriptions(
    session: Session, conference_id: str, *, live_only: bool = True
) -> list[Subscription]:
    stmt = select(Subscription).where(Subscription.conference_id == conference_id)
    if live_only:
        stmt = stmt.where(Subscription.state != SubscriptionState.TERMINATED)
    return list(session.scalars(stmt.order_by(Subscription.created_at, Subscription.id)).all())


# --- event log --------------------------------------------------------------------------------


def append_event(
    session: Session,
    kind: str,
    *,
    conference_id: str | None = None,
    participant_id: str | None = None,
    actor: str | None = None,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> EventLogEntry:
    """Append one record; the log is never updated or deleted from."""
    entry = EventLogEntry(
        at=at or utcnow(),
        conference_id=conference_id,
        participant_id=participant_id,
        kind=kind,
        actor=actor,
        detail=detail,
    )
    session.add(entry)
    session.flush()
    return entry


def list_events(
    session: Session,
    *,
    conference_id: str | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page[EventLogEntry]:
    stmt = select(EventLogEntry)
    if conference_id is not None:
        stmt = stmt.where(EventLogEntry.conference_id == conference_id)
    stmt, limit = _keyset(
        stmt, EventLogEntry.at, EventLogEntry.id, limit=limit, cursor=cursor, descending=False
    )
    return _page(session.scalars(stmt).all(), limit, "at")


# --- API tokens -------------------------------------------------------------------------------


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, name: str, scope: str) -> tuple[ApiToken, str]:
    """A new token; the plain value is returned once and only its sha256 is stored."""
    if scope not in (TokenScope.READ, TokenScope.ADMIN):
        raise RepositoryError(f"unknown scope {scope!r} (read or admin)")
    if session.scalars(select(ApiToken).where(ApiToken.name == name)).first() is not None:
        raise DuplicateError(f"a token named {name!r} exists")
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_hash=hash_token(plain), scope=scope, created_at=utcnow())
    session.add(row)
    session.flush()
    return row, plain


def list_tokens(session: Session, *, include_revoked: bool = True) -> list[ApiToken]:
    stmt = select(ApiToken).order_by(ApiToken.id)
    if not include_revoked:
        stmt = stmt.where(ApiToken.revoked_at.is_(None))
    return list(session.scalars(stmt).all())


def revoke_token(session: Session, name_or_id: str) -> ApiToken | None:
    cond = ApiToken.name == name_or_id
    if name_or_id.isdigit():
        cond = or_(cond, ApiToken.id == int(name_or_id))
    row = session.scalars(select(ApiToken).where(cond)).first()
    if row is None:
        return None
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return row


# last_used_at is touched at most this often, so reads do not turn into a write each.
TOUCH_INTERVAL = timedelta(seconds=10)


def authenticate_token(session: Session, token: str) -> ApiToken | None:
    """The live token row for `token`, or None; records the use in last_used_at."""
    digest = hash_token(token)
    row = session.scalars(select(ApiToken).where(ApiToken.token_hash == digest)).first()
    # The lookup is by an index on the hash, which leaks nothing about the token itself; the
    # constant-time compare guards against a database that matches case-insensitively.
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    if row.revoked_at is not None:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at >= TOUCH_INTERVAL:
        row.last_used_at = now
        session.flush()
    return row


# --- HSS data: subscribers and filter criteria ------------------------------------------------


def ha1(impi: str, realm: str, password: str) -> str:
    """RFC 2617 §3.2.2.2: HA1 = MD5(username ":" realm ":" password)."""
    return hashlib.md5(f"{impi}:{realm}:{password}".encode()).hexdigest()


def split_impu(impu: str) -> tuple[str, str]:
    """`sip:user1_public1@home1.net` -> (`user1_public1`, `home1.net`).

    CONVENTIONS: the digest username is the user part and the realm the domain.
    """
    rest = impu.split(":", 1)[1] if ":" in impu else impu
    rest = rest.split(";", 1)[0].split(">", 1)[0]
    if "@" not in rest:
        raise RepositoryError(f"IMPU {impu!r} has no user@domain")
    user, _, domain = rest.rpartition("@")
    domain = domain.split(":", 1)[0]
    if not user or not domain:
        raise RepositoryError(f"IMPU {impu!r} has no user@domain")
    return user, domain


def add_subscriber(
    session: Session,
    impu: str,
    password: str,
    *,
    impi: str | None = None,
    realm: str | None = None,
    scscf: str | None = None,
    barred: bool = False,
) -> Subscriber:
    user, domain = split_impu(impu)
    impi = impi or user
    realm = realm or domain
    if session.scalars(select(Subscriber).where(Subscriber.impu == impu)).first() is not None:
        raise DuplicateError(f"subscriber {impu!r} exists")
    row = Subscriber(
        impu=impu,
        impi=impi,
        realm=realm,
        ha1=ha1(impi, realm, password),
        scscf=scscf,
        barred=barred,
    )
    session.add(row)
    session.flush()
    session.refresh(row)  # created_at comes from the server default
    return row


def get_subscriber(session: Session, key: int | str) -> Subscriber | None:
    """By numeric id or by IMPU."""
    if isinstance(key, int) or key.isdigit():
        return session.get(Subscriber, int(key))
    return session.scalars(select(Subscriber).where(Subscriber.impu == key)).first()


def list_subscribers(
    session: Session, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> Page[Subscriber]:
    limit = _clamp(limit)
    stmt = select(Subscriber).order_by(Subscriber.id)
    if cursor is not None:
        _, last_id = _decode_cursor(cursor)
        if not isinstance(last_id, int):
            raise InvalidCursorError("invalid cursor")
        stmt = stmt.where(Subscriber.id > last_id)
    rows = session.scalars(stmt.limit(limit + 1)).all()
    items = list(rows[:limit])
    nxt = _encode_cursor(utcnow(), items[-1].id) if len(rows) > limit else None
    return Page(items, nxt)


def update_subscriber(
    session: Session,
    key: int | str,
    *,
    password: str | None = None,
    scscf: str | None = None,
    barred: bool | None = None,
) -> Subscriber | None:
    row = get_subscriber(session, key)
    if row is None:
        return None
    if password is not None:
        row.ha1 = ha1(row.impi, row.realm, password)
    if scscf is not None:
        row.scscf = scscf or None
    if barred is not None:
        row.barred = barred
    session.flush()
    return row


def remove_subscriber(session: Session, key: int | str) -> bool:
    row = get_subscriber(session, key)
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


def add_filter_criterion(
    session: Session,
    *,
    priority: int,
    request_uri_regex: str,
    as_uri: str,
    method: str | None = None,
    default_handling: str = "continue",
) -> FilterCriterion:
    row = FilterCriterion(
        priority=priority,
        method=method,
        request_uri_regex=request_uri_regex,
        as_uri=as_uri,
        default_handling=default_handling,
    )
    session.add(row)
    session.flush()
    return row


def list_filter_criteria(session: Session) -> list[FilterCriterion]:
    stmt = select(FilterCriterion).order_by(FilterCriterion.priority, FilterCriterion.id)
    return list(session.scalars(stmt).all())


def remove_filter_criterion(session: Session, criterion_id: int) -> bool:
    row = session.get(FilterCriterion, criterion_id)
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True
