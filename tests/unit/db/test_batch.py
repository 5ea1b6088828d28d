"""The batch statements store what the ORM would have stored, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Table, select
from sqlalchemy.dialects.sqlite import DATETIME
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

from app.db import SessionFactory, engine_of, repo, session_scope
from app.db.batch import (
    CONFERENCE_COLUMNS,
    EVENT_COLUMNS,
    PARTICIPANT_COLUMNS,
    SUBSCRIPTION_COLUMNS,
    BatchWriter,
    RowConflictError,
    dumps,
    dumps_detail,
    sqlite_time,
    std_dumps,
    std_dumps_detail,
)
from app.db.models import Conference, EventLogEntry, Participant, Subscription

T0 = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)


def _columns(model: type[Any]) -> set[str]:
    table = model.__table__
    assert isinstance(table, Table)
    return set(table.columns.keys())


def test_the_column_lists_are_the_models() -> None:
    assert set(CONFERENCE_COLUMNS) == _columns(Conference)
    assert set(PARTICIPANT_COLUMNS) == _columns(Participant)
    assert set(SUBSCRIPTION_COLUMNS) == _columns(Subscription)
    assert set(EVENT_COLUMNS) == _columns(EventLogEntry) - {"id"}  # the log numbers itself


@pytest.mark.parametrize(
    "value",
    [
        T0,
        T0.replace(microsecond=0),
        datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        datetime(2026, 11, 25, 14, 0, 0, 5, tzinfo=timezone(timedelta(hours=2))),
    ],
)
def test_sqlite_times_are_the_text_sqlalchemy_writes(value: datetime) -> None:
    dialect = SQLiteDialect_pysqlite()
    process = DATETIME().bind_processor(dialect)  # type: ignore[no-untyped-call]
    assert process is not None
    assert sqlite_time(value) == process(value.astimezone(UTC).replace(tzinfo=None))


def test_a_naive_time_is_refused_as_by_the_model_type() -> None:
    with pytest.raises(ValueError):
        sqlite_time(datetime(2026, 1, 1))


def test_the_json_encoders_write_the_values_json_dumps_writes() -> None:
    dialog = {"call_id": "a@b", "route_set": ["<sip:p;lr>"], "cseq": 3, "secure": False}
    value = {"ue": dialog, "mrfp": None, "name": 'Zoë \u2603 "q"', "n": 1.5}
    assert json.loads(dumps(value)) == json.loads(std_dumps(value)) == json.loads(json.dumps(value))
    detail = {"joined_at": T0, "left_at": None, "muted": True, "member_id": "7"}
    expected = {**detail, "joined_at": T0.isoformat()}
    assert json.loads(dumps_detail(detail)) == expected
    assert json.loads(std_dumps_detail(detail)) == expected
    with pytest.raises(TypeError):
        std_dumps_detail({"x": object()})
    with pytest.raises(TypeError):
        dumps_detail({"x": object()})


def _dialog_state(n: int) -> dict[str, Any]:
    return {"ue": {"call_id": f"ue{n}", "route_set": [], "state": "confirmed"}, "mrfp": None}


def _orm_rows(factory: SessionFactory) -> None:
    with session_scope(factory) as s:
        repo.create_conference(
            s, conference_id="c1", uri="sip:conf-c1@h", factory_uri="sip:f@h", initiator="u",
            mrfp_node="m1", owner_node="n1", at=T0,
        )  # fmt: skip
        repo.end_conference(s, "c1", at=T0 + timedelta(seconds=9))
        repo.add_participant(
            s, "c1", uri="sip:u@h", participant_id="p1", joining_method="dialed-in", at=T0
        )
        repo.update_participant(
            s,
            "p1",
            {
                "status": "connected",
                "muted": True,
                "joined_at": T0 + timedelta(seconds=1),
                "left_at": None,
                "mrfp_member_id": "7",
                "dialog_state": _dialog_state(1),
            },
        )
        repo.add_subscription(
            s, "c1", subscription_id="s1", subscriber_uri="sip:u@h", call_id="ue1",
            local_tag="a", remote_tag="b", state="active", version=2,
            dialog_state={"call_id": "ue1"}, at=T0,
        )  # fmt: skip
        repo.append_event(
            s, "participant.joined", conference_id="c1", participant_id="p1", actor="u",
            detail={"joined_at": (T0 + timedelta(seconds=1)).isoformat(), "muted": True}, at=T0,
        )  # fmt: skip


def _batch_rows(factory: SessionFactory) -> None:
    engine = engine_of(factory)
    sql = BatchWriter(engine)
    with engine.begin() as conn:
        conference = ("c1", "sip:conf-c1@h", "sip:f@h", "u", None, "active", False, "m1", "n1")
        sql.insert_conferences(conn, [(*conference, T0, None)])
        sql.end_conferences(conn, [("c1", T0 + timedelta(seconds=9))])
        row: dict[str, Any] = dict.fromkeys(PARTICIPANT_COLUMNS)
        row.update(
            id="p1", conference_id="c1", uri="sip:u@h", joining_method="dialed-in",
            created_at=T0, status="connected", muted=True, joined_at=T0 + timedelta(seconds=1),
            mrfp_member_id="7", dialog_state=_dialog_state(1),
        )  # fmt: skip
        sql.upsert_participants(conn, ("status",), [[row[c] for c in PARTICIPANT_COLUMNS]])
        sql.upsert_subscriptions(
            conn,
            [("s1", "c1", "sip:u@h", "ue1", "a", "b", None, 2, "active", {"call_id": "ue1"}, T0)],
        )
        sql.insert_events(
            conn,
            [
                (T0, "c1", "p1", "participant.joined", "u",
                 {"joined_at": T0 + timedelta(seconds=1), "muted": True}),
            ],
        )  # fmt: skip


def _raw(factory: SessionFactory) -> dict[str, list[tuple[Any, ...]]]:
    """The rows as the driver returns them (no SQLAlchemy type processing), JSON parsed."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine_of(factory).connect() as conn:
        for table, columns in (
            ("conferences", CONFERENCE_COLUMNS),
            ("participants", PARTICIPANT_COLUMNS),
            ("subscriptions", SUBSCRIPTION_COLUMNS),
            ("event_log", EVENT_COLUMNS),
        ):
            rows = conn.exec_driver_sql(f"SELECT {', '.join(columns)} FROM {table}").all()
            out[table] = [
                tuple(
                    json.loads(v) if c in ("dialog_state", "detail") and isinstance(v, str) else v
                    for c, v in zip(columns, r, strict=True)
                )
                for r in rows
            ]
    return out


