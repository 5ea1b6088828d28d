"""/conferences and their participants (CONVENTIONS.md, REST API).

Reads go to the database; actions go to the running focus through `ConferenceControl`, which
does the SIP and MRFP work and writes the result through.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import Admin, AppContext, Context, DbSession, Reader
from app.api.errors import ApiError, error_responses
from app.api.schemas import (
    ConferenceOut,
    ConferencePatch,
    ConferenceStateName,
    EndpointStatusName,
    Page,
    ParticipantCreate,
    ParticipantOut,
    ParticipantPatch,
)
from app.db import repo
from app.db.models import ConferenceState, EndpointStatus, JoiningMethod, utcnow

router = APIRouter(
    prefix="/conferences",
    tags=["conferences"],
    responses=error_responses(401, 403, 422),
)

Limit = Annotated[int, Query(ge=1, le=repo.MAX_LIMIT, description="Page size")]
Cursor = Annotated[
    str | None,
    Query(
        max_length=512,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="`next_cursor` of the previous page",
    ),
]


def _plausible_id(value: str) -> bool:
    """Ids are short and printable; anything else cannot exist (and PostgreSQL refuses NUL)."""
    return 0 < len(value) <= 64 and value.isprintable()


def _conference_out(ctx: AppContext, conference_id: str) -> ConferenceOut:
    with ctx.session_factory() as session:
        conf = repo.get_conference(session, conference_id) if _plausible_id(conference_id) else None
        if conf is None:
            raise ApiError(404, "conference_not_found", f"no conference {conference_id}")
        count = repo.participant_counts(session, [conf.id])[conf.id]
        return ConferenceOut.of(conf, count)


def _participant_out(ctx: AppContext, conference_id: str, participant_id: str) -> ParticipantOut:
    with ctx.session_factory() as session:
        if not _plausible_id(conference_id) or repo.get_conference(session, conference_id) is None:
            raise ApiError(404, "conference_not_found", f"no conference {conference_id}")
        part = None
        if _plausible_id(participant_id):
            part = repo.get_participant(session, conference_id, participant_id)
        if part is None:
            raise ApiError(
                404, "participant_not_found", f"no participant {participant_id} in this conference"
            )
        return ParticipantOut.of(part)


def _active_conference(ctx: AppContext, conference_id: str) -> ConferenceOut:
    conf = _conference_out(ctx, conference_id)
    if conf.state != ConferenceState.ACTIVE.value:
        raise ApiError(409, "conference_ended", f"conference {conference_id} has ended")
    return conf


@router.get("", response_model=Page[ConferenceOut], summary="List conferences, newest first")
def list_conferences(
    _: Reader,
    session: DbSession,
    state: Annotated[ConferenceStateName | None, Query()] = None,
    limit: Limit = repo.DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[ConferenceOut]:
    page = repo.list_conferences(session, state=state, limit=limit, cursor=cursor)
    counts = repo.participant_counts(session, [c.id for c in page.items])
    return Page[ConferenceOut](
        items=[ConferenceOut.of(c, counts[c.id]) for c in page.items],
        next_cursor=page.next_cursor,
    )


@router.get("/{conference_id}", response_model=ConferenceOut, responses=error_responses(404))
def get_conference(_: Reader, ctx: Context, conference_id: str) -> ConferenceOut:
    return _conference_out(ctx, conference_id)


@router.patch(
    "/{conference_id}",
    response_model=ConferenceOut,
    summary="Lock or unlock (a locked conference refuses new joins with 403)",
    responses=error_responses(404, 409, 503),
)
async def patch_conference(
    who: Admin, ctx: Context, conference_id: str, body: ConferencePatch
) -> ConferenceOut:
    await run_in_threadpool(_active_conference, ctx, conference_id)
    await ctx.control.set_locked(conference_id, body.locked, who.actor)
    out = await run_in_threadpool(_conference_out, ctx, conference_id)
    # The focus may write through after answering; the action itself has succeeded.
    return out.model_copy(update={"locked": body.locked})


@router.delete(
    "/{conference_id}",
    status_code=204,
    summary="End: every participant gets BYE, subscribers a final NOTIFY",
    responses=error_responses(404, 409, 503),
)
async def end_conference(who: Admin, ctx: Context, conference_id: str) -> Response:
    await run_in_threadpool(_active_conference, ctx, conference_id)
    await ctx.control.end_conference(conference_id, who.actor)
    return Response(status_code=204)


@router.get(
    "/{conference_id}/participants",
    response_model=Page[ParticipantOut],
    summary="Participants in the order they came",
    responses=error_responses(404),
)
def list_participants(
    _: Reader,
    session: DbSession,
    conference_id: str,
    status: Annotated[EndpointStatusName | None, Query()] = None,
    limit: Limit = repo.DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[ParticipantOut]:
    if not _plausible_id(conference_id) or repo.get_conference(session, conference_id) is None:
        raise ApiError(404, "conference_not_found", f"no conference {conference_id}")
    page = repo.list_participants(session, conference_id, status=status, limit=limit, cursor=cursor)
    return Page[ParticipantOut](
        items=[ParticipantOut.of(p) for p in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/{conference_id}/participants/{participant_id}",
    response_model=ParticipantOut,
    responses=error_responses(404),
)
def get_participant(
    _: Reader, ctx: Context, conference_id: str, participant_id: str
) -> ParticipantOut:
    return _participant_out(ctx, conference_id, participant_id)


@router.post(
    "/{conference_id}/participants",
    response_model=ParticipantOut,
    status_code=201,
    summary="Dial a user out into the conference (RFC 4579 §5.5)",
    responses=error_responses(404, 409, 503),
)
async def dial_out(
    who: Admin, ctx: Context, conference_id: str, body: ParticipantCreate, response: Response
) -> ParticipantOut:
    await run_in_threadpool(_active_conference, ctx, conference_id)
    participant_id = await ctx.control.dial_out(conference_id, body.uri, who.actor)
    response.headers["Location"] = (
        f"/api/v1/conferences/{conference_id}/participants/{participant_id}"
    )
    try:
        return await run_in_threadpool(_participant_out, ctx, conference_id, participant_id)
    except ApiError:
        # Not written through yet: describe what the focus is doing.
        return ParticipantOut(
            id=participant_id,
            conference_id=conference_id,
            uri=body.uri,
            display_name=None,
            status=EndpointStatus.DIALING_OUT,
            joining_method=JoiningMethod.DIALED_OUT,
            disconnection_method=None,
            muted=False,
            mrfp_member_id=None,
            created_at=utcnow(),
            joined_at=None,
            left_at=None,
        )


@router.patch(
    "/{conference_id}/participants/{participant_id}",
    response_model=ParticipantOut,
    summary="Mute or unmute at the MRFP (shown in the conference-info)",
    responses=error_responses(404, 409, 503),
)
async def patch_participant(
    who: Admin, ctx: Context, conference_id: str, participant_id: str, body: ParticipantPatch
) -> ParticipantOut:
    await run_in_threadpool(_active_conference, ctx, conference_id)
    await run_in_threadpool(_participant_out, ctx, conference_id, participant_id)
    await ctx.control.set_muted(conference_id, participant_id, body.muted, who.actor)
    out = await run_in_threadpool(_participant_out, ctx, conference_id, participant_id)
    return out.model_copy(update={"muted": body.muted})


@router.delete(
    "/{conference_id}/participants/{participant_id}",
    status_code=204,
    summary="Kick: BYE to the UE, member dropped at the MRFP, subscribers notified",
    responses=error_responses(404, 409, 503),
)
async def kick(who: Admin, ctx: Context, conference_id: str, participant_id: str) -> Response:
    await run_in_threadpool(_active_conference, ctx, conference_id)
    await run_in_threadpool(_participant_out, ctx, conference_id, participant_id)
    await ctx.control.kick(conference_id, participant_id, who.actor)
    return Response(status_code=204)
