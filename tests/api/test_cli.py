"""The `mrfc` CLI: database commands directly, actions through a running server's REST API."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner

from app.api import create_app
from app.cli import app as cli
from app.db import make_engine, make_session_factory, migrate, repo, session_scope
from app.service.events import EventBus
from app.settings import Settings
from tests.api.conftest import FakeControl
from tests.support.ports import free_port


@pytest.fixture
def db_env(tmp_path: Path) -> dict[str, str]:
    return {"MRFC_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "MRFC_CONFIG": ""}


def run(env: dict[str, str], *args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env, input=input)
    return result.exit_code, result.stdout, result.stderr


def test_db_upgrade_and_tokens(db_env: dict[str, str]) -> None:
    code, out, _ = run(db_env, "db", "upgrade")
    assert code == 0 and "head" in out
    code, out, err = run(db_env, "tokens", "create", "--name", "ops", "--scope", "admin")
    assert code == 0, err
    token = out.strip()
    assert token.startswith("mrfc_") and "not shown again" in err
    code, out, _ = run(db_env, "tokens", "list", "--json")
    (row,) = json.loads(out)
    assert row["name"] == "ops" and row["scope"] == "admin" and token not in out
    code, out, _ = run(db_env, "tokens", "list")
    assert "NAME" in out and "ops" in out
    code, _, err = run(db_env, "tokens", "create", "--name", "ops")
    assert code == 1 and "exists" in err
    assert run(db_env, "tokens", "revoke", "ops")[0] == 0
    code, _, err = run(db_env, "tokens", "revoke", "nobody")
    assert code == 1 and "no token" in err


def test_subscribers(db_env: dict[str, str]) -> None:
    code, out, err = run(
        db_env, "subscribers", "add", "sip:user1_public1@home1.net", "--password", "demo"
    )
    assert code == 0, err
    assert "user1_public1" in out and "home1.net" in out
    code, out, _ = run(db_env, "subscribers", "list", "--json")
    (sub,) = json.loads(out)
    assert sub["impi"] == "user1_public1" and "ha1" not in sub
    assert run(db_env, "subscribers", "remove", "sip:user1_public1@home1.net")[0] == 0
    assert run(db_env, "subscribers", "list", "--json")[1].strip() == "[]"
    assert run(db_env, "subscribers", "remove", "sip:user1_public1@home1.net")[0] == 1


def test_bad_configuration_stops_with_the_option_named(db_env: dict[str, str]) -> None:
    code, _, err = run({**db_env, "MRFC_API_PORT": "99999"}, "conferences", "list")
    assert code == 2 and "api.port" in err


def _seed(url: str) -> str:
    migrate(url)
    engine = make_engine(url)
    try:
        with session_scope(make_session_factory(engine)) as s:
            conf = repo.create_conference(
                s, uri="sip:conf-abc@mrfc1.home1.net", factory_uri="sip:conf-factory1@x"
            )
            repo.add_participant(
                s,
                conf.id,
                uri="sip:user1_public1@home1.net",
                participant_id="p1",
                status="connected",
            )
            repo.append_event(
                s, "participant.joined", conference_id=conf.id, participant_id="p1", actor="sip"
            )
            return conf.id
    finally:
        engine.dispose()


def test_conferences_list_and_show(db_env: dict[str, str]) -> None:
    conf_id = _seed(db_env["MRFC_DATABASE_URL"])
    code, out, _ = run(db_env, "conferences", "list", "--json")
    (row,) = json.loads(out)
    assert row["id"] == conf_id and row["participants"] == 1 and row["state"] == "active"
    code, out, _ = run(db_env, "conferences", "show", conf_id)
    assert code == 0 and "sip:conf-abc@mrfc1.home1.net" in out and "participant.joined" in out
    shown = json.loads(run(db_env, "conferences", "show", conf_id, "--json")[1])
    assert shown["participant_list"][0]["id"] == "p1"
    assert shown["event_log"][0]["kind"] == "participant.joined"
    code, out, _ = run(db_env, "participants", "list", conf_id, "--json")
    assert json.loads(out)[0]["status"] == "connected"
    assert run(db_env, "conferences", "show", "nope")[0] == 1


@pytest.fixture
def server(db_env: dict[str, str]) -> Iterator[tuple[str, str, FakeControl]]:
    url = db_env["MRFC_DATABASE_URL"]
    migrate(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    with session_scope(factory) as s:
        _, token = repo.create_token(s, "cli", "admin")
    control = FakeControl()
    port = free_port()
    api = create_app(Settings(), factory, control, EventBus())
    srv = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", token, control
    finally:
        srv.should_exit = True
        thread.join(30)
        engine.dispose()


def test_actions_go_through_the_api(
    db_env: dict[str, str], server: tuple[str, str, FakeControl]
) -> None:
    api_url, token, control = server
    conf_id = _seed(db_env["MRFC_DATABASE_URL"])
    env = {**db_env, "MRFC_API_URL": api_url, "MRFC_TOKEN": token}
    for args in (
        ("participants", "mute", conf_id, "p1"),
        ("participants", "mute", conf_id, "p1", "--unmute"),
        ("participants", "kick", conf_id, "p1"),
        ("conferences", "end", conf_id),
    ):
        code, out, err = run(env, *args)
        assert code == 0, f"{args}: exit {code}\n{out}\n{err}"
    assert [c[0] for c in control.calls] == ["mute", "mute", "kick", "end"]
    assert control.calls[1][3] is False and control.calls[0][-1] == "api:cli"
    code, _, err = run(env, "participants", "kick", conf_id, "nobody")
    assert code == 1 and "participant_not_found" in err
    code, _, err = run({**env, "MRFC_TOKEN": "wrong"}, "conferences", "end", conf_id)
    assert code == 1 and "401" in err


def test_actions_need_a_token(db_env: dict[str, str]) -> None:
    code, _, err = run(db_env, "conferences", "end", "x")
    assert code == 2 and "MRFC_TOKEN" in err
