"""Persistence: SQLAlchemy models, engines/sessions, Alembic migrations, repositories."""

from app.db.migrate import migrate
from app.db.session import (
    SessionFactory,
    engine_of,
    make_engine,
    make_session_factory,
    normalize_url,
    ping,
    run_db,
    session_scope,
)

__all__ = [
    "SessionFactory",
    "engine_of",
    "make_engine",
    "make_session_factory",
    "migrate",
    "normalize_url",
    "ping",
    "run_db",
    "session_scope",
]
