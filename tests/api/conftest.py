"""The API against a real database (SQLite and PostgreSQL) and a fake focus."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.api import create_app
from app.db import SessionFactory, make_engine, make_session_factory, migrate, repo, session_scope
from app.service.control import ControlError
from app.service.events import EventBus
from app.service.metrics import Metrics
from app.settings import Settings
from tests.support.postgres import database_url, postgres_server  # noqa: F401


class FakeControl:
    """Records every action; `fail_with` makes the next actions raise."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail_with: ControlError | None = None
        self.healthy = {"sip": True, "esl": True}
        self.next_participant_id = "dialed1"

    def _record(self, *call: Any) -> None:
        self.calls.append(call)
        if self.fail_with is not None:
            raise self.fail_with

    async def end_conference(self, conference_id: str, actor: str) -> None:
        self._record("end", conference_id, actor)

    async def kick(self, conference_id: str, participant_id: str, actor: str) -> None:
        self._record("kick", conference_id, participant_id, actor)

    async def set_muted(
        self, conference_id: str, participant_id: str, muted: bool, actor: str
    ) -> None:
        self._record("mute", conference_id, participant_id, muted, actor)

    async def set_locked(self, conference_id: str, locked: bool, actor: str) -> None:
        self._record("lock", conference_id, locked, actor)

    async def dial_out(self, conference_id: str, uri: str, actor: str) -> str:
        self._record("dial", conference_id, uri, actor)
        return self.next_participant_id

    async def health(self) -> dict[str, bool]:
        return dict(self.healthy)


@dataclass
class Env:
    app: FastAPI
    factory: SessionFactory
    control: FakeControl
    bus: EventBus
    metrics: Metrics
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[scope]}"}


@pytest.fixture
def env(database_url: str) -> Iterator[Env]:  # noqa: F811
    migrate(database_url)
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    control = FakeControl()
    bus = EventBus(queue_size=50)
    metrics = Metrics()
    app = create_app(Settings(), factory, control, bus, metrics=metrics, sse_keepalive=0.2)
    e = Env(app, factory, control, bus, metrics)
    with session_scope(factory) as s:
        for scope in ("read", "admin"):
            _, e.tokens[scope] = repo.create_token(s, f"{scope}-token", scope)
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
