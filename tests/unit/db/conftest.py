from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.db import SessionFactory, make_engine, make_session_factory, migrate
from tests.support.postgres import database_url, postgres_server  # noqa: F401


@pytest.fixture
def factory(database_url: str) -> Iterator[SessionFactory]:  # noqa: F811
    migrate(database_url)
    engine = make_engine(database_url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()
