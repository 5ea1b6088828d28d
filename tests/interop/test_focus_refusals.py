"""What the focus refuses, shown with SIPp UEs against the MRFC-AS and the built-in MRFP:
unknown conference (404), locked (403), full (486), REFER from a non-participant (403),
SUBSCRIBE to an unknown event package (489), BYE for a dialog it does not have (481)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.sipp import (
    SippProcess,
    SippResult,
    header_values,
    run_sipp,
    sipp_available,
    start_sipp,
)
from tests.support.stack import Stack, start_stack, wait_for

SCENARIOS = Path(__file__).parent / "scenarios" / "focus"
DOMAIN = "mrfc1.home1.net"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.skipif(not sipp_available(), reason="sipp (Debian sip-tester) is not installed"),
]


def refused(
    stack: Stack,
    log_dir: Path,
    method: str,
    to_user: str,
    *,
    header: str = "Subject: refusal test",
    to_params: str = ";x=1",
    ue_user: str = "user2_public1",
) -> tuple[int, str]:
    """Send one request; the final status and the whole response."""
    log_dir.mkdir(parents=True)
    scenario = log_dir / "scenario.xml"
    template = (SCENARIOS / "uac_refused.xml").read_text()
    if method == "INVITE":
        template = template.replace("<!--@ACK", "").replace("@ACK-->", "")
    scenario.write_text(template.replace("@METHOD@", method))
    result = run_sipp(
        scenario,
        log_dir,
        remote=f"127.0.0.1:{stack.sip_port}",
        keys={
            "to_user": to_user,
            "to_domain": DOMAIN,
            "ue_user": ue_user,
            "header": header,
            "to_params": to_params,
        },
        timeout=60,
    )
    assert result.ok, result.report() + stack.logs()
    finals = [
        m for m in result.received() if m.startswith("SIP/2.0 ") and not m.startswith("SIP/2.0 1")
    ]
    assert finals, result.report()
    return int(finals[0].split()[1]), finals[0]


class Conference:
    """A conference held open by a SIPp UE that stays until the focus sends it BYE."""

    def __init__(self, stack: Stack, log_dir: Path) -> None:
        self.stack = stack
        self.ue: SippProcess = start_sipp(
            SCENARIOS / "uac_join_wait_bye.xml",
            log_dir,
            remote=f"127.0.0.1:{stack.sip_port}",
            keys={"to_user": "conf-factory1", "to_domain": DOMAIN, "ue_user": "user1_public1"},
            timeout=120,
        )
        wait_for(lambda: "participant.joined" in stack.event_kinds(), what="the creator joined")
        ((self.id, uri),) = stack.query("select id, uri from conferences")
        self.user = uri.removeprefix("sip:").split("@")[0]
        self.token = stack.create_token("refusals")

    def api(self, method: str, path: str, json: object = None) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.stack.api}/api/v1/conferences/{self.id}{path}",
            json=json,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )

    def end(self) -> SippResult:
        """DELETE through the REST API: the focus BYEs the creator, whose scenario ends."""
        resp = self.api("DELETE", "")
        assert resp.status_code in (200, 202, 204), resp.text
        return self.ue.wait()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    started = start_stack(tmp_path / "stack")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def small_stack(tmp_path: Path) -> Iterator[Stack]:
    started = start_stack(tmp_path / "stack", max_participants=1)
    try:
        yield started
    finally:
        started.stop()


def test_refusals(stack: Stack, tmp_path: Path) -> None:
    status, _ = refused(stack, tmp_path / "unknown", "INVITE", "conf-nosuchconference")
    assert status == 404
    conf = Conference(stack, tmp_path / "creator")
    try:
        # RFC 4579 §5.8 / TS 24.147: only participants may REFER the focus.
        status, _ = refused(
            stack,
            tmp_path / "refer",
            "REFER",
            conf.user,
            header="Refer-To: <sip:user3_public1@home1.net>",
            ue_user="stranger",
        )
        assert status == 403
        # RFC 6665 §4.2.1: an unknown package gets 489 with the ones the focus knows.
        status, resp = refused(
            stack, tmp_path / "presence", "SUBSCRIBE", conf.user, header="Event: presence"
        )
        assert status == 489
        assert header_values(resp, "Allow-Events") == ["conference"]
        # RFC 3261 §12.2.2: a request in a dialog that does not exist.
        status, _ = refused(
            stack, tmp_path / "bye", "BYE", conf.user, to_params=";tag=nosuchdialog"
        )
        assert status == 481
        # Locked through the REST API: new joins get 403.
        assert conf.api("PATCH", "", {"locked": True}).status_code == 200
        status, _ = refused(stack, tmp_path / "locked", "INVITE", conf.user)
        assert status == 403
        assert conf.api("PATCH", "", {"locked": False}).status_code == 200
        result = conf.end()
        assert result.ok, result.report() + stack.logs()
    finally:
        conf.ue.stop()
    # An ended conference's URI answers 404 from then on.
    status, _ = refused(stack, tmp_path / "ended", "INVITE", conf.user)
    assert status == 404


def test_a_full_conference_refuses_with_486(small_stack: Stack, tmp_path: Path) -> None:
    conf = Conference(small_stack, tmp_path / "creator")
    try:
        status, resp = refused(small_stack, tmp_path / "full", "INVITE", conf.user)
        assert status == 486
        assert resp.split("\n", 1)[0].strip() == "SIP/2.0 486 Conference full"
        result = conf.end()
        assert result.ok, result.report()
    finally:
        conf.ue.stop()