def test_batch_rows_are_stored_as_orm_rows(factory: SessionFactory, tmp_path: Any) -> None:
    _orm_rows(factory)
    orm = _raw(factory)
    with session_scope(factory) as s:
        for model in (EventLogEntry, Subscription, Participant, Conference):
            s.query(model).delete()
    _batch_rows(factory)
    batch = _raw(factory)
    assert batch == orm
    assert orm["participants"] and orm["event_log"]  # something was compared
    # And the ORM reads them back as aware UTC times and parsed JSON.
    with factory() as s:
        part = s.get(Participant, "p1")
        assert part is not None
        assert part.joined_at == T0 + timedelta(seconds=1)
        assert part.dialog_state == _dialog_state(1)
        assert part.muted is True
        (entry,) = s.scalars(select(EventLogEntry)).all()
        assert entry.at == T0
        assert entry.detail == {"joined_at": (T0 + timedelta(seconds=1)).isoformat(), "muted": True}


def test_an_id_used_in_another_conference_is_refused(factory: SessionFactory) -> None:
    engine = engine_of(factory)
    sql = BatchWriter(engine)

    def participant(pid: str, conference_id: str) -> list[Any]:
        row: dict[str, Any] = dict.fromkeys(PARTICIPANT_COLUMNS)
        row.update(id=pid, conference_id=conference_id, uri="sip:u@h", status="pending")
        row.update(muted=False, created_at=T0)
        return [row[c] for c in PARTICIPANT_COLUMNS]

    with engine.begin() as conn:
        for cid in ("c1", "c2"):
            sql.insert_conferences(
                conn,
                [(cid, f"sip:{cid}@h", "f", None, None, "active", False, None, None, T0, None)],
            )
        sql.upsert_participants(conn, ("status",), [participant("p1", "c1")])
    # Updating an existing row of the same conference counts as written...
    with engine.begin() as conn:
        sql.upsert_participants(
            conn, ("status",), [participant("p1", "c1"), participant("p2", "c1")]
        )
    # ...one of another conference does not, and the batch is refused.
    with pytest.raises(RowConflictError), engine.begin() as conn:
        sql.upsert_participants(
            conn, ("status",), [participant("p3", "c2"), participant("p1", "c2")]
        )
    with factory() as s:
        assert s.get(Participant, "p3") is None
        p1 = s.get(Participant, "p1")
        assert p1 is not None and p1.conference_id == "c1"
