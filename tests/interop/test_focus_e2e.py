"""SIPp UEs against the MRFC-AS, with the built-in media processor behind it (over SIP + ESL)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.support.sipp import header_values, run_sipp, sipp_available
from tests.support.stack import Stack, start_stack, wait_readyz

SCENARIOS = Path(__file__).parent / "scenarios" / "focus"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.skipif(not sipp_available(), reason="sipp (Debian sip-tester) is not installed"),
]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    started = start_stack(tmp_path)
    try:
        wait_readyz(started.api)
        yield started
    finally:
        started.stop()


def test_create_conference_with_100rel(stack: Stack, tmp_path: Path) -> None:
    result = run_sipp(
        SCENARIOS / "uac_create_100rel.xml",
        tmp_path / "ue1",
        remote=f"127.0.0.1:{stack.sip_port}",
        keys={
            "factory_user": "conf-factory1",
            "factory_domain": "mrfc1.home1.net",
            "ue_user": "user1_public1",
            "hold_ms": "1500",
        },
        timeout=30,
    )
    logs = "\n".join(p.output()[-3000:] for p in stack.processes)
    assert result.ok, result.report() + "\n" + logs
    received = result.received()
    r183 = next(m for m in received if m.startswith("SIP/2.0 183"))
    assert header_values(r183, "Require") == ["100rel"]
    assert header_values(r183, "RSeq") == ["1"]
    final = next(m for m in received if m.startswith("SIP/2.0 200") and "1 INVITE" in m)
    (contact,) = header_values(final, "Contact")
    assert contact.startswith("<sip:conf-") and contact.endswith(">;isfocus")
    # What the operator sees: the conference and the participant, joined then departed.
    engine = create_engine(f"sqlite:///{stack.database}")
    deadline = time.monotonic() + 10
    with engine.connect() as conn:
        while True:
            rows = conn.execute(text("select state from conferences")).fetchall()
            kinds = [
                r[0]
                for r in conn.execute(text("select kind from event_log order by id")).fetchall()
            ]
            if rows == [("ended",)] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        participants = conn.execute(
            text("select uri, status, disconnection_method, joined_at from participants")
        ).fetchall()
    assert rows == [("ended",)], kinds
    assert [(p[0], p[1], p[2]) for p in participants] == [
        ("sip:user1_public1@home1.net", "disconnected", "departed")
    ]
    assert participants[0][3] is not None
    assert kinds[:2] == ["conference.created", "participant.joined"]
    assert "conference.ended" in kinds
