"""Repository functions on SQLite and PostgreSQL; the migrated schema equals the models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from app.db import SessionFactory, make_engine, migrate, repo, run_db, session_scope
from app.db.migrate import current_revision
from app.db.models import Base, EndpointStatus


def test_migrated_schema_matches_models(database_url: str) -> None:
    migrate(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            assert compare_metadata(ctx, Base.metadata) == []
    finally:
        engine.dispose()
    assert current_revision(database_url) is not None


def test_migrate_is_idempotent(database_url: str) -> None:
    migrate(database_url)
    migrate(database_url)
    engine = make_engine(database_url)
    try:
        names = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"conferences", "participants", "subscriptions", "subscribers"} <= names
    assert {"filter_criteria", "api_tokens", "event_log"} <= names


def test_kamailio_tables_have_the_agreed_columns(factory: SessionFactory) -> None:
    with session_scope(factory) as s:
        # Inserted with plain SQL, as Kamailio's tools would: defaults come from the server.
        s.execute(
            text(
                "INSERT INTO subscribers (impu, impi, realm, ha1) "
                "VALUES ('sip:a@home1.net', 'a', 'home1.net', 'x')"
            )
        )
        s.execute(
            text(
                "INSERT INTO filter_criteria (priority, request_uri_regex, as_uri) "
                "VALUES (1, '^sip:conf-', 'sip:127.0.0.1:5070')"
            )
        )
    with session_scope(factory) as s:
        row = s.execute(text("SELECT barred, created_at, scscf FROM subscribers")).one()
        assert row.barred == 0 and row.created_at is not None and row.scscf is None
        fc = s.execute(text("SELECT default_handling, method FROM filter_criteria")).one()
        assert fc.default_handling == "continue" and fc.method is None


def test_subscriber_ha1_and_derivation(factory: SessionFactory) -> None:
    with session_scope(factory) as s:
        sub = repo.add_subscriber(s, "sip:user1_public1@home1.net", "demo")
        sub_id = sub.id
    with session_scope(factory) as s:
        got = repo.get_subscriber(s, "sip:user1_public1@home1.net")
        assert got is not None and got.id == sub_id
        assert (got.impi, got.realm) == ("user1_public1", "home1.net")
        # RFC 2617: MD5("user1_public1:home1.net:demo")
        assert got.ha1 == repo.ha1("user1_public1", "home1.net", "demo")
        assert len(got.ha1) == 32 and got.barred is False
        with pytest.raises(repo.DuplicateError):
            repo.add_subscriber(s, "sip:user1_public1@home1.net", "x")
    with session_scope(factory) as s:
        repo.update_subscriber(s, sub_id, password="new", barred=True)
    with session_scope(factory) as s:
        raw = s.execute(text("SELECT barred, ha1 FROM subscribers")).one()
        assert raw.barred == 1 and raw.ha1 == repo.ha1("user1_public1", "home1.net", "new")
        assert repo.remove_subscriber(s, sub_id)
        assert not repo.remove_subscriber(s, sub_id)


def test_split_impu_rejects_missing_user() -> None:
    assert repo.split_impu("sip:bob@example.com;transport=tcp") == ("bob", "example.com")
    with pytest.raises(repo.RepositoryError):
        repo.split_impu("sip:example.com")


def _conference(factory: SessionFactory, at: datetime, n: int) -> str:
    with session_scope(factory) as s:
        conf = repo.create_conference(
            s,
            uri=f"sip:conf-{n}@mrfc1.home1.net",
            factory_uri="sip:conf-factory1@mrfc1.home1.net",
            initiator="sip:user1_public1@home1.net",
            at=at,
        )
        return conf.id


def test_conference_pagination_is_complete_and_ordered(factory: SessionFactory) -> None:
    base = datetime(2030, 1, 1, tzinfo=UTC)
    # Equal timestamps too: the id breaks ties so no row is skipped or repeated.
    ids = [_conference(factory, base + timedelta(seconds=i // 2), i) for i in range(7)]
    seen: list[str] = []
    cursor = None
    with session_scope(factory) as s:
        while True:
            page = repo.list_conferences(s, limit=3, cursor=cursor)
            seen += [c.id for c in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    assert sorted(seen) == sorted(ids) and len(seen) == 7
    with session_scope(factory) as s:
        allrows = repo.list_conferences(s, limit=100).items
    times = [c.created_at for c in allrows]
    assert times == sorted(times, reverse=True)
    assert all(t.tzinfo is not None for t in times)


def test_invalid_cursor(factory: SessionFactory) -> None:
    with session_scope(factory) as s, pytest.raises(repo.InvalidCursorError):
        repo.list_conferences(s, cursor="not-a-cursor")


def test_state_filter_and_end(factory: SessionFactory) -> None:
    a = _conference(factory, datetime.now(UTC), 1)
    b = _conference(factory, datetime.now(UTC), 2)
    with session_scope(factory) as s:
        ended = repo.end_conference(s, a)
        assert ended is not None and ended.state == "ended" and ended.ended_at is not None
        assert repo.end_conference(s, "nope") is None
    with session_scope(factory) as s:
        assert [c.id for c in repo.list_conferences(s, state="active").items] == [b]
        assert [c.id for c in repo.list_conferences(s, state="ended").items] == [a]


def test_participants_write_through_and_restart_load(factory: SessionFactory) -> None:
    conf_id = _conference(factory, datetime.now(UTC), 1)
    dialog = {
        "route_set": ["<sip:scscf.home1.net:6060;lr>"],
        "remote_target": "sip:user1@127.0.0.1:5061",
        "local_cseq": 3,
        "remote_cseq": 102,
        "transport": {"proto": "udp", "peer": ["127.0.0.1", 6060]},
    }
    with session_scope(factory) as s:
        p1 = repo.add_participant(
            s,
            conf_id,
            uri="sip:user1_public1@home1.net",
            call_id="c1",
            local_tag="lt",
            remote_tag="rt",
            status=EndpointStatus.DIALING_IN,
            joining_method="dialed-in",
            dialog_state=dialog,
        )
        p2 = repo.add_participant(s, conf_id, uri="sip:user2_public1@home2.net", call_id="c2")
        repo.add_subscription(
            s, conf_id, subscriber_uri="sip:user1_public1@home1.net", call_id="s1", version=1
        )
        repo.append_event(s, "participant.joined", conference_id=conf_id, participant_id=p1.id)
    now = datetime.now(UTC)
    with session_scope(factory) as s:
        repo.update_participant(
            s, p1.id, {"status": "connected", "joined_at": now, "mrfp_member_id": "7"}
        )
        repo.update_participant(
            s, p2.id, {"status": "disconnected", "left_at": now, "disconnection_method": "booted"}
        )
        assert repo.update_participant(s, "missing", {"muted": True}) is None
    with session_scope(factory) as s:
        (conf,) = repo.load_active_conferences(s)
        assert conf.id == conf_id
        assert [p.id for p in conf.participants] == [p1.id, p2.id]
        assert conf.participants[0].dialog_state == dialog
        assert conf.participants[0].joined_at is not None
        assert conf.subscriptions[0].version == 1
        assert repo.participant_counts(s, [conf_id]) == {conf_id: 1}
        found = repo.find_participant_by_dialog(s, "c1", "lt", "rt")
        assert found is not None and found.id == p1.id
        assert repo.get_participant(s, "other", p1.id) is None
        page = repo.list_participants(s, conf_id, status="connected")
        assert [p.id for p in page.items] == [p1.id]
        events = repo.list_events(s, conference_id=conf_id).items
        assert [e.kind for e in events] == ["participant.joined"]
    with session_scope(factory) as s:
        repo.end_conference(s, conf_id)
    with session_scope(factory) as s:
        assert repo.load_active_conferences(s) == []


def test_participant_needs_conference(factory: SessionFactory) -> None:
    with session_scope(factory) as s, pytest.raises(repo.RepositoryError):
        repo.add_participant(s, "nope", uri="sip:a@b")


def test_tokens_hashed_revocable_and_touched(factory: SessionFactory) -> None:
    with session_scope(factory) as s:
        row, plain = repo.create_token(s, "ops", "read")
        assert plain.startswith(repo.TOKEN_PREFIX) and plain not in row.token_hash
        assert row.token_hash == repo.hash_token(plain)
        with pytest.raises(repo.DuplicateError):
            repo.create_token(s, "ops", "admin")
        with pytest.raises(repo.RepositoryError):
            repo.create_token(s, "x", "root")
    with session_scope(factory) as s:
        got = repo.authenticate_token(s, plain)
        assert got is not None and got.last_used_at is not None
        assert repo.authenticate_token(s, plain + "x") is None
    with session_scope(factory) as s:
        assert repo.revoke_token(s, "ops") is not None
        assert repo.revoke_token(s, "nobody") is None
    with session_scope(factory) as s:
        assert repo.authenticate_token(s, plain) is None
        (listed,) = repo.list_tokens(s)
        assert listed.revoked_at is not None
        assert repo.list_tokens(s, include_revoked=False) == []


def test_filter_criteria(factory: SessionFactory) -> None:
    with session_scope(factory) as s:
        second = repo.add_filter_criterion(
            s, priority=2, request_uri_regex="^sip:conf-", as_uri="sip:127.0.0.1:5070"
        )
        repo.add_filter_criterion(
            s, priority=1, method="INVITE", request_uri_regex="^sip:conf-factory", as_uri="sip:x"
        )
    with session_scope(factory) as s:
        assert [f.priority for f in repo.list_filter_criteria(s)] == [1, 2]
        assert repo.remove_filter_criterion(s, second.id)
        assert [f.priority for f in repo.list_filter_criteria(s)] == [1]


async def test_run_db_from_asyncio(factory: SessionFactory) -> None:
    conf = await run_db(
        factory, repo.create_conference, uri="sip:conf-z@mrfc1.home1.net", factory_uri="sip:f@x"
    )
    await run_db(factory, repo.append_event, "conference.created", conference_id=conf.id)
    with pytest.raises(repo.RepositoryError):
        # The failing transaction is rolled back and the error reaches the caller.
        await run_db(factory, repo.add_participant, "missing", uri="sip:a@b")
    page = await run_db(factory, repo.list_events, conference_id=conf.id)
    assert [e.kind for e in page.items] == ["conference.created"]
