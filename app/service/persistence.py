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
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, update
from sqlalchemy.orm import Session

from app.db import repo
from app.db.models import EndpointStatus, EventLogEntry, Participant, Subscription
from app.db.session import SessionFactory, session_scope
from app.focus.actions import Changed

log = logging.getLogger(__name__)

_NOT_LOGGED = frozenset({"participant.talking", "participant.media"})

_PARTICIPANT_FIELDS = (
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

_PARTICIPANTS = cast(Table, Participant.__table__)
_EVENT_LOG = cast(Table, EventLogEntry.__table__)

# Participant rows the writer remembers before it starts over (it then asks the database).
KNOWN_ROWS_LIMIT = 100_000

# A change and the wall-clock time it happened at (the event log's `at`).
Stamped = tuple[Changed, datetime]


class DatabaseWriter:
    """Writes changes to the database; `write_batch` is one transaction for many changes."""

    def __init__(self, session_factory: SessionFactory, owner_node: str | None = None) -> None:
        self.session_factory = session_factory
        self.owner_node = owner_node
        # Participant rows known to exist (id -> conference id), learnt from committed
        # batches: a participant's later changes are UPDATEs without asking the database.
        self._rows: dict[str, str] = {}

    def __call__(self, change: Changed) -> None:
        """One change in its own transaction."""
        self.write_batch([(change, datetime.now(UTC))])

    def write_batch(self, batch: Sequence[Stamped]) -> None:
        """All of `batch` in one transaction, in order; raises (and writes nothing) if the
        database refuses any of it."""
        with session_scope(self.session_factory) as session:
            participants: dict[str, dict[str, Any]] = {}
            events: list[dict[str, Any]] = []
            for change, at in batch:
                kind = change.kind
                if kind.startswith("conference."):
                    self._conference(session, change, at)
                elif kind.startswith("participant.") and change.participant_id is not None:
                    _merge_participant(participants, change, at)
                elif kind.startswith("subscription.") and change.data.get("id"):
                    self._subscription(session, change, at)
                if kind not in _NOT_LOGGED:
                    events.append(
                        {
                            "at": at,
                            "conference_id": change.conference_id,
                            "participant_id": change.participant_id,
                            "kind": kind,
                            "actor": change.actor,
                            "detail": _detail(change.data),
                        }
                    )
            written: dict[str, str] = {}
            if participants:
                written = self._write_participants(session, participants)
            if events:
                session.execute(insert(_EVENT_LOG), events)
        # Committed: remember the rows (only now, a rolled-back insert made none).
        if len(self._rows) > KNOWN_ROWS_LIMIT:
            self._rows.clear()
        self._rows.update(written)
        for pid, row in participants.items():
            if row.get("left_at") is not None:
                self._rows.pop(pid, None)  # gone: few changes left to come, forget it

    def _write_participants(
        self, session: Session, rows: dict[str, dict[str, Any]]
    ) -> dict[str, str]:
        """One INSERT (executemany) for the new rows, one UPDATE by primary key for the
        others. Returns the rows written (id -> conference id)."""
        unknown = [pid for pid in rows if pid not in self._rows]
        known = {pid: self._rows[pid] for pid in rows if pid in self._rows}
        known.update(repo.existing_participants(session, unknown))
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for pid, row in rows.items():
            new = row.pop("_new")
            if pid in known:
                if known[pid] != row["conference_id"]:
                    raise ValueError(f"participant {pid} is in another conference")
                updates.append({f"b_{k}": v for k, v in row.items()})
            else:
                inserts.append({**new, **row})
        # Core statements, executemany: the ORM's bulk paths cost more per row than the row.
        # Rows of one statement must share their keys; group them by key set.
        table = _PARTICIPANTS
        for group in _by_keys(inserts):
            session.execute(insert(table), group)
        for group in _by_keys(updates):
            columns = [k[2:] for k in group[0] if k != "b_id"]
            stmt = (
                update(table)
                .where(table.c.id == bindparam("b_id"))
                .values({c: bindparam(f"b_{c}") for c in columns})
            )
            session.execute(stmt, group)
        return {pid: row["conference_id"] for pid, row in rows.items()}

    def _conference(self, session: Session, change: Changed, at: datetime) -> None:
        data = change.data
        if change.kind == "conference.created":
            repo.create_conference(
                session,
                conference_id=change.conference_id,
                uri=data["uri"],
                factory_uri=data.get("factory_uri") or "",
                initiator=data.get("initiator"),
                mrfp_node=data.get("mrfp_node"),
                owner_node=self.owner_node,
                at=data.get("created_at") or at,
            )
        elif change.kind == "conference.ended":
            repo.end_conference(session, change.conference_id, at=data.get("ended_at") or at)
        elif change.kind == "conference.locked":
            repo.update_conference(session, change.conference_id, {"locked": bool(data["locked"])})

    def _subscription(self, session: Session, change: Changed, at: datetime) -> None:
        data = change.data
        sid = data["id"]
        dialog = data.get("dialog") or {}
        state = "terminated" if data.get("terminated") else "active"
        existing = session.get(Subscription, sid)
        if existing is None:
            repo.add_subscription(
                session,
                change.conference_id,
                subscription_id=sid,
                subscriber_uri=data.get("subscriber") or "",
                call_id=dialog.get("call_id"),
                local_tag=dialog.get("local_tag"),
                remote_tag=dialog.get("remote_tag"),
                state=state,
                version=int(data.get("version") or 0),
                dialog_state=dialog,
                at=at,
            )
        else:
            repo.update_subscription(
                session,
                sid,
                {"state": state, "version": int(data.get("version") or 0), "dialog_state": dialog},
            )


def _merge_participant(rows: dict[str, dict[str, Any]], change: Changed, at: datetime) -> None:
    """Fold one participant change into the row the batch will write for it.

    The values are what the original per-change writes left behind: a new row starts as
    `repo.add_participant` makes it, and every change then sets the fields its snapshot has.
    """
    data = change.data
    pid = change.participant_id
    assert pid is not None
    row = rows.get(pid)
    if row is None:
        row = rows[pid] = {
            "id": pid,
            "conference_id": change.conference_id,
            # Used only when the row is new (the first change of it decides, as before).
            "_new": {
                "uri": data.get("uri") or "",
                "display_name": data.get("display_name"),
                "joining_method": data.get("joining_method"),
                "status": EndpointStatus.PENDING.value,
                "muted": False,
                "created_at": at,
            },
        }
    elif row["conference_id"] != change.conference_id:
        # The same id in another conference: not a row this writer can merge.
        raise ValueError(f"participant {pid} changes conference")
    for key in _PARTICIPANT_FIELDS:
        if key in data:
            row[key] = data[key]
    if data.get("member_id") is not None:
        row["mrfp_member_id"] = str(data["member_id"])
    row["dialog_state"] = {"ue": data.get("dialog"), "mrfp": data.get("mrfp_dialog")}


def _by_keys(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(frozenset(row), []).append(row)
    return list(groups.values())


def _detail(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("dialog", "mrfp_dialog"):
            continue
        out[key] = value.isoformat() if isinstance(value, datetime) else value
    return out


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
