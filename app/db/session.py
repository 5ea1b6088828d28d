"""Engines and sessions for SQLite (the embedded default) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

SessionFactory = sessionmaker[Session]

P = ParamSpec("P")
R = TypeVar("R")


def normalize_url(url: str | URL) -> URL:
    """`postgres://` and `postgresql://` mean psycopg 3 here (SQLAlchemy would pick psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # SQLite ignores foreign keys unless asked, per connection.
    cur.execute("PRAGMA foreign_keys=ON")
    # WAL lets the API read while the focus writes; busy_timeout waits out a writer instead
    # of failing with "database is locked" (Kamailio reads the same file too).
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for `url`; creates the directory of a SQLite file when missing."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # Sessions are used from the event loop's worker threads (FastAPI runs sync routes
        # in a thread pool), so the connection may be used by another thread than its maker.
        kwargs.setdefault("connect_args", {}).setdefault("check_same_thread", False)
        engine = create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(parsed, **kwargs)


def make_session_factory(engine: Engine) -> SessionFactory:
    # expire_on_commit=False: objects handed to the focus or the API stay readable after the
    # transaction that loaded them is over.
    return sessionmaker(engine, expire_on_commit=False)


def engine_of(factory: SessionFactory) -> Engine:
    """The engine a session factory made by `make_session_factory` is bound to (for writers
    that run Core statements on a Connection, without a Session)."""
    bind = factory.kw.get("bind")
    if not isinstance(bind, Engine):
        raise TypeError("the session factory is not bound to an engine")
    return bind


@contextmanager
def session_scope(factory: SessionFactory) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception."""
    with factory() as session, session.begin():
        yield session


async def run_db(
    factory: SessionFactory,
    fn: Callable[Concatenate[Session, P], R],
    *args: P.args,
    **kwargs: P.kwargs,
) -> R:
    """`fn(session, ...)` in one transaction on a worker thread, for asyncio callers.

    The database driver blocks; running it on the event loop would stall SIP timers.
    Example: `conf = await run_db(factory, repo.create_conference, uri=..., factory_uri=...)`.
    """

    def call() -> R:
        with session_scope(factory) as session:
            return fn(session, *args, **kwargs)

    return await asyncio.to_thread(call)


def ping(factory: SessionFactory) -> bool:
    """True when the database answers a trivial query (used by /readyz)."""
    try:
        with factory() as session:
            session.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
