"""REST calls of CONVENTIONS.md against a fake focus: auth, errors, pagination, actions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from app.db import repo, session_scope
from app.service.control import (
    ConferenceNotFoundError,
    ConflictError,
    ControlError,
    MediaUnavailableError,
)
from tests.api.conftest import Env

V1 = "/api/v1"


def seed(env: Env, n: int = 1, *, participants: int = 2) -> list[str]:
    base = datetime(2030, 1, 1, tzinfo=UTC)
    ids = []
    with session_scope(env.factory) as s:
        for i in range(n):
            conf = repo.create_conference(
                s,
                uri=f"sip:conf-{i}x@mrfc1.home1.net",
                factory_uri="sip:conf-factory1@mrfc1.home1.net",
                initiator="sip:user1_public1@home1.net",
                mrfp_node="mrfp1",
                at=base + timedelta(minutes=i),
            )
            for j in range(participants):
                repo.add_participant(
                    s,
                    conf.id,
                    uri=f"sip:user{j + 1}_public1@home1.net",
                    participant_id=f"{conf.id}-p{j}",
                    status="connected",
                    joining_method="dialed-in",
                    at=base + timedelta(minutes=i, seconds=j),
                )
            ids.append(conf.id)
    return ids


def assert_error(resp: httpx.Response, status: int, code: str | None = None) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code


# --- access -----------------------------------------------------------------------------------

Call = tuple[str, str, dict[str, object] | None]

WRITE_CALLS: list[Call] = [
    ("PATCH", "/conferences/{c}", {"locked": True}),
    ("DELETE", "/conferences/{c}", None),
    ("POST", "/conferences/{c}/participants", {"uri": "sip:user3_public1@home1.net"}),
    ("PATCH", "/conferences/{c}/participants/{p}", {"muted": True}),
    ("DELETE", "/conferences/{c}/participants/{p}", None),
]
READ_CALLS: list[Call] = [
    ("GET", "/conferences", None),
    ("GET", "/conferences/{c}", None),
    ("GET", "/conferences/{c}/participants", None),
    ("GET", "/conferences/{c}/participants/{p}", None),
]


def _url(template: str, conf: str) -> str:
    return V1 + template.format(c=conf, p=f"{conf}-p0")


@pytest.mark.parametrize(("method", "path", "body"), READ_CALLS + WRITE_CALLS)
async def test_no_token_or_bad_token_is_401(
    env: Env, client: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    (conf,) = seed(env)
    resp = await client.request(method, _url(path, conf), json=body)
    assert_error(resp, 401, "unauthorized")
    assert resp.headers["www-authenticate"] == "Bearer"
    bad = {"Authorization": "Bearer mrfc_not-a-token"}
    assert_error(await client.request(method, _url(path, conf), json=body, headers=bad), 401)
    assert env.control.calls == []


@pytest.mark.parametrize(("method", "path", "body"), WRITE_CALLS)
async def test_read_scope_cannot_change(
    env: Env, client: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    (conf,) = seed(env)
    resp = await client.request(method, _url(path, conf), json=body, headers=env.auth("read"))
    assert_error(resp, 403, "forbidden")
    assert env.control.calls == []


@pytest.mark.parametrize(("method", "path", "body"), READ_CALLS)
async def test_both_scopes_read(
    env: Env, client: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    (conf,) = seed(env)
    for scope in ("read", "admin"):
        resp = await client.request(method, _url(path, conf), headers=env.auth(scope))
        assert resp.status_code == 200, resp.text


async def test_revoked_token_is_refused(env: Env, client: httpx.AsyncClient) -> None:
    with session_scope(env.factory) as s:
        repo.revoke_token(s, "read-token")
    assert_error(await client.get(f"{V1}/conferences", headers=env.auth("read")), 401)


async def test_token_use_is_recorded(env: Env, client: httpx.AsyncClient) -> None:
    assert (await client.get(f"{V1}/conferences", headers=env.auth("read"))).status_code == 200
    with session_scope(env.factory) as s:
        (row,) = [t for t in repo.list_tokens(s) if t.name == "read-token"]
        assert row.last_used_at is not None


# --- reads ------------------------------------------------------------------------------------


async def test_show_conference(env: Env, client: httpx.AsyncClient) -> None:
    (conf,) = seed(env, participants=3)
    with session_scope(env.factory) as s:
        repo.update_participant(s, f"{conf}-p2", {"status": "disconnected"})
    resp = await client.get(f"{V1}/conferences/{conf}", headers=env.auth("read"))
    body = resp.json()
    assert body["id"] == conf and body["uri"] == "sip:conf-0x@mrfc1.home1.net"
    assert body["state"] == "active" and body["locked"] is False
    assert body["initiator"] == "sip:user1_public1@home1.net" and body["mrfp_node"] == "mrfp1"
    assert body["participant_count"] == 2
    assert body["created_at"].startswith("2030-01-01T00:00:00")


async def test_participants(env: Env, client: httpx.AsyncClient) -> None:
    (conf,) = seed(env, participants=2)
    resp = await client.get(f"{V1}/conferences/{conf}/participants", headers=env.auth("read"))
    items = resp.json()["items"]
    assert [p["uri"] for p in items] == [
        "sip:user1_public1@home1.net",
        "sip:user2_public1@home1.net",
    ]
    assert items[0]["status"] == "connected" and items[0]["muted"] is False
    one = await client.get(
        f"{V1}/conferences/{conf}/participants/{conf}-p1", headers=env.auth("read")
    )
    assert one.json()["id"] == f"{conf}-p1"


async def test_pagination_walks_every_conference_once(env: Env, client: httpx.AsyncClient) -> None:
    ids = seed(env, 5, participants=0)
    seen: list[str] = []
    params: dict[str, str | int] = {"limit": 2}
    while True:
        resp = await client.get(f"{V1}/conferences", params=params, headers=env.auth("read"))
        page = resp.json()
        assert len(page["items"]) <= 2
        seen += [c["id"] for c in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == list(reversed(ids))  # newest first


async def test_default_and_max_limit(env: Env, client: httpx.AsyncClient) -> None:
    seed(env, 1, participants=0)
    h = env.auth("read")
    assert (await client.get(f"{V1}/conferences?limit=500", headers=h)).status_code == 200
    assert_error(await client.get(f"{V1}/conferences?limit=501", headers=h), 422)
    assert_error(await client.get(f"{V1}/conferences?limit=0", headers=h), 422)
    assert_error(await client.get(f"{V1}/conferences?cursor=zzz", headers=h), 400)
    assert_error(await client.get(f"{V1}/conferences?cursor=a%00", headers=h), 422)


async def test_state_filter(env: Env, client: httpx.AsyncClient) -> None:
    a, b = seed(env, 2, participants=0)
    with session_scope(env.factory) as s:
        repo.end_conference(s, a)
    h = env.auth("read")
    active = (await client.get(f"{V1}/conferences?state=active", headers=h)).json()["items"]
    ended = (await client.get(f"{V1}/conferences?state=ended", headers=h)).json()["items"]
    assert [c["id"] for c in active] == [b]
    assert [c["id"] for c in ended] == [a] and ended[0]["ended_at"] is not None
    resp = await client.get(f"{V1}/conferences?state=bogus", headers=h)
    assert_error(resp, 422, "validation_error")
    assert resp.json()["error"]["details"][0]["loc"] == ["query", "state"]


async def test_participant_status_filter(env: Env, client: httpx.AsyncClient) -> None:
    (conf,) = seed(env, participants=2)
    with session_scope(env.factory) as s:
        repo.update_participant(s, f"{conf}-p0", {"status": "disconnected"})
    resp = await client.get(
        f"{V1}/conferences/{conf}/participants?status=connected", headers=env.auth("read")
    )
    assert [p["id"] for p in resp.json()["items"]] == [f"{conf}-p1"]


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/conferences/nope", "conference_not_found"),
        ("/conferences/nope/participants", "conference_not_found"),
        ("/conferences/nope/participants/x", "conference_not_found"),
        ("/conferences/{c}/participants/nope", "participant_not_found"),
        ("/no/such/route", "not_found"),
    ],
)
async def test_404_in_error_shape(
    env: Env, client: httpx.AsyncClient, path: str, code: str
) -> None:
    (conf,) = seed(env)
    resp = await client.get(V1 + path.format(c=conf), headers=env.auth("admin"))
    assert_error(resp, 404, code)


async def test_unknown_route_outside_v1_and_wrong_method(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/nothing-here"), 404, "not_found")
    assert_error(await client.put("/healthz"), 405, "method_not_allowed")


# --- actions ----------------------------------------------------------------------------------


async def test_actions_reach_the_focus(env: Env, client: httpx.AsyncClient) -> None:
    (conf,) = seed(env)
    h = env.auth("admin")
    pid = f"{conf}-p0"
    resp = await client.patch(f"{V1}/conferences/{conf}", json={"locked": True}, headers=h)
    assert resp.status_code == 200 and resp.json()["locked"] is True
    resp = await client.patch(
        f"{V1}/conferences/{conf}/participants/{pid}", json={"muted": True}, headers=h
    )
    assert resp.status_code == 200 and resp.json()["muted"] is True
    resp = await client.post(
        f"{V1}/conferences/{conf}/participants",
        json={"uri": "sip:user3_public1@home1.net"},
        headers=h,
    )
    assert resp.status_code == 201
    assert resp.json()["id"] == "dialed1" and resp.json()["status"] == "dialing-out"
    assert resp.headers["location"].endswith(f"/conferences/{conf}/participants/dialed1")
    resp = await client.delete(f"{V1}/conferences/{conf}/participants/{pid}", headers=h)
    assert resp.status_code == 204
    resp = await client.delete(f"{V1}/conferences/{conf}", headers=h)
    assert resp.status_code == 204
    actor = "api:admin-token"
    assert env.control.calls == [
        ("lock", conf, True, actor),
        ("mute", conf, pid, True, actor),
        ("dial", conf, "sip:user3_public1@home1.net", actor),
        ("kick", conf, pid, actor),
        ("end", conf, actor),
    ]


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (ConferenceNotFoundError("gone"), 404, "conference_not_found"),
        (ConflictError("locked"), 409, "conflict"),
        (MediaUnavailableError("ESL down"), 503, "media_unavailable"),
    ],
)
async def test_control_errors_are_mapped(
    env: Env, client: httpx.AsyncClient, error: ControlError, status: int, code: str
) -> None:
    (conf,) = seed(env)
    env.control.fail_with = error
    resp = await client.delete(f"{V1}/conferences/{conf}", headers=env.auth("admin"))
    assert_error(resp, status, code)
    assert resp.json()["error"]["message"] == error.message


async def test_ended_conference_refuses_actions(env: Env, client: httpx.AsyncClient) -> None:
    (conf,) = seed(env)
    with session_scope(env.factory) as s:
        repo.end_conference(s, conf)
    resp = await client.delete(f"{V1}/conferences/{conf}", headers=env.auth("admin"))
    assert_error(resp, 409, "conference_ended")
    assert env.control.calls == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PATCH", "/conferences/{c}", {"locked": "maybe"}),
        ("PATCH", "/conferences/{c}", {}),
        ("PATCH", "/conferences/{c}", {"locked": True, "extra": 1}),
        ("PATCH", "/conferences/{c}/participants/{p}", {"muted": None}),
        ("POST", "/conferences/{c}/participants", {"uri": "tel:+123"}),
        ("POST", "/conferences/{c}/participants", {}),
        ("POST", "/conferences/{c}/participants", "not json"),
    ],
)
async def test_bad_bodies_are_422(
    env: Env, client: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    (conf,) = seed(env)
    resp = await client.request(method, _url(path, conf), json=body, headers=env.auth("admin"))
    assert_error(resp, 422, "validation_error")
    assert env.control.calls == []


async def test_openapi_and_docs(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = set(spec["paths"])
    assert {
        "/api/v1/conferences",
        "/api/v1/conferences/{conference_id}",
        "/api/v1/conferences/{conference_id}/participants",
        "/api/v1/conferences/{conference_id}/participants/{participant_id}",
        "/api/v1/events",
        "/api/v1/subscribers",
        "/healthz",
        "/readyz",
        "/metrics",
    } <= paths
    assert (await client.get("/docs")).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/conferences/a%00b",
        "/conferences/" + "x" * 300,
        "/conferences/{c}/participants/a%00b",
        "/conferences/a%00b/participants",
    ],
)
async def test_odd_ids_are_404_not_500(env: Env, client: httpx.AsyncClient, path: str) -> None:
    (conf,) = seed(env)
    assert_error(await client.get(V1 + path.format(c=conf), headers=env.auth("admin")), 404)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/conferences/{c}/participants", {"uri": "sip:a\x00b@example.com"}),
        ("POST", "/subscribers", {"impu": "sip:a@b", "password": "p", "realm": "r\x00"}),
        ("GET", "/subscribers/99999999999999999999999", None),
        ("GET", "/subscribers/0", None),
    ],
)
async def test_odd_input_is_422_not_500(
    env: Env, client: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    (conf,) = seed(env)
    resp = await client.request(
        method, V1 + path.format(c=conf), json=body, headers=env.auth("admin")
    )
    assert_error(resp, 422, "validation_error")
