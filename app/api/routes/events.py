"""GET /events: conference and participant changes as Server-Sent Events (WHATWG HTML §9.2)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from app.api.deps import Context, StreamReader
from app.api.errors import error_responses
from app.service.events import Subscriber

router = APIRouter(tags=["events"], responses=error_responses(401, 422))


async def _stream(
    sub: Subscriber, conference_id: str | None, keepalive: float
) -> AsyncIterator[bytes]:
    try:
        # `retry` tells EventSource how long to wait before reconnecting.
        yield b"retry: 3000\n: connected\n\n"
        seq = 0
        while True:
            try:
                event = await asyncio.wait_for(sub.get(), timeout=keepalive)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            if event is None:
                return
            if conference_id is not None and event.conference_id != conference_id:
                continue
            seq += 1
            data = json.dumps(event.to_json(), separators=(",", ":"))
            yield f"id: {seq}\nevent: {event.kind}\ndata: {data}\n\n".encode()
    finally:
        sub.close()


@router.get(
    "/events",
    summary="Live stream of changes (text/event-stream)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "SSE stream"}},
)
async def events(
    who: StreamReader,
    ctx: Context,
    conference_id: Annotated[str | None, Query(description="Only this conference")] = None,
) -> StreamingResponse:
    sub = ctx.bus.subscribe(name=f"sse:{who.name}")
    return StreamingResponse(
        _stream(sub, conference_id, ctx.sse_keepalive),
        media_type="text/event-stream",
        # No caching, and no buffering by nginx-style proxies in front.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
