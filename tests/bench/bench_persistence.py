"""CPU of the database writer per conference join+leave, in-process.

The sans-IO focus is driven through joins and leaves of one held conference the way the join
benchmark's SIPp load does it (`bench_joins.py`: a joiner every 1/RATE s, each leaving with a
BYE 200 ms after its ACK; the MRFP reports each member as it is added). Every `Changed` the
focus emits is stamped with the simulated wall-clock time it happened at, and the records are
cut into batches as `WriteBehind` cuts them (a batch gathers for 50 ms after its first change).
Then `DatabaseWriter.write_batch` writes those batches, in this thread, into a migrated
database, and the thread's own CPU time (user and system, `RUSAGE_THREAD`) is divided by the
number of join+leaves. SQLite is a WAL file in a temporary directory, as the service runs it;
PostgreSQL, when its binaries are installed, is a throwaway local cluster.

    .venv/bin/python tests/bench/bench_persistence.py [--joins 2000] [--rate 200] [--repeat 3]
        [--no-postgres]
"""

from __future__ import annotations

import argparse
import heapq
import random
import resource
import statistics
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.db import batch, make_engine, make_session_factory, migrate
from app.focus.actions import Action, Changed, Respond, SendRequest
from app.focus.core import Focus, FocusConfig
from app.focus.media import MemberAdded
from app.service.persistence import DatabaseWriter, Stamped
from tests.bench.bench_joins import SDP, mrfp_answers, ue_request
from tests.support.focus_ids import CountingIds

FACTORY = "sip:conf-factory1@mrfc1.home1.net"
START = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
HOLD = 0.2  # seconds between a joiner's ACK and its BYE (uac_bench_join.xml's pause)
INTERVAL = 0.05  # WriteBehind's default gathering time
MAX_BATCH = 500  # WriteBehind's default batch limit


class RandomishIds(CountingIds):
    """Participant ids and the focus's Call-IDs random like the service's (`RandomIds`), so
    that the database's indexes on them are written at scattered places as in service;
    seeded, so that every run writes the same rows."""

    def __init__(self) -> None:
        super().__init__()
        self._random = random.Random(4575)

    def participant_id(self) -> str:
        return f"{self._random.getrandbits(64):016x}"

    def call_id(self) -> str:
        return f"{self._random.getrandbits(96):024x}@mrfc1.home1.net"


def _changes(actions: list[Action]) -> list[Changed]:
    return [a for a in actions if isinstance(a, Changed)]


def record_changes(joins: int, rate: float) -> list[Stamped]:
    """The changes the focus emits for one held conference and `joins` join+leaves arriving
    at `rate`/s, each stamped with the (simulated) time it happened."""
    config = FocusConfig(
        factory_uris=[FACTORY],
        conference_domain="mrfc1.home1.net",
        local_contact="sip:mrfc@127.0.0.1:5070",
        mrfp_uri={"mrfp1": "sip:127.0.0.1:5080"},
        participant_limit=joins + 10,
    )
    focus = Focus(config, RandomishIds())
    out: list[Stamped] = []
    member = iter(range(1, 10**9))

    def join(uri: str, user: str, call_id: str, t: float) -> str:
        wall = START + timedelta(seconds=t)
        first = focus.on_request(
            ue_request("INVITE", uri, user, call_id, 1, body=SDP), object(), t, wall
        )
        answered = mrfp_answers(focus, first)
        # The MRFP reports the new member once its leg is up, before the UE's ACK.
        (leg,) = [a for a in first if isinstance(a, SendRequest) and a.request.method == "INVITE"]
        conf_id = next(iter(focus.conferences)) if focus.conferences else ""
        added = MemberAdded("mrfp1", conf_id, str(next(member)), leg.request.call_id)
        media = focus.on_media_event(added, t, wall)
        tag = next(a.response.to.tag for a in answered if isinstance(a, Respond))
        assert tag is not None
        ack = focus.on_request(ue_request("ACK", uri, user, call_id, 1, to_tag=tag), None, t, wall)
        for action in _changes(first + answered + media + ack):
            out.append((action, wall))
        return tag

    join(FACTORY, "holder", "holder", 0.0)
    (conf,) = focus.conferences.values()
    # Arrivals and departures in time order: (time, sequence, what, joiner).
    events: list[tuple[float, int, str, int]] = [
        (0.01 + i / rate, i, "join", i) for i in range(joins)
    ]
    heapq.heapify(events)
    tags: dict[int, str] = {}
    while events:
        t, _, what, i = heapq.heappop(events)
        if what == "join":
            tags[i] = join(conf.uri, f"joiner{i}", f"j{i}", t)
            heapq.heappush(events, (t + HOLD, joins + i, "leave", i))
        else:
            bye = ue_request("BYE", conf.uri, f"joiner{i}", f"j{i}", 2, to_tag=tags.pop(i))
            wall = START + timedelta(seconds=t)
            for action in _changes(focus.on_request(bye, object(), t, wall)):
                out.append((action, wall))
    return out


def batches_of(records: list[Stamped]) -> list[list[Stamped]]:
    """Cut as WriteBehind does: a batch holds what came within INTERVAL of its first change."""
    batches: list[list[Stamped]] = []
    current: list[Stamped] = []
    for record in records:
        if current and (
            record[1] - current[0][1] >= timedelta(seconds=INTERVAL) or len(current) >= MAX_BATCH
        ):
            batches.append(current)
            current = []
        current.append(record)
    if current:
        batches.append(current)
    return batches


def measure(url: str, batches: list[list[Stamped]]) -> tuple[float, float]:
    """Seconds of (user, system) CPU of this thread to write `batches` into a fresh `url`."""
    migrate(url)
    engine = make_engine(url)
    try:
        writer = DatabaseWriter(make_session_factory(engine))
        writer.write_batch(batches[0])  # the held conference; warms connections and caches
        before = resource.getrusage(resource.RUSAGE_THREAD)
        for batch in batches[1:]:
            writer.write_batch(batch)
        after = resource.getrusage(resource.RUSAGE_THREAD)
    finally:
        engine.dispose()
    return after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def report(name: str, fresh_url: Callable[[], str], joins: int, rate: float, repeat: int) -> None:
    records = record_changes(joins, rate)
    batches = batches_of(records)
    runs = [measure(fresh_url(), batches) for _ in range(repeat)]
    per = [(u + s) * 1000.0 / joins for u, s in runs]
    best = min(range(repeat), key=lambda i: per[i])
    user, sys_ = (x * 1000.0 / joins for x in runs[best])
    print(
        f"database writer, {name}: {statistics.median(per):.3f} ms CPU per join+leave "
        f"(median of {repeat}; best {per[best]:.3f} = user {user:.3f} + sys {sys_:.3f}), "
        f"{joins} joins at {rate:.0f}/s, {len(records)} changes in {len(batches)} batches, "
        f"JSON by {'stdlib json' if batch.dumps is batch.std_dumps else 'orjson'}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--joins", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0, help="joins per second")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-persistence-"))
    counter = iter(range(10**6))
    report(
        "SQLite",
        lambda: f"sqlite:///{tmp / f'db{next(counter)}.sqlite3'}",
        args.joins,
        args.rate,
        args.repeat,
    )
    if args.no_postgres:
        return
    from tests.support.postgres import PostgresServer, available

    if not available():
        print("PostgreSQL binaries not installed: skipping PostgreSQL")
        return
    server = PostgresServer()
    try:
        server.start()
        report("PostgreSQL", server.create_database, args.joins, args.rate, args.repeat)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
