"""/subscribers: the HSS data the CSCFs authenticate and route with (admin only).

Passwords are taken, turned into HA1 (RFC 2617 §3.2.2.2) and never stored or returned.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from app.api.deps import Admin, DbSession
from app.api.errors import ApiError, error_responses
from app.api.schemas import Page, SubscriberCreate, SubscriberOut, SubscriberPatch
from app.db import repo

router = APIRouter(
    prefix="/subscribers",
    tags=["subscribers"],
    responses=error_responses(401, 403, 422),
)


# Bounded so no database sees an integer it cannot hold (SQLite overflows past 2**63).
SubscriberId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _not_found(subscriber_id: int) -> ApiError:
    return ApiError(404, "subscriber_not_found", f"no subscriber {subscriber_id}")


@router.get("", response_model=Page[SubscriberOut])
def list_subscribers(
    _: Admin,
    session: DbSession,
    limit: Annotated[int, Query(ge=1, le=repo.MAX_LIMIT)] = repo.DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=512, pattern=r"^[A-Za-z0-9_-]+$")] = None,
) -> Page[SubscriberOut]:
    page = repo.list_subscribers(session, limit=limit, cursor=cursor)
    return Page[SubscriberOut](
        items=[SubscriberOut.of(s) for s in page.items], next_cursor=page.next_cursor
    )


@router.post("", response_model=SubscriberOut, status_code=201, responses=error_responses(409))
def add_subscriber(
    _: Admin, session: DbSession, body: SubscriberCreate, response: Response
) -> SubscriberOut:
    with session.begin():
        row = repo.add_subscriber(
            session,
            body.impu,
            body.password,
            impi=body.impi,
            realm=body.realm,
            scscf=body.scscf,
            barred=body.barred,
        )
        out = SubscriberOut.of(row)
    response.headers["Location"] = f"/api/v1/subscribers/{out.id}"
    return out


@router.get("/{subscriber_id}", response_model=SubscriberOut, responses=error_responses(404))
def get_subscriber(_: Admin, session: DbSession, subscriber_id: SubscriberId) -> SubscriberOut:
    row = repo.get_subscriber(session, subscriber_id)
    if row is None:
        raise _not_found(subscriber_id)
    return SubscriberOut.of(row)


@router.patch("/{subscriber_id}", response_model=SubscriberOut, responses=error_responses(404))
def update_subscriber(
    _: Admin, session: DbSession, subscriber_id: SubscriberId, body: SubscriberPatch
) -> SubscriberOut:
    with session.begin():
        row = repo.update_subscriber(
            session, subscriber_id, password=body.password, scscf=body.scscf, barred=body.barred
        )
        if row is None:
            raise _not_found(subscriber_id)
        return SubscriberOut.of(row)


@router.delete("/{subscriber_id}", status_code=204, responses=error_responses(404))
def remove_subscriber(_: Admin, session: DbSession, subscriber_id: SubscriberId) -> Response:
    with session.begin():
        if not repo.remove_subscriber(session, subscriber_id):
            raise _not_found(subscriber_id)
    return Response(status_code=204)
