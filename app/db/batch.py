"""The focus's write path: many changes in one transaction, for the write-behind thread.

The ORM costs more per row than the database does (a Session, unit-of-work bookkeeping, the
statement cache key, per-row parameter construction and bind processors), and the focus writes
a few rows per join all day long. So these statements are plain SQL, built once per dialect
from the models' column names and run with the driver's executemany; the values are encoded
here the way the models' types would store them, so that the REST API, the CLI and a restart
(which read through the ORM) read back exactly what an ORM write would have left:

- `UTCDateTime`: naive UTC. SQLite keeps it as the text SQLAlchemy's SQLite DATETIME writes
  (`YYYY-MM-DD HH:MM:SS.ffffff`, which is also what makes text comparison order by time, and
  the keyset cursors rely on it); PostgreSQL gets the naive datetime.
- `JSON`: JSON text that reads back as the same values SQLAlchemy's JSON type (json.dumps,
  with the engines `make_engine` makes) would have written: orjson's compact UTF-8 when
  installed, else json.dumps's own text (see `dumps`); on PostgreSQL that text is cast to
  `json` (the value is the text).
- `Boolean`: a Python bool (SQLite's driver stores it as the integer SQLAlchemy would).

Participants and subscriptions are written with an upsert (`INSERT ... ON CONFLICT (id) DO
UPDATE`, SQLite 3.24+ and PostgreSQL 9.5+ spell it the same): the writer no longer needs to ask
which rows exist, which after a restart it cannot know. Only SQLite and PostgreSQL are served.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table

from app.db.models import Conference, ConferenceState, EventLogEntry, Participant, Subscription

# Column order of the rows these statements take (checked against the models by the tests).
CONFERENCE_COLUMNS = (
    "id",
    "uri",
    "factory_uri",
    "initiator",
    "subject",
    "state",
    "locked",
    "mrfp_node",
    "owner_node",
    "created_at",
    "ended_at",
)
# The snapshot fields of a participant change come last, in one run, so that a writer can
# copy them into a row with one slice assignment.
PARTICIPANT_COLUMNS = (
    "id",
    "conference_id",
    "uri",
    "mrfp_member_id",
    "created_at",
    "dialog_state",
    "display_name",
    "call_id",
    "local_tag",
    "remote_tag",
    "mrfp_call_id",
    "status",
    "joining_method",
    "disconnection_method",
    "muted",
    "joined_at",
    "left_at",
)
PARTICIPANT_FIELDS_START = PARTICIPANT_COLUMNS.index("display_name")
SUBSCRIPTION_COLUMNS = (
    "id",
    "conference_id",
    "subscriber_uri",
    "call_id",
    "local_tag",
    "remote_tag",
    "expires_at",
    "version",
    "state",
    "dialog_state",
    "created_at",
)
# What a later change of a subscription sets (the rest is the first change's).
SUBSCRIPTION_UPDATED = ("state", "version", "dialog_state")
EVENT_COLUMNS = ("at", "conference_id", "participant_id", "kind", "actor", "detail")

_JSON_COLUMNS = frozenset({"dialog_state", "detail"})


class RowConflictError(ValueError):
    """An upsert found its row in another conference: the batch must not go in."""


def _table(model: type[Any]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


def _utc(value: datetime) -> datetime:
    tz = value.tzinfo
    if tz is None:
        raise ValueError("naive datetime given; pass an aware UTC time")
    return value if tz is UTC else value.astimezone(UTC)


def sqlite_time(value: datetime | None) -> str | None:
    """The text SQLAlchemy's SQLite DATETIME stores for `value` as naive UTC."""
    if value is None:
        return None
    v = value if value.tzinfo is UTC else _utc(value)
    # SQLAlchemy's storage format, filled from a tuple: cheaper than its dict, and than
    # an f-string with seven format specs (0.7 against 1.4 us).
    return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (  # noqa: UP031
        v.year,
        v.month,
        v.day,
        v.hour,
        v.minute,
        v.second,
        v.microsecond,
    )


def naive_utc(value: datetime | None) -> datetime | None:
    """What SQLAlchemy hands psycopg for a `UTCDateTime` (a `timestamp` column)."""
    return None if value is None else _utc(value).replace(tzinfo=None)


def _iso(value: Any) -> str:
    # Datetimes in the event log's detail are ISO 8601 text, as the API shows them.
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# The text json.dumps writes (default separators, ASCII), without its per-call setup and
# circular-reference bookkeeping (snapshots are trees).
std_dumps = json.JSONEncoder(check_circular=False).encode
# The same for the event log's detail, whose datetimes become ISO 8601 text.
std_dumps_detail = json.JSONEncoder(check_circular=False, default=_iso).encode

dumps: Callable[[Any], str]
dumps_detail: Callable[[Any], str]
try:
    import orjson
except ImportError:  # optional: the standard library writes the same values, slower
    dumps, dumps_detail = std_dumps, std_dumps_detail
else:
    # orjson encodes a snapshot about ten times faster (0.5 against 5 us for a participant's
    # two dialogs), the largest cost of the writer after the database itself. Its text is
    # compact UTF-8 rather than json.dumps's spaced ASCII; the values read back are the
    # same, datetimes included (ISO 8601 exactly as isoformat() writes them). Non-string
    # keys become strings, as json.dumps makes them.
    _OPTIONS = orjson.OPT_NON_STR_KEYS

    def _orjson_dumps(value: Any) -> str:
        return orjson.dumps(value, option=_OPTIONS).decode()

    dumps = dumps_detail = _orjson_dumps


