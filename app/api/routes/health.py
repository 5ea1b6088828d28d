"""Liveness, readiness and metrics: no token, for orchestrators and Prometheus."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import Context
from app.api.schemas import Health
from app.db import ping

router = APIRouter(tags=["health"])

HEALTH_TIMEOUT = 3.0


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    summary="Database reachable, SIP listening, ESL connected",
    responses={503: {"model": Health, "description": "Not ready"}},
)
async def readyz(ctx: Context) -> JSONResponse:
    checks: dict[str, bool] = {"database": await run_in_threadpool(ping, ctx.session_factory)}
    try:
        checks.update(await asyncio.wait_for(ctx.control.health(), HEALTH_TIMEOUT))
    except Exception:
        checks["focus"] = False
    ready = all(checks.values())
    body = Health(status="ready" if ready else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get(
    "/metrics",
    summary="Prometheus text exposition",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(ctx: Context) -> Response:
    payload, content_type = ctx.metrics.exposition()
    return Response(payload, media_type=content_type)
