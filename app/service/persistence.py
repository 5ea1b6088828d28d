"""Writes the focus's changes through to the database, in order, a batch per transaction.

Every change also goes to the append-only event log, the call record operators bill and
debug from; talking changes are too frequent and too fleeting for it and are only published.

The event loop never waits for the database: `WriteBehind.put` appends a change to a list and
one writer thread drains that list every `interval` seconds (sooner when `max_batch` are
pending), writing the whole batch in one transaction. A commit costs far more than a row (on
SQLite it is a WAL sync), and a transaction per change made the writer the largest CPU cost of
a join. Within a batch, the rows of one participant are written once with their final values
(each `Changed` carries a full snapshot, so the last one is the row's state); the event log
still gets one entry per change, stamped with the time the change happened. Nothing is
dropped: a batch the database refuses is written again a change per transaction, so one bad
record costs only itself, as it did when every change had its own transaction; `close()`
writes what is pending before it returns.

The writer itself stays off the ORM (see `app.db.batch`): each kind of row is one plain
executemany per batch on a connection the writer keeps, participants and subscriptions are
upserts (so the writer never asks which rows exist, and a restarted writer updates the rows an
earlier one wrote), and values are encoded once, as the models' types would store them. With
the ORM a join+leave cost this thread about 0.19 ms of CPU in `tests/bench/bench_persistence.py`
(0.35-0.39 ms in the service); now about 0.075 ms.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection

from app.db.batch import (
    PARTICIPANT_COLUMNS,
    PARTICIPANT_FIELDS_START,
    SUBSCRIPTION_COLUMNS,
    BatchWriter,
)
from app.db.models import EndpointStatus, SubscriptionState
from app.db.session import SessionFactory, engine_of
from app.focus.actions import Changed

log = logging.getLogger(__name__)

_NOT_LOGGED = frozenset({"participant.talking", "participant.media"})

# Snapshot keys that are participant columns of the same name, in column order (they are
# the columns from PARTICIPANT_FIELDS_START on).
_PARTICIPANT_FIELDS = PARTICIPANT_COLUMNS[PARTICIPANT_FIELDS_START:]
_FIELD_KEYS = frozenset(_PARTICIPANT_FIELDS)
_get_fields = itemgetter(*_PARTICIPANT_FIELDS)
_MEMBER_ID = PARTICIPANT_COLUMNS.index("mrfp_member_id")
_DIALOG_STATE = PARTICIPANT_COLUMNS.index("dialog_state")
_ALL_FIELDS = frozenset(range(PARTICIPANT_FIELDS_START, len(PARTICIPANT_COLUMNS)))
_MEMBER_ID_ONLY = frozenset({_MEMBER_ID})
_PENDING = EndpointStatus.PENDING.value

# A writer connection idle this long (seconds) goes back to the pool, and the next batch
# takes one that the pool checks first.
IDLE_RELEASE = 30.0

# A change and the wall-clock time it happened at (the event log's `at`).
Stamped = tuple[Changed, datetime]


class _ParticipantRow:
    """One participant's row as a batch leaves it: the values a new row is inserted with
    (PARTICIPANT_COLUMNS order), and the columns an existing row gets from them."""

    __slots__ = ("conference_id", "updated", "values")

    def __init__(self, values: list[Any], conference_id: str) -> None:
        self.values = values
        self.conference_id = conference_id
        self.updated: frozenset[int] = frozenset({_DIALOG_STATE})


class DatabaseWriter:
    """Writes changes to the database; `write_batch` is one transaction for many changes."""

    def __init__(self, session_factory: SessionFactory, owner_node: str | None = None) -> None:
        self.session_factory = session_factory
        self.owner_node = owner_node
        self.engine = engine_of(session_factory)
        self._sql = BatchWriter(self.engine)
        self._lock = threading.Lock()  # one batch at a time on the kept connection
        self._conn: Connection | None = None
        self._used = 0.0  # time.monotonic() of the last batch written

    def __call__(self, change: Changed) -> None:
        """One change in its own transaction."""
        self.write_batch([(change, datetime.now(UTC))])

    def write_batch(self, batch: Sequence[Stamped]) -> None:
        """All of `batch` in one transaction, in order; raises (and writes nothing) if the
        database refuses any of it.

        Rows end as the changes one by one would leave them, with fewer statements: a row
        changed several times in the batch is written once with its last values, and each
        kind of statement runs once for all its rows (executemany). Statement order keeps
        the foreign keys happy: conferences first, then their participants and
        subscriptions, then the log.
        """
        created: list[tuple[Any, ...]] = []
        locks: list[tuple[str, bool]] = []
        ends: list[tuple[str, datetime]] = []
        participants: dict[str, _ParticipantRow] = {}
        subscriptions: dict[str, list[Any]] = {}
        events: list[tuple[datetime, str | None, str | None, str, str | None, Any]] = []
        for change, at in batch:
            kind = change.kind
            data = change.data
            if kind.startswith("participant."):
                if change.participant_id is not None:
                    _merge_participant(participants, change, at)
            elif kind.startswith("conference."):
                if kind == "conference.created":
                    created.append(self._conference_row(change, at))
                elif kind == "conference.ended":
                    ends.append((change.conference_id, data.get("ended_at") or at))
                elif kind == "conference.locked":
                    locks.append((change.conference_id, bool(data["locked"])))
            elif kind.startswith("subscription.") and data.get("id"):
                _merge_subscription(subscriptions, change, at)
            if kind not in _NOT_LOGGED:
                # A copy less the SIP state (cheaper than a filtering comprehension).
                detail = data.copy()
                detail.pop("dialog", None)
                detail.pop("mrfp_dialog", None)
                events.append(
                    (at, change.conference_id, change.participant_id, kind, change.actor, detail)
                )
        sql = self._sql
        with self._lock:
            conn = self._connection()
            try:
                with conn.begin():
                    # Inserts before the updates of the same conferences; a lock and an end
                    # touch different columns, so their relative order does not matter.
                    sql.insert_conferences(conn, created)
                    sql.lock_conferences(conn, locks)
                    sql.end_conferences(conn, ends)
                    if participants:
                        for updated, rows in _by_updated(participants.values()):
                            sql.upsert_participants(conn, updated, rows)
                    sql.upsert_subscriptions(conn, list(subscriptions.values()))
                    sql.insert_events(conn, events)
            except BaseException:
                # The connection may be what failed (a lost server): the next batch takes a
                # fresh one from the pool, which pings it first.
                self._release()
                raise
            self._used = time.monotonic()

    def _connection(self) -> Connection:
        """The writer's connection, kept between batches: a pool checkout per batch (with
        its reset, and on PostgreSQL its ping round trip) cost more than a small batch."""
        conn = self._conn
        if conn is not None and (conn.invalidated or time.monotonic() - self._used > IDLE_RELEASE):
            # Idle for long: a server or firewall may have dropped it unnoticed.
            self._release()
            conn = None
        if conn is None:
            conn = self._conn = self.engine.connect()
        return conn

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:  # a broken connection may fail to close; it is gone
                log.debug("closing the writer's connection failed: %s", exc)

    def close(self) -> None:
        """Give the kept connection back to the pool."""
        with self._lock:
            self._release()

    def _conference_row(self, change: Changed, at: datetime) -> tuple[Any, ...]:
        """The row `repo.create_conference` makes (CONFERENCE_COLUMNS order)."""
        data = change.data
        return (
            change.conference_id,
            data["uri"],
            data.get("factory_uri") or "",
            data.get("initiator"),
            None,  # subject
            "active",
            False,  # locked
            data.get("mrfp_node"),
            self.owner_node,
            data.get("created_at") or at,
            None,  # ended_at
        )


def _merge_participant(rows: dict[str, _ParticipantRow], change: Changed, at: datetime) -> None:
    """Fold one participant change into the row the batch will write for it.

    The values are what the original per-change writes left behind: a new row starts as
    `repo.add_participant` makes it, and every change then sets the fields its snapshot has.
    """
    data = change.data
    pid = change.participant_id
    assert pid is not None
    row = rows.get(pid)
    if row is None:
        # Used as a whole only when the row is new (the first change of it decides).
        values: list[Any] = [
            pid,
            change.conference_id,
            data.get("uri") or "",
            None,  # mrfp_member_id
            at,  # created_at
            None,  # dialog_state
            data.get("display_name"),
            None,  # call_id
            None,  # local_tag
            None,  # remote_tag
            None,  # mrfp_call_id
            _PENDING,  # status
            data.get("joining_method"),
            None,  # disconnection_method
            False,  # muted
            None,  # joined_at
            None,  # left_at
        ]
        row = rows[pid] = _ParticipantRow(values, change.conference_id)
    elif row.conference_id != change.conference_id:
        # The same id in another conference: not a row this writer can merge.
        raise ValueError(f"participant {pid} changes conference")
    values = row.values
    if data.keys() >= _FIELD_KEYS:
        # The focus's snapshots have every field: one slice copies them all.
        values[PARTICIPANT_FIELDS_START:] = _get_fields(data)
        row.updated = _union(row.updated, _ALL_FIELDS)
    else:
        updated = set(row.updated)
        for index, key in enumerate(_PARTICIPANT_FIELDS, PARTICIPANT_FIELDS_START):
            if key in data:
                values[index] = data[key]
                updated.add(index)
        row.updated = frozenset(updated)
    member_id = data.get("member_id")
    if member_id is not None:
        values[_MEMBER_ID] = str(member_id)
        row.updated = _union(row.updated, _MEMBER_ID_ONLY)
    values[_DIALOG_STATE] = {"ue": data.get("dialog"), "mrfp": data.get("mrfp_dialog")}


@functools.cache
def _union(a: frozenset[int], b: frozenset[int]) -> frozenset[int]:
    # Few distinct column sets exist: each union is made once, not once per change.
    return a | b


def _by_updated(
    rows: Iterable[_ParticipantRow],
) -> list[tuple[tuple[str, ...], list[list[Any]]]]:
    """Rows grouped by the columns they update (one statement per group)."""
    groups: dict[frozenset[int], list[list[Any]]] = {}
    for row in rows:
        groups.setdefault(frozenset(row.updated), []).append(row.values)
    return [
        (tuple(PARTICIPANT_COLUMNS[i] for i in sorted(key)), values)
        for key, values in groups.items()
    ]


_SUBSCRIPTION_STATE = SUBSCRIPTION_COLUMNS.index("state")
_SUBSCRIPTION_VERSION = SUBSCRIPTION_COLUMNS.index("version")
_SUBSCRIPTION_DIALOG = SUBSCRIPTION_COLUMNS.index("dialog_state")


def _merge_subscription(rows: dict[str, list[Any]], change: Changed, at: datetime) -> None:
    """Fold one subscription change into its row: inserted as `repo.add_subscription` makes
    it from the first change, or an existing row's state, version and dialog from the last."""
    data = change.data
    sid = data["id"]
    dialog = data.get("dialog") or {}
    state = SubscriptionState.TERMINATED if data.get("terminated") else SubscriptionState.ACTIVE
    version = int(data.get("version") or 0)
    row = rows.get(sid)
    if row is None:
        rows[sid] = [
            sid,
            change.conference_id,
            data.get("subscriber") or "",
            dialog.get("call_id"),
            dialog.get("local_tag"),
            dialog.get("remote_tag"),
            None,  # expires_at
            version,
            state.value,
            dialog,
            at,  # created_at
        ]
    else:
        row[_SUBSCRIPTION_STATE] = state.value
        row[_SUBSCRIPTION_VERSION] = version
        row[_SUBSCRIPTION_DIALOG] = dialog


