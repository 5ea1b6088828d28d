"""Restart without loss: the MRFC-AS stops and starts while a conference runs (issue: REST,
persistence). The participants' dialogs keep working and the subscriber keeps being told."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from app.focus.conference_info import ConferenceView
from tests.support.postgres import database_url, postgres_server  # noqa: F401
from tests.support.sipp import header_values, sipp_available, start_sipp
from tests.support.stack import restart_mrfc, start_stack

SCENARIOS = Path(__file__).parent / "scenarios" / "focus"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.skipif(not sipp_available(), reason="sipp (Debian sip-tester) is not installed"),
]


def _wait(predicate, timeout: float = 20.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_restart_keeps_the_conference(tmp_path: Path, database_url: str) -> None:  # noqa: F811
    stack = start_stack(tmp_path, database_url=database_url)
    engine = create_engine(stack.database_url)

    def rows(sql: str) -> list[tuple[object, ...]]:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql)).fetchall()]

    try:
        _wait(lambda: "ESL connected" in stack.processes[1].output(), what="ESL")
        remote = f"127.0.0.1:{stack.sip_port}"
        creator = start_sipp(
            SCENARIOS / "uac_creator_subscriber.xml", tmp_path / "ue1", remote=remote, timeout=60
        )
        conf = _wait(
            lambda: rows("select id from conferences where state = 'active'"), what="conference"
        )[0][0]
        _wait(lambda: rows("select id from subscriptions"), what="the subscription")
        joiner = start_sipp(
            SCENARIOS / "uac_join_hold_bye.xml",
            tmp_path / "ue2",
            remote=remote,
            keys={"conf_user": f"conf-{conf}", "ue_user": "user2_public1"},
            timeout=60,
        )
        _wait(
            lambda: rows(
                "select 1 from participants where joined_at is not null and uri like '%user2%'"
            ),
            what="user2 joined",
        )
        # The participants' member ids are known before the restart.
        _wait(
            lambda: len(rows("select 1 from participants where mrfp_member_id is not null")) == 2,
            what="member ids",
        )
        restart_mrfc(stack)
        second = joiner.wait()
        assert second.ok, second.report()
        bye_ok = [m for m in second.received() if m.startswith("SIP/2.0 200") and "BYE" in m]
        assert bye_ok, "the BYE after the restart got its 200"
        first = creator.wait()
        assert first.ok, first.report()
        notifies = first.received_requests("NOTIFY")
        assert len(notifies) == 4
        view = ConferenceView()
        bodies = [n.split("\n\n", 1)[1] if "\n\n" in n else "" for n in notifies]
        for body in bodies:
            view.receive(body.encode())
        assert view.info is not None
        assert set(view.info.users) == {"sip:user1_public1@home1.net"}
        assert "departed" in bodies[3]
        assert header_values(notifies[2], "Subscription-State")[0].startswith("active")
    finally:
        stack.stop()
        engine.dispose()
