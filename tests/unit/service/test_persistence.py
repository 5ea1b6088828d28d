"""The database writer: a batch per transaction gives the rows a change per transaction gave,
the event log keeps every change, and the write-behind queue loses nothing; on SQLite and on
PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.db import SessionFactory, make_engine, make_session_factory, migrate
from app.db.models import Conference, EventLogEntry, Participant, Subscription
from app.focus.actions import Changed
from app.service import persistence
from app.service.persistence import DatabaseWriter, Stamped, WriteBehind
from tests.support.postgres import BACKENDS, shared_server

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every database test here runs on SQLite and on a real PostgreSQL."""
    return str(request.param)


def _factory(backend: str, request: pytest.FixtureRequest, path: Path) -> Iterator[SessionFactory]:
    if backend == "sqlite":
        url = f"sqlite:///{path}"
    else:
        url = shared_server(request.config).create_database()
    migrate(url)
    engine = make_engine(url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


@pytest.fixture
def factory(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[SessionFactory]:
    yield from _factory(backend, request, tmp_path / "a.sqlite3")


@pytest.fixture
def other_factory(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[SessionFactory]:
    yield from _factory(backend, request, tmp_path / "b.sqlite3")


def _dialog(call_id: str, local: str, remote: str) -> dict[str, Any]:
    return {"call_id": call_id, "local_tag": local, "remote_tag": remote, "local_cseq": 1}


def _part(pid: str, status: str, **extra: Any) -> dict[str, Any]:
    """A participant snapshot as `app.focus.model.Participant.snapshot` makes it."""
    data: dict[str, Any] = {
        "id": pid,
        "conference_id": "c1",
        "uri": f"sip:{pid}@home1.net",
        "display_name": None,
        "status": status,
        "joining_method": "dialed-in",
        "disconnection_method": None,
        "muted": False,
        "talking": False,
        "member_id": None,
        "mrfp_call_id": f"mrfp-{pid}",
        "call_id": f"ue-{pid}",
        "local_tag": "ft",
        "remote_tag": "ut",
        "dialog": _dialog(f"ue-{pid}", "ft", "ut"),
        "mrfp_dialog": _dialog(f"mrfp-{pid}", "m1", "m2"),
        "joined_at": None,
        "left_at": None,
    }
    data.update(extra)
    return data


def _conference(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "c1",
        "uri": "sip:conf-c1@mrfc1.home1.net",
        "factory_uri": "sip:conf-factory1@mrfc1.home1.net",
        "initiator": "sip:p1@home1.net",
        "state": "active",
        "locked": False,
        "mrfp_node": "mrfp1",
        "created_at": T0,
        "ended_at": None,
        "participant_count": 0,
    }
    data.update(extra)
    return data


def _history() -> list[Stamped]:
    """A conference's life: two join, one mutes, talks, both leave, it ends."""
    joined = T0 + timedelta(seconds=1)
    left = T0 + timedelta(seconds=9)
    sub = {
        "id": "s1",
        "conference_id": "c1",
        "kind": "conference",
        "subscriber": "sip:p1@home1.net",
        "version": 1,
        "terminated": False,
        "dialog": _dialog("ue-p1", "ft", "ut"),
    }
    changes = [
        Changed("conference.created", "c1", data=_conference(), actor="sip:p1@home1.net"),
        Changed("participant.joined", "c1", "p1", _part("p1", "connected", joined_at=joined)),
        Changed("participant.media", "c1", "p1", _part("p1", "connected", member_id=7)),
        Changed("subscription.active", "c1", "p1", sub),
        Changed("participant.joined", "c1", "p2", _part("p2", "connected", joined_at=joined)),
        Changed(
            "participant.muted",
            "c1",
            "p2",
            _part("p2", "muted-via-focus", muted=True, member_id=8),
            actor="admin",
        ),
        Changed("participant.talking", "c1", "p1", _part("p1", "connected", talking=True)),
        Changed(
            "participant.left",
            "c1",
            "p2",
            _part(
                "p2",
                "disconnected",
                muted=True,
                member_id=8,
                disconnection_method="departed",
                left_at=left,
            ),
        ),
        Changed("subscription.terminated", "c1", "p1", {**sub, "version": 3, "terminated": True}),
        Changed(
            "participant.left",
            "c1",
            "p1",
            _part("p1", "disconnected", disconnection_method="booted", left_at=left),
            actor="admin",
        ),
        Changed("conference.ended", "c1", data=_conference(state="ended", ended_at=left)),
    ]
    return [(c, T0 + timedelta(milliseconds=i)) for i, c in enumerate(changes)]


def _state(factory: SessionFactory) -> dict[str, Any]:
    """Everything the writer leaves in the database, minus what is stamped at write time."""
    with factory() as session:
        confs = [
            (c.id, c.state, c.locked, c.ended_at, c.mrfp_node)
            for c in session.scalars(select(Conference))
        ]
        parts = [
            (
                p.id,
                p.uri,
                p.status,
                p.muted,
                p.mrfp_member_id,
                p.mrfp_call_id,
                p.call_id,
                p.disconnection_method,
                p.joined_at,
                p.left_at,
                p.dialog_state,
            )
            for p in session.scalars(select(Participant).order_by(Participant.id))
        ]
        subs = [(s.id, s.state, s.version) for s in session.scalars(select(Subscription))]
        events = [
            (e.kind, e.participant_id, e.actor, e.detail)
            for e in session.scalars(select(EventLogEntry).order_by(EventLogEntry.id))
        ]
    return {"conferences": confs, "participants": parts, "subscriptions": subs, "events": events}


def test_one_batch_leaves_what_one_transaction_per_change_left(
    factory: SessionFactory, other_factory: SessionFactory
) -> None:
    history = _history()
    one_by_one = DatabaseWriter(other_factory)
    for change, _at in history:
        one_by_one(change)
    DatabaseWriter(factory).write_batch(history)
    batched = _state(factory)
    assert batched == _state(other_factory)
    # The rows hold the final state, the log every change but talking/media.
    (p1, p2) = batched["participants"]
    assert p1[2:5] == ("disconnected", False, "7")
    assert p2[2:5] == ("disconnected", True, "8")
    assert batched["conferences"][0][1] == "ended"
    assert batched["subscriptions"] == [("s1", "terminated", 3)]
    kinds = [e[0] for e in batched["events"]]
    assert kinds == [
        "conference.created",
        "participant.joined",
        "subscription.active",
        "participant.joined",
        "participant.muted",
        "participant.left",
        "subscription.terminated",
        "participant.left",
        "conference.ended",
    ]


def test_batches_split_anywhere_give_the_same_rows(
    factory: SessionFactory, other_factory: SessionFactory
) -> None:
    history = _history()
    DatabaseWriter(other_factory).write_batch(history)
    writer = DatabaseWriter(factory)
    # Rows created in one batch and updated in the next (the existing-row path).
    for start in range(0, len(history), 3):
        writer.write_batch(history[start : start + 3])
    assert _state(factory) == _state(other_factory)


def test_the_event_log_is_stamped_with_the_time_of_each_change(factory: SessionFactory) -> None:
    history = _history()
    DatabaseWriter(factory).write_batch(history)
    with factory() as session:
        stamps = list(session.scalars(select(EventLogEntry.at).order_by(EventLogEntry.id)))
    logged = [
        at
        for change, at in history
        if change.kind not in ("participant.talking", "participant.media")
    ]
    assert stamps == logged


def test_a_refused_batch_writes_nothing(factory: SessionFactory) -> None:
    history = _history()
    # A participant of a conference that does not exist: the foreign key refuses the batch.
    bad = Changed("participant.joined", "nope", "px", _part("px", "connected"))
    with pytest.raises(IntegrityError):
        DatabaseWriter(factory).write_batch([*history[:2], (bad, T0)])
    assert _state(factory)["events"] == []


# -- the write-behind queue ------------------------------------------------------------------


class Recorder:
    def __init__(self, refuse: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.refuse = refuse
        self.lock = threading.Lock()

    def __call__(self, batch: list[Stamped]) -> None:
        kinds = [c.kind for c, _ in batch]
        if self.refuse in kinds:
            raise RuntimeError("refused")
        with self.lock:
            self.batches.append(kinds)

    def written(self) -> list[str]:
        with self.lock:
            return [k for b in self.batches for k in b]


def test_changes_are_written_in_order_in_few_batches() -> None:
    rec = Recorder()
    writer = WriteBehind(rec, interval=0.2, max_batch=1000)
    try:
        for i in range(300):
            writer.put(Changed(f"k{i}", "c1"))
        assert writer.flush(timeout=30)
        assert rec.written() == [f"k{i}" for i in range(300)]
        assert len(rec.batches) < 10
        assert writer.pending == 0
    finally:
        writer.close(timeout=30)


def test_a_full_batch_is_written_without_waiting_for_the_interval() -> None:
    rec = Recorder()
    writer = WriteBehind(rec, interval=3600, max_batch=5)
    try:
        for i in range(5):
            writer.put(Changed(f"k{i}", "c1"))
        deadline = threading.Event()
        for _ in range(300):
            if rec.written():
                break
            deadline.wait(0.1)
        assert rec.written() == [f"k{i}" for i in range(5)]
    finally:
        writer.close(timeout=30)


def test_close_writes_what_is_pending_and_refuses_more() -> None:
    rec = Recorder()
    writer = WriteBehind(rec, interval=3600, max_batch=1000)
    for i in range(50):
        writer.put(Changed(f"k{i}", "c1"))
    writer.close(timeout=30)
    assert rec.written() == [f"k{i}" for i in range(50)]
    with pytest.raises(RuntimeError):
        writer.put(Changed("late", "c1"))


def test_a_refused_change_costs_only_itself() -> None:
    rec = Recorder(refuse="bad")
    writer = WriteBehind(rec, interval=3600, max_batch=1000)
    for kind in ("a", "b", "bad", "c"):
        writer.put(Changed(kind, "c1"))
    writer.close(timeout=30)
    assert rec.written() == ["a", "b", "c"]
    assert writer.failed == 1


def test_the_writer_persists_through_the_queue(factory: SessionFactory) -> None:
    writer = WriteBehind(DatabaseWriter(factory).write_batch, interval=0.05)
    try:
        for change, at in _history():
            writer.put(change, at)
        assert writer.flush(timeout=30)
    finally:
        writer.close(timeout=30)
    assert len(_state(factory)["events"]) == 9


def test_a_new_writer_updates_the_rows_an_earlier_one_wrote(
    factory: SessionFactory, other_factory: SessionFactory
) -> None:
    history = _history()
    DatabaseWriter(other_factory).write_batch(history)
    DatabaseWriter(factory).write_batch(history[:5])
    # After a restart: the rows exist, this writer has never seen them.
    DatabaseWriter(factory).write_batch(history[5:])
    assert _state(factory) == _state(other_factory)


def test_a_rolled_back_insert_is_not_taken_for_a_row(
    factory: SessionFactory, other_factory: SessionFactory
) -> None:
    history = _history()
    DatabaseWriter(other_factory).write_batch(history)
    writer = DatabaseWriter(factory)
    writer.write_batch(history[:1])
    bad = Changed("participant.joined", "nope", "px", _part("px", "connected"))
    with pytest.raises(IntegrityError):
        writer.write_batch([*history[1:3], (bad, T0)])
    writer.write_batch(history[1:])
    assert _state(factory) == _state(other_factory)


def test_a_plain_persist_function_is_called_once_per_change_in_order() -> None:
    from app.service.focus_service import _batch_writer

    seen: list[str] = []

    def persist(change: Changed) -> None:
        if change.kind == "bad":
            raise RuntimeError("refused")
        seen.append(change.kind)

    writer = WriteBehind(_batch_writer(persist), interval=3600)
    for kind in ("a", "bad", "b", "c"):
        writer.put(Changed(kind, "c1"))
    writer.close(timeout=30)
    # The refused change is logged and skipped; none is written twice.
    assert seen == ["a", "b", "c"]


def test_a_database_writer_is_used_a_batch_at_a_time(factory: SessionFactory) -> None:
    from app.service.focus_service import _batch_writer

    writer = DatabaseWriter(factory)
    assert _batch_writer(writer) == writer.write_batch


def test_the_writer_keeps_its_connection_and_replaces_an_idle_one(
    factory: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = _history()
    writer = DatabaseWriter(factory)
    writer.write_batch(history[:3])
    kept = writer._conn
    writer.write_batch(history[3:5])
    assert writer._conn is kept is not None
    monkeypatch.setattr(persistence, "IDLE_RELEASE", -1.0)
    writer.write_batch(history[5:])
    assert writer._conn is not kept
    writer.close()
    assert writer._conn is None
    assert len(_state(factory)["events"]) == 9
