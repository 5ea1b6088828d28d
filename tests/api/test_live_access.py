"""SIP access control and secrets in logs, on a running MRFC-AS (SQLite and PostgreSQL).

Only configured trusted peers (the S-CSCFs, the MRFP nodes) may send the focus SIP requests;
anything else gets 403 or, configured so, no answer at all, and is counted in /metrics. The
ESL password and API tokens never reach the process's log output.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.api.live import CONF_DOMAIN, LiveApi, start_ue, wait_for
from tests.support.sipp import sipp_available
from tests.support.stack import Stack, start_stack, wait_readyz

pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.skipif(not sipp_available(), reason="sipp (Debian sip-tester) is not installed"),
    pytest.mark.timeout(240),
]

# A network 127.0.0.1 is not in: every test request comes from outside the trusted peers.
ELSEWHERE = ["10.255.255.0/24"]


def untrusted_count(stack: Stack, action: str) -> float:
    text = httpx.get(f"{stack.api}/metrics", timeout=10).text
    match = re.search(
        rf'^mrfc_sip_untrusted_requests_total\{{action="{action}"\}} (\S+)$', text, re.M
    )
    return float(match.group(1)) if match else 0.0


def _start(tmp: Path, database_url: str, action: str) -> Stack:
    stack = start_stack(
        tmp,
        database_url=database_url,
        sip_options={"trusted_peers": ELSEWHERE, "untrusted_action": action},
        # The most talkative level: a secret must not show up even there.
        log_level="DEBUG",
    )
    try:
        wait_readyz(stack.api)
    except BaseException:
        stack.stop()
        raise
    return stack


def test_untrusted_invite_gets_403_and_is_counted(tmp_path: Path, database_url: str) -> None:
    stack = _start(tmp_path / "stack", database_url, "reject")
    try:
        assert untrusted_count(stack, "reject") == 0
        keys = {
            "conf_user": "conf-factory1",
            "conf_domain": CONF_DOMAIN,
            "ue_user": "user1_public1",
        }
        result = start_ue("uac_refused.xml", tmp_path / "ue", stack, keys, timeout=30).wait()
        assert result.ok, result.report() + stack.mrfc.output()[-3000:]
        assert result.received()[-1].startswith("SIP/2.0 403")
        wait_for("the reject counted", lambda: untrusted_count(stack, "reject") >= 1)
        # Nothing was created for it.
        token = stack.create_token("ops", "admin")
        api = LiveApi(stack, token)
        try:
            assert api.get("/conferences")["items"] == []
            _exercise_tokens(stack, token)
        finally:
            api.close()
    finally:
        stack.stop()
    _assert_no_secrets(stack, token)


def test_untrusted_invite_dropped_without_answer(tmp_path: Path, database_url: str) -> None:
    stack = _start(tmp_path / "stack", database_url, "drop")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            sock.sendto(_invite(port, stack.sip_port), ("127.0.0.1", stack.sip_port))
            wait_for("the drop counted", lambda: untrusted_count(stack, "drop") >= 1)
            # Not even 100 Trying (RFC 3261 §17.2.1 would send one after 200 ms): silence.
            sock.settimeout(3.0)
            with pytest.raises(TimeoutError):
                data = sock.recv(65536)
                pytest.fail(f"the focus answered an untrusted peer: {data[:200]!r}")
        assert untrusted_count(stack, "reject") == 0
    finally:
        stack.stop()


def _invite(local_port: int, sip_port: int) -> bytes:
    body = (
        "v=0\r\no=u 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    return (
        f"INVITE sip:conf-factory1@{CONF_DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK-drop-{time.monotonic_ns()}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:user1_public1@home1.net>;tag=drop1\r\n"
        f"To: <sip:conf-factory1@{CONF_DOMAIN}>\r\n"
        f"Call-ID: drop-{time.monotonic_ns()}@127.0.0.1\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:user1_public1@127.0.0.1:{local_port}>\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def _exercise_tokens(stack: Stack, token: str) -> None:
    """Calls that could log a token: header and query-string auth, a wrong token, SSE."""
    base = f"{stack.api}/api/v1"
    wrong = token[:-4] + "abcd"
    assert (
        httpx.get(f"{base}/conferences", headers={"Authorization": f"Bearer {wrong}"}).status_code
        == 401
    )
    assert httpx.get(f"{base}/conferences", params={"token": token}).status_code == 401
    with httpx.stream(
        "GET", f"{base}/events", params={"token": token}, timeout=httpx.Timeout(10, read=10)
    ) as resp:
        assert resp.status_code == 200
        next(resp.iter_lines())
    resp = httpx.delete(f"{base}/conferences/nosuch", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 404


def _assert_no_secrets(stack: Stack, token: str) -> None:
    log = stack.mrfc.output()
    assert "ready " in log and "DEBUG" in log, log[-2000:]
    assert "ClueCon" not in log
    assert token not in log
    assert token[:-4] not in log  # nor the wrong token, nor a prefix long enough to matter
