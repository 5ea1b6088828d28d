"""Probes, metrics, the SSE stream (over a real uvicorn socket) and the subscribers API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn

from app.db import repo, session_scope
from app.service.events import ChangeEvent
from tests.api.conftest import Env
from tests.support.ports import free_port

V1 = "/api/v1"


async def test_healthz_needs_no_token(client: httpx.AsyncClient) -> None:
    for path in ("/healthz", f"{V1}/healthz"):
        resp = await client.get(path)
        assert resp.status_code == 200 and resp.json()["status"] == "ok"


async def test_readyz_follows_focus_health(env: Env, client: httpx.AsyncClient) -> None:
    resp = await client.get("/readyz")
    assert resp.status_code == 200
    checks = {"database": True, "sip": True, "esl": True}
    assert resp.json() == {"status": "ready", "checks": checks}
    env.control.healthy["esl"] = False
    resp = await client.get("/readyz")
    assert resp.status_code == 503 and resp.json()["checks"]["esl"] is False


async def test_metrics_exposition(env: Env, client: httpx.AsyncClient) -> None:
    m = env.metrics
    m.conferences_active.set(2)
    m.participants_active.set(5)
    m.joins.inc(3)
    m.leaves.labels(method="booted").inc()
    m.sip_requests.labels(method="INVITE", direction="in").inc()
    m.sip_responses.labels(method="INVITE", code="200", direction="out").inc()
    m.sip_untrusted.labels(action="reject").inc()
    m.esl_connected.labels(node="mrfp1").set(1)
    m.join_latency.observe(0.3)
    resp = await client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    for line in (
        "mrfc_conferences_active 2.0",
        "mrfc_participants_active 5.0",
        "mrfc_joins_total 3.0",
        'mrfc_leaves_total{method="booted"} 1.0',
        'mrfc_sip_requests_total{direction="in",method="INVITE"} 1.0',
        'mrfc_sip_responses_total{code="200",direction="out",method="INVITE"} 1.0',
        'mrfc_sip_untrusted_requests_total{action="reject"} 1.0',
        'mrfc_esl_connected{node="mrfp1"} 1.0',
        'mrfc_join_latency_seconds_bucket{le="0.5"} 1.0',
    ):
        assert line in text, line


async def test_events_need_a_token(client: httpx.AsyncClient) -> None:
    resp = await client.get(f"{V1}/events")
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized"


@pytest.fixture
async def live_server(env: Env) -> AsyncIterator[str]:
    """The app on a real loopback socket: httpx's ASGI transport cannot stream responses."""
    port = free_port()
    config = uvicorn.Config(
        env.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        # Open SSE streams end when the bus closes.
        env.bus.close()
        await asyncio.wait_for(task, 30)


async def _read_events(resp: httpx.Response, count: int) -> list[dict[str, str]]:
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    async for line in resp.aiter_lines():
        if line == "":
            if "data" in current:
                events.append(current)
                if len(events) == count:
                    return events
            current = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            current[key] = value.lstrip(" ")
    return events


@pytest.mark.parametrize("use_query_token", [False, True])
async def test_sse_delivers_published_events(
    env: Env, live_server: str, use_query_token: bool
) -> None:
    token = env.tokens["read"]
    params = {"conference_id": "c1"}
    headers = {}
    if use_query_token:
        params["token"] = token
    else:
        headers["Authorization"] = f"Bearer {token}"
    async with (
        httpx.AsyncClient(base_url=live_server, timeout=30) as client,
        client.stream("GET", f"{V1}/events", params=params, headers=headers) as resp,
    ):
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        async with asyncio.timeout(30):
            while env.bus.subscriber_count == 0:
                await asyncio.sleep(0.01)
        env.bus.publish(ChangeEvent("participant.joined", "other", "p9"))  # filtered out
        env.bus.publish(
            ChangeEvent("participant.muted", "c1", "p1", {"muted": True, "actor": "api:x"})
        )
        async with asyncio.timeout(30):
            (event,) = await _read_events(resp, 1)
    assert event["event"] == "participant.muted" and event["id"] == "1"
    data = json.loads(event["data"])
    assert data["conference_id"] == "c1" and data["participant_id"] == "p1"
    assert data["data"] == {"muted": True, "actor": "api:x"}


async def test_sse_stream_ends_when_client_leaves(env: Env, live_server: str) -> None:
    headers = {"Authorization": f"Bearer {env.tokens['read']}"}
    async with (
        httpx.AsyncClient(base_url=live_server, timeout=30) as client,
        client.stream("GET", f"{V1}/events", headers=headers) as resp,
    ):
        assert resp.status_code == 200
        async with asyncio.timeout(30):
            while env.bus.subscriber_count == 0:
                await asyncio.sleep(0.01)
    # The keepalive (0.2 s here) notices the closed socket; the server drops the consumer.
    async with asyncio.timeout(30):
        while env.bus.subscriber_count:
            await asyncio.sleep(0.05)


# --- subscribers ------------------------------------------------------------------------------


async def test_subscribers_crud(env: Env, client: httpx.AsyncClient) -> None:
    h = env.auth("admin")
    resp = await client.post(
        f"{V1}/subscribers",
        json={"impu": "sip:user1_public1@home1.net", "password": "demo"},
        headers=h,
    )
    assert resp.status_code == 201, resp.text
    sub = resp.json()
    assert "password" not in sub and "ha1" not in sub
    assert (sub["impi"], sub["realm"], sub["barred"]) == ("user1_public1", "home1.net", False)
    with session_scope(env.factory) as s:
        row = repo.get_subscriber(s, sub["id"])
        assert row is not None and row.ha1 == repo.ha1("user1_public1", "home1.net", "demo")
    dup = await client.post(
        f"{V1}/subscribers",
        json={"impu": "sip:user1_public1@home1.net", "password": "x"},
        headers=h,
    )
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "duplicate"
    resp = await client.patch(f"{V1}/subscribers/{sub['id']}", json={"barred": True}, headers=h)
    assert resp.json()["barred"] is True
    listed = (await client.get(f"{V1}/subscribers", headers=h)).json()["items"]
    assert [s["impu"] for s in listed] == ["sip:user1_public1@home1.net"]
    assert (await client.delete(f"{V1}/subscribers/{sub['id']}", headers=h)).status_code == 204
    gone = await client.get(f"{V1}/subscribers/{sub['id']}", headers=h)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "subscriber_not_found"


async def test_subscribers_are_admin_only(env: Env, client: httpx.AsyncClient) -> None:
    resp = await client.get(f"{V1}/subscribers", headers=env.auth("read"))
    assert resp.status_code == 403
    resp = await client.post(
        f"{V1}/subscribers", json={"impu": "sip:a@b", "password": ""}, headers=env.auth("admin")
    )
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "validation_error"
