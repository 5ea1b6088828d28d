"""Request-scoped dependencies: the app's shared objects, DB sessions, token auth."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.api.errors import ApiError
from app.db import SessionFactory, session_scope
from app.db.models import TokenScope
from app.db.repo import authenticate_token
from app.service.control import ConferenceControl
from app.service.events import EventBus
from app.service.metrics import Metrics
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class AppContext:
    settings: Settings
    session_factory: SessionFactory
    control: ConferenceControl
    bus: EventBus
    metrics: Metrics
    # Seconds between SSE comment lines on an idle /events stream.
    sse_keepalive: float = 15.0


def get_context(request: Request) -> AppContext:
    ctx = request.app.state.ctx
    assert isinstance(ctx, AppContext)
    return ctx


Context = Annotated[AppContext, Depends(get_context)]


def get_session(ctx: Context) -> Iterator[Session]:
    with ctx.session_factory() as session:
        yield session


DbSession = Annotated[Session, Depends(get_session)]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's name and scope."""

    name: str
    scope: str

    @property
    def actor(self) -> str:
        return f"api:{self.name}"


# auto_error=False: a missing header is our 401 in our error shape, not FastAPI's 403.
_bearer = HTTPBearer(auto_error=False, description="An API token from `mrfc tokens create`")

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _authenticate(ctx: AppContext, token: str | None) -> Principal:
    if not token:
        raise ApiError(401, "unauthorized", "missing bearer token", _CHALLENGE)
    with session_scope(ctx.session_factory) as session:
        row = authenticate_token(session, token)
        if row is None:
            # Never echo the token: it may be a real one with a typo.
            raise ApiError(401, "unauthorized", "invalid or revoked token", _CHALLENGE)
        return Principal(row.name, row.scope)


def _credentials(
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    return creds.credentials if creds is not None else None


def require_read(ctx: Context, token: Annotated[str | None, Depends(_credentials)]) -> Principal:
    # Both scopes may read.
    return _authenticate(ctx, token)


def require_admin(ctx: Context, token: Annotated[str | None, Depends(_credentials)]) -> Principal:
    principal = _authenticate(ctx, token)
    if principal.scope != TokenScope.ADMIN:
        raise ApiError(403, "forbidden", "this call needs a token with admin scope")
    return principal


def require_read_stream(
    ctx: Context,
    header_token: Annotated[str | None, Depends(_credentials)],
    token: Annotated[
        str | None,
        Query(description="The token, for clients that cannot set headers (EventSource)"),
    ] = None,
) -> Principal:
    return _authenticate(ctx, header_token or token)


Reader = Annotated[Principal, Depends(require_read)]
Admin = Annotated[Principal, Depends(require_admin)]
StreamReader = Annotated[Principal, Depends(require_read_stream)]