def _bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


class BatchWriter:
    """Pre-built statements for one engine; each method runs inside the caller's transaction.

    Rows hold Python values (aware datetimes, dicts) in the `*_COLUMNS` order; they are
    encoded here.
    """

    def __init__(self, engine: Engine) -> None:
        dialect = engine.dialect
        self.backend = dialect.name
        self.time: Callable[[datetime | None], Any]
        if self.backend == "sqlite":
            param, json_param = "?", "?"
            self.time = sqlite_time
        elif self.backend == "postgresql":
            # A text parameter cast to json: the column's value is that text.
            param, json_param = "%s", "CAST(%s AS JSON)"
            self.time = naive_utc
        else:
            raise NotImplementedError(
                f"batch writes serve SQLite and PostgreSQL, not {dialect.name}"
            )
        self._param = param
        self._json_param = json_param

        conferences = _table(Conference).name
        self._insert_conference = self._insert(conferences, CONFERENCE_COLUMNS)
        self._end_conference = (
            f"UPDATE {conferences} SET state = {param}, ended_at = {param} "
            f"WHERE id = {param} AND state <> {param}"
        )
        self._lock_conference = f"UPDATE {conferences} SET locked = {param} WHERE id = {param}"
        self._participants = _table(Participant).name
        self._upsert_participants: dict[tuple[str, ...], str] = {}
        subscriptions = _table(Subscription).name
        self._upsert_subscriptions = self._insert(subscriptions, SUBSCRIPTION_COLUMNS) + (
            " ON CONFLICT (id) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in SUBSCRIPTION_UPDATED)
        )
        self._insert_events = self._insert(_table(EventLogEntry).name, EVENT_COLUMNS)

    def _insert(self, table: str, columns: Sequence[str]) -> str:
        values = ", ".join(self._json_param if c in _JSON_COLUMNS else self._param for c in columns)
        return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values})"

    def _participant_upsert(self, updated: tuple[str, ...]) -> str:
        sql = self._upsert_participants.get(updated)
        if sql is None:
            table = self._participants
            # The WHERE leaves a row of another conference untouched; the row count shows it.
            sql = self._upsert_participants[updated] = (
                self._insert(table, PARTICIPANT_COLUMNS)
                + " ON CONFLICT (id) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in updated)
                + f" WHERE {table}.conference_id = excluded.conference_id"
            )
        return sql

    # -- writes --------------------------------------------------------------------------------

    def insert_conferences(self, conn: Connection, rows: Sequence[Sequence[Any]]) -> None:
        """New conferences (CONFERENCE_COLUMNS order)."""
        if rows:
            t = self.time
            params = [(*r[:6], _bool(r[6]), r[7], r[8], t(r[9]), t(r[10])) for r in rows]
            conn.exec_driver_sql(self._insert_conference, params)

    def end_conferences(self, conn: Connection, ends: Sequence[tuple[str, datetime]]) -> None:
        """(id, ended_at) each; a conference already ended keeps its first end time."""
        if ends:
            ended = ConferenceState.ENDED.value
            params = [(ended, self.time(at), cid, ended) for cid, at in ends]
            conn.exec_driver_sql(self._end_conference, params)

    def lock_conferences(self, conn: Connection, locks: Sequence[tuple[str, bool]]) -> None:
        """(id, locked) each, applied in order."""
        if locks:
            conn.exec_driver_sql(self._lock_conference, [(bool(v), cid) for cid, v in locks])

    def upsert_participants(
        self, conn: Connection, updated: tuple[str, ...], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Insert each row (PARTICIPANT_COLUMNS order), or when its id exists set the
        `updated` columns from it.

        Raises RowConflictError when an existing row belongs to another conference.
        """
        if not rows:
            return
        t = self.time
        params = [
            (*r[:4], t(r[4]), dumps(r[5]), *r[6:14], _bool(r[14]), t(r[15]), t(r[16])) for r in rows
        ]
        result = conn.exec_driver_sql(self._participant_upsert(updated), params)
        # executemany's row count is the sum over its rows (sqlite3; psycopg 3.1+: the tests
        # check both), and a row the WHERE left alone counts nothing. (One multi-row VALUES
        # statement instead cost PostgreSQL more CPU: psycopg parses every new text anew.)
        if result.rowcount != len(rows):
            raise RowConflictError("a participant id is in use in another conference")

    def upsert_subscriptions(self, conn: Connection, rows: Sequence[Sequence[Any]]) -> None:
        """Insert each row (SUBSCRIPTION_COLUMNS order), or when its id exists set its
        state, version and dialog."""
        if rows:
            t = self.time
            params = [(*r[:6], t(r[6]), r[7], r[8], dumps(r[9]), t(r[10])) for r in rows]
            conn.exec_driver_sql(self._upsert_subscriptions, params)

    def insert_events(
        self,
        conn: Connection,
        rows: Iterable[tuple[datetime, str | None, str | None, str, str | None, Any]],
    ) -> None:
        """Append to the event log: (at, conference_id, participant_id, kind, actor, detail);
        datetimes in `detail` are written as ISO 8601 text."""
        t = self.time
        params = [(t(at), c, p, k, a, dumps_detail(d)) for at, c, p, k, a, d in rows]
        if params:
            conn.exec_driver_sql(self._insert_events, params)
