"""The console's pages and the small JSON calls behind its charts, in process (no browser).

The shells are public but carry no data; everything the console shows comes through the
token-protected API, which these tests also check.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.api import create_app
from app.api.console.routes import SECURITY_HEADERS
from app.db import SessionFactory, make_engine, make_session_factory, migrate, repo, session_scope
from app.db.models import utcnow
from app.service.control import UnavailableControl
from app.service.events import EventBus
from app.settings import Settings

SECRET_URI = "sip:conf-topsecret42@mrfc1.home1.net"
SECRET_USER = "sip:hidden_user_public1@home1.net"
PAGES = ["/console/", "/console/conferences", "/console/conferences/topsecret42"]


@dataclass
class Env:
    app: FastAPI
    factory: SessionFactory
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[scope]}"}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    url = f"sqlite:///{tmp_path / 'console.db'}"
    migrate(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    bus = EventBus()
    app = create_app(Settings(), factory, UnavailableControl(), bus)
    e = Env(app, factory)
    with session_scope(factory) as s:
        for scope in ("read", "admin"):
            _, e.tokens[scope] = repo.create_token(s, f"{scope}-token", scope)
        repo.create_conference(
            s,
            conference_id="topsecret42",
            uri=SECRET_URI,
            factory_uri="sip:conf-factory1@mrfc1.home1.net",
            initiator=SECRET_USER,
            mrfp_node="mrfp1",
            at=utcnow() - timedelta(hours=1),
        )
    try:
        yield e
    finally:
        bus.close()
        engine.dispose()


@pytest.fixture
async def client(env: Env) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=env.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


# --- the pages -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
async def test_pages_are_served_without_a_token_and_without_data(
    client: httpx.AsyncClient, path: str
) -> None:
    resp = await client.get(path)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    page = resp.text
    # Nothing about any conference is in the shell: the script reads it with a token.
    assert SECRET_URI not in page
    assert SECRET_USER not in page
    assert "mrfp1" not in page
    assert resp.headers["cache-control"] == "no-store"
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers[name] == value


@pytest.mark.parametrize("path", PAGES)
async def test_pages_have_no_inline_script_or_style(client: httpx.AsyncClient, path: str) -> None:
    # The CSP forbids inline code; a page relying on it would silently not work.
    page = (await client.get(path)).text
    assert "script-src 'self'" in SECURITY_HEADERS["Content-Security-Policy"]
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, re.S)
    assert scripts, "the page loads its script"
    assert all("src=" in attrs and not inner.strip() for attrs, inner in scripts)
    assert "<style" not in page
    assert not re.search(r"\son[a-z]+=", page), "no inline event handlers"
    assert " style=" not in page


async def test_assets_linked_from_the_shell_are_served(client: httpx.AsyncClient) -> None:
    page = (await client.get("/console/conferences")).text
    links = re.findall(r'(?:src|href)="(/console/static/[^"]+)"', page)
    assert {link.split("?")[0] for link in links} == {
        "/console/static/console.js",
        "/console/static/console.css",
    }
    for link in links:
        resp = await client.get(link)
        assert resp.status_code == 200, link
        assert resp.headers["x-content-type-options"] == "nosniff"
    js = await client.get("/console/static/console.js")
    assert js.headers["content-type"].startswith("text/javascript")
    assert "sessionStorage" in js.text and "localStorage" not in js.text
    css = await client.get("/console/static/console.css")
    assert css.headers["content-type"].startswith("text/css")


@pytest.mark.parametrize(
    "path",
    [
        "/console/static/routes.py",
        "/console/static/..%2Froutes.py",
        "/console/static/../routes.py",
        "/console/static/base.html",
        "/console/static/",
    ],
)
async def test_nothing_else_is_served_as_static(client: httpx.AsyncClient, path: str) -> None:
    resp = await client.get(path)
    assert resp.status_code == 404
    assert "import" not in resp.text


async def test_conference_page_carries_only_a_safe_id(client: httpx.AsyncClient) -> None:
    page = (await client.get("/console/conferences/topsecret42")).text
    assert 'data-conference="topsecret42"' in page
    assert 'data-page="conference"' in page
    for bad in ['x"onload="alert(1)', "a<b", "x" * 65, "a b"]:
        resp = await client.get(f"/console/conferences/{httpx.URL(bad).raw_path.decode()}")
        assert resp.status_code == 404, bad
        assert "alert(1)" not in resp.text


async def test_console_root_redirects_to_the_sign_in_page(client: httpx.AsyncClient) -> None:
    resp = await client.get("/console")
    assert resp.status_code in (307, 308)
    assert resp.headers["location"] == "/console/"


async def test_console_is_not_in_the_api_document(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not [p for p in paths if p.startswith("/console")]
    assert "/api/v1/whoami" in paths
    assert "/api/v1/stats/node" in paths


# --- the calls behind the console ------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/v1/whoami", "/api/v1/stats/node", "/api/v1/stats/conferences/topsecret42"]
)
async def test_console_calls_need_a_token(client: httpx.AsyncClient, path: str) -> None:
    resp = await client.get(path)
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "unauthorized"
    assert SECRET_URI not in resp.text
    bad = await client.get(path, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401


async def test_events_need_a_token_in_the_query_too(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/events")).status_code == 401
    assert (await client.get("/api/v1/events", params={"token": "nope"})).status_code == 401


@pytest.mark.parametrize("scope", ["read", "admin"])
async def test_whoami_tells_the_scope(env: Env, client: httpx.AsyncClient, scope: str) -> None:
    resp = await client.get("/api/v1/whoami", headers=env.auth(scope))
    assert resp.status_code == 200
    assert resp.json() == {"name": f"{scope}-token", "scope": scope}


async def test_conference_stats_follow_the_event_log(env: Env, client: httpx.AsyncClient) -> None:
    t0 = utcnow() - timedelta(minutes=10)
    with session_scope(env.factory) as s:
        repo.create_conference(s, conference_id="c1", uri="sip:conf-c1@x", factory_uri="f", at=t0)
        log = [
            (1, "participant.joined", "p1"),
            (2, "participant.joined", "p2"),
            (3, "participant.joined", "p2"),  # announced again (e.g. after a restart)
            (4, "participant.muted", "p1"),
            (5, "participant.left", "p9"),  # never joined (a failed setup)
            (6, "participant.left", "p1"),
            (7, "participant.left", "p2"),
        ]
        for minute, kind, pid in log:
            repo.append_event(
                s, kind, conference_id="c1", participant_id=pid, at=t0 + timedelta(minutes=minute)
            )
        repo.append_event(s, "participant.joined", conference_id="other", participant_id="x", at=t0)
        repo.end_conference(s, "c1", at=t0 + timedelta(minutes=8))
    resp = await client.get("/api/v1/stats/conferences/c1", headers=env.auth("read"))
    assert resp.status_code == 200
    body = resp.json()
    assert body["conference_id"] == "c1"
    assert body["truncated"] is False
    counts = [p["participants"] for p in body["points"]]
    assert counts == [0, 1, 2, 1, 0, 0]
    ats = [httpx_time(p["at"]) for p in body["points"]]
    assert ats == sorted(ats)
    assert ats[1] - ats[0] == timedelta(minutes=1)
    assert ats[-1] - ats[0] == timedelta(minutes=8)  # ends at the conference's end


async def test_conference_stats_of_an_unknown_conference(
    env: Env, client: httpx.AsyncClient
) -> None:
    resp = await client.get("/api/v1/stats/conferences/nope", headers=env.auth("read"))
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "conference_not_found"


async def test_node_stats_per_minute(env: Env, client: httpx.AsyncClient) -> None:
    now = utcnow()
    with session_scope(env.factory) as s:
        # One more conference ended 3 minutes ago after running 2 minutes; one long gone is
        # outside the window.
        repo.create_conference(
            s, conference_id="a", uri="sip:conf-a@x", factory_uri="f",
            at=now - timedelta(minutes=5),
        )  # fmt: skip
        repo.end_conference(s, "a", at=now - timedelta(minutes=3))
        repo.create_conference(
            s, conference_id="old", uri="sip:conf-old@x", factory_uri="f",
            at=now - timedelta(hours=5),
        )  # fmt: skip
        repo.end_conference(s, "old", at=now - timedelta(hours=4))
        for ago in (0, 0, 4):
            repo.append_event(
                s, "participant.joined", conference_id="a", participant_id=f"p{ago}",
                at=now - timedelta(minutes=ago),
            )  # fmt: skip
        repo.append_event(s, "participant.left", conference_id="a", participant_id="p0", at=now)
    resp = await client.get("/api/v1/stats/node?minutes=10", headers=env.auth("read"))
    assert resp.status_code == 200
    buckets = resp.json()["buckets"]
    assert len(buckets) == 10
    starts = [httpx_time(b["start"]) for b in buckets]
    assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(starts))
    assert starts[-1] <= now < starts[-1] + timedelta(minutes=2)

    def minute(at: datetime) -> int:
        # Computed from the answer's own first bucket: the minute may turn during the call.
        return int((at - starts[0]).total_seconds() // 60)

    active = [1] * 10  # topsecret42 (from the fixture) throughout
    for i in range(minute(now - timedelta(minutes=5)), minute(now - timedelta(minutes=3)) + 1):
        active[i] += 1  # "a"
    joins = [0] * 10
    joins[minute(now - timedelta(minutes=4))] += 1
    joins[minute(now)] += 2
    assert [b["active_conferences"] for b in buckets] == active
    assert [b["joins"] for b in buckets] == joins
    assert sum(joins) == 3 and sum(active) == 13


@pytest.mark.parametrize("minutes", ["0", "1441", "x"])
async def test_node_stats_window_is_bounded(
    env: Env, client: httpx.AsyncClient, minutes: str
) -> None:
    resp = await client.get(f"/api/v1/stats/node?minutes={minutes}", headers=env.auth("read"))
    assert resp.status_code == 422


def httpx_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_pages_carry_the_root_path_of_a_proxy(env: Env) -> None:
    # Behind a reverse proxy at /mrfc (uvicorn --root-path /mrfc) links and calls keep it.
    transport = httpx.ASGITransport(app=env.app, root_path="/mrfc")
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        page = (await c.get("/mrfc/console/conferences")).text
    assert 'data-base="/mrfc/console"' in page
    assert 'data-api="/mrfc/api/v1"' in page
    assert 'src="/mrfc/console/static/console.js?v=' in page