class WriteBehind:
    """Queues changes from the event loop; one thread writes them a batch at a time.

    `write` gets the pending changes in the order they were put. If it raises, each change
    is written again alone (`write([one])`), so a change the database refuses is logged and
    skipped without taking the rest of its batch with it.
    """

    def __init__(
        self,
        write: Callable[[list[Stamped]], None],
        *,
        interval: float = 0.05,
        max_batch: int = 500,
        name: str = "db-writer",
    ) -> None:
        self._write = write
        self.interval = interval
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._pending: list[Stamped] = []
        self._queued = 0  # changes put so far
        self._done = 0  # changes written (or given up on) so far
        self._hurry = False  # a flush or close wants the pending batch now
        self._closed = False
        self.failed = 0  # changes the database refused even alone
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, change: Changed, at: datetime | None = None) -> None:
        stamped = (change, at if at is not None else datetime.now(UTC))
        with self._cond:
            if self._closed:
                raise RuntimeError("the writer is closed")
            self._pending.append(stamped)
            self._queued += 1
            # Wake the writer only when it may be asleep with nothing to do, or when a batch
            # is full: a notify per change would cost a thread switch per change.
            if len(self._pending) == 1 or len(self._pending) >= self.max_batch:
                self._cond.notify()

    @property
    def pending(self) -> int:
        with self._cond:
            return self._queued - self._done

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything put so far is written; False if `timeout` ran out first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._queued
            self._hurry = True
            self._cond.notify_all()
            while self._done < target:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self, timeout: float | None = None) -> None:
        """Write what is pending, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._hurry = False
                    self._cond.wait()
                if not self._pending:
                    return  # closed and drained
                # Let a batch gather for `interval` after its first change.
                deadline = time.monotonic() + self.interval
                while len(self._pending) < self.max_batch and not (self._closed or self._hurry):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
            self._write_safely(batch)
            with self._cond:
                self._done += len(batch)
                self._cond.notify_all()

    def _write_safely(self, batch: list[Stamped]) -> None:
        try:
            self._write(batch)
            return
        except Exception as exc:
            if len(batch) == 1:
                self._give_up(batch[0], exc)
                return
            log.warning("writing %d changes failed (%s); writing them one by one", len(batch), exc)
        for stamped in batch:
            try:
                self._write([stamped])
            except Exception as exc:
                self._give_up(stamped, exc)

    def _give_up(self, stamped: Stamped, exc: Exception) -> None:
        self.failed += 1
        change = stamped[0]
        log.error(
            "persisting %s of %s failed: %s", change.kind, change.conference_id, exc, exc_info=exc
        )
