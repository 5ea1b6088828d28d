"""/stats and /whoami: small read-only views for dashboards such as the operator console.

The figures come from the append-only event log and the conferences table, so they survive
restarts and say what happened, not what a browser happened to see.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import or_, select

from app.api.deps import DbSession, Reader
from app.api.errors import ApiError, error_responses
from app.db import repo
from app.db.models import Conference, EventLogEntry, utcnow

router = APIRouter(tags=["stats"], responses=error_responses(401, 422))

JOINED = "participant.joined"
LEFT = "participant.left"
# A conference's chart needs every join and leave; this bounds one answer on a pathological
# conference (thousands of churning participants) without paging a chart.
MAX_CONFERENCE_EVENTS = 10_000
MAX_MINUTES = 24 * 60


class WhoAmI(BaseModel):
    name: str = Field(description="The token's name (as given to `mrfc tokens create`)")
    scope: str = Field(description="`read` or `admin`")


class ParticipantsPoint(BaseModel):
    at: datetime
    participants: int = Field(description="Participants present from this time on")


class ConferenceStats(BaseModel):
    conference_id: str
    points: list[ParticipantsPoint] = Field(
        description="A step series: the count changes at each point; the last is now (or the end)"
    )
    truncated: bool = Field(description="More joins and leaves happened than one answer holds")


class MinuteBucket(BaseModel):
    start: datetime = Field(description="Start of the minute (UTC)")
    active_conferences: int = Field(description="Conferences active at any time in the minute")
    joins: int = Field(description="Participants who joined in the minute")


class NodeStats(BaseModel):
    minutes: int
    buckets: list[MinuteBucket] = Field(description="Oldest first, the current minute last")


@router.get("/whoami", response_model=WhoAmI, summary="The calling token's name and scope")
def whoami(who: Reader) -> WhoAmI:
    # Lets a client show or disable admin-only actions without trying them first.
    return WhoAmI(name=who.name, scope=who.scope)


@router.get(
    "/stats/conferences/{conference_id}",
    response_model=ConferenceStats,
    summary="Participants over time in one conference (from the event log)",
    responses=error_responses(404),
)
def conference_stats(_: Reader, session: DbSession, conference_id: str) -> ConferenceStats:
    conf = None
    if 0 < len(conference_id) <= 64 and conference_id.isprintable():
        conf = repo.get_conference(session, conference_id)
    if conf is None:
        raise ApiError(404, "conference_not_found", f"no conference {conference_id}")
    rows = session.execute(
        select(EventLogEntry.at, EventLogEntry.kind, EventLogEntry.participant_id)
        .where(
            EventLogEntry.conference_id == conference_id,
            EventLogEntry.kind.in_((JOINED, LEFT)),
        )
        .order_by(EventLogEntry.at, EventLogEntry.id)
        .limit(MAX_CONFERENCE_EVENTS + 1)
    ).all()
    truncated = len(rows) > MAX_CONFERENCE_EVENTS
    points = [ParticipantsPoint(at=conf.created_at, participants=0)]
    # A set, not a counter: a participant re-announced (e.g. after a restart) counts once, and
    # a leave without a join (a failed setup) counts for nothing.
    present: set[str] = set()
    for at, kind, participant_id in rows[:MAX_CONFERENCE_EVENTS]:
        key = participant_id or ""
        if kind == JOINED:
            present.add(key)
        else:
            present.discard(key)
        if len(present) != points[-1].participants:
            points.append(ParticipantsPoint(at=at, participants=len(present)))
    end = conf.ended_at or utcnow()
    if end > points[-1].at:
        points.append(ParticipantsPoint(at=end, participants=points[-1].participants))
    return ConferenceStats(conference_id=conf.id, points=points, truncated=truncated)


@router.get(
    "/stats/node",
    response_model=NodeStats,
    summary="Active conferences and joins per minute on this node, over the last minutes",
)
def node_stats(
    _: Reader,
    session: DbSession,
    minutes: Annotated[int, Query(ge=1, le=MAX_MINUTES, description="How far back")] = 60,
) -> NodeStats:
    now = utcnow()
    first = now.replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
    starts = [first + timedelta(minutes=i) for i in range(minutes)]
    active = [0] * minutes
    joins = [0] * minutes
    spans = session.execute(
        select(Conference.created_at, Conference.ended_at).where(
            Conference.created_at <= now,
            or_(Conference.ended_at.is_(None), Conference.ended_at >= first),
        )
    ).all()
    for created, ended in spans:
        lo = max(0, _minute_index(first, created))
        hi = minutes - 1 if ended is None else min(minutes - 1, _minute_index(first, ended))
        for i in range(lo, hi + 1):
            active[i] += 1
    joined_at = session.scalars(
        select(EventLogEntry.at).where(EventLogEntry.kind == JOINED, EventLogEntry.at >= first)
    ).all()
    for at in joined_at:
        i = _minute_index(first, at)
        if 0 <= i < minutes:
            joins[i] += 1
    buckets = [
        MinuteBucket(start=s, active_conferences=a, joins=j)
        for s, a, j in zip(starts, active, joins, strict=True)
    ]
    return NodeStats(minutes=minutes, buckets=buckets)


def _minute_index(first: datetime, at: datetime) -> int:
    return int((at - first).total_seconds() // 60)
