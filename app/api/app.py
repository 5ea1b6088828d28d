"""The FastAPI application: routes under /api/v1, health and metrics at the root."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

import app as app_package
from app.api.console import router as console_router
from app.api.deps import AppContext
from app.api.errors import install_error_handlers
from app.api.routes import conferences, events, health, stats, subscribers
from app.db import SessionFactory
from app.service.control import ConferenceControl
from app.service.events import EventBus
from app.service.metrics import Metrics
from app.settings import Settings

API_PREFIX = "/api/v1"

DESCRIPTION = """\
Operate the IMS conference focus (MRFC-AS): list conferences and participants, mute, kick,
lock, end and dial out, follow changes live.

Every `/api/v1` call needs `Authorization: Bearer <token>` (tokens come from
`mrfc tokens create`): `read` tokens may list, `admin` tokens may also change.
Errors are `{"error": {"code": "...", "message": "..."}}`.
"""


def create_app(
    settings: Settings,
    session_factory: SessionFactory,
    control: ConferenceControl,
    bus: EventBus,
    *,
    metrics: Metrics | None = None,
    sse_keepalive: float = 15.0,
) -> FastAPI:
    api = FastAPI(
        title="IMS conference focus (MRFC-AS)",
        version=app_package.__version__,
        description=DESCRIPTION,
        docs_url="/docs",
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    api.state.ctx = AppContext(
        settings=settings,
        session_factory=session_factory,
        control=control,
        bus=bus,
        metrics=metrics or Metrics(),
        sse_keepalive=sse_keepalive,
    )
    install_error_handlers(api)

    v1 = APIRouter(prefix=API_PREFIX)
    v1.include_router(conferences.router)
    v1.include_router(subscribers.router)
    v1.include_router(events.router)
    v1.include_router(stats.router)
    api.include_router(v1)
    api.include_router(health.router)
    api.include_router(console_router)
    # CONVENTIONS lists the probes beside the /api/v1 calls; serve them there too (unlisted in
    # the OpenAPI document, which shows them once at the root).
    api.include_router(health.router, prefix=API_PREFIX, include_in_schema=False)
    return api
