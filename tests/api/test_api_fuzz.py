"""Schemathesis generates requests from /openapi.json: no input may produce a 5xx.

Driven through its Python API with plain hypothesis, one operation after another (its pytest
plugin does not work with the pytest used here).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from app.db import repo, session_scope
from tests.api.conftest import Env

schemathesis = pytest.importorskip("schemathesis")


def _seed(env: Env) -> None:
    with session_scope(env.factory) as s:
        conf = repo.create_conference(
            s,
            conference_id="conf1",
            uri="sip:conf-conf1@mrfc1.home1.net",
            factory_uri="sip:conf-factory1@mrfc1.home1.net",
        )
        repo.add_participant(s, conf.id, uri="sip:user1_public1@home1.net", participant_id="p1")


@pytest.mark.slow
def test_no_server_errors(env: Env) -> None:
    _seed(env)
    schema = schemathesis.openapi.from_asgi("/openapi.json", env.app)
    headers = {"Authorization": f"Bearer {env.tokens['admin']}"}
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        # The SSE stream never ends by itself; it has its own tests.
        if operation.path == "/api/v1/events":
            continue
        tested += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=30,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            response = case.call(headers=headers)
            assert response.status_code < 500, (case.method, case.formatted_path, response.text)
            if response.status_code >= 400 and case.operation.path != "/readyz":
                # Every error in the one shape of CONVENTIONS.md.
                error = response.json()["error"]
                assert isinstance(error["code"], str) and isinstance(error["message"], str)

        run()
    assert tested >= 12
