"""Every RFC 4475 / RFC 5118 message sent to a running SipTransport, over UDP (and TCP for the
framing cases), inside a network namespace of its own.

The vectors' Vias name documentation addresses and default ports, so the exchange runs in
`unshare -n` with only loopback up (over_the_wire_helper.py explains the addressing: no vector
is rewritten; answers go to received=127.0.0.1 and the sent-by port per RFC 3261 §18.2.2, and
the helper listens on each such port). The helper reports what came back; this test compares
it with the per-vector expectations of test_rfc4475.py and test_rfc5118.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.vectors import test_rfc4475, test_rfc5118

HERE = Path(__file__).resolve().parent
HELPER = HERE / "over_the_wire_helper.py"
SHARED = HERE.parents[1].parent / "shared" / "vectors"

# Where §18.2.2 sends each answer when it is not 127.0.0.1:5060 (the Via's sent-by port).
# mpart01's Via is 127.0.0.1:5070;rport: RFC 3581 sends its answer to the source port (5060),
# and the helper listens on 5070 too, so ignoring rport would show.
ANSWER_PORT = {"quotbal": 5050, "ipv4-mapped-ipv6": 19823, "mult-ip-in-header": 6050}

# Stream behaviour (RFC 4475 §3.1.2.2, §3.1.2.3, §3.3.9; RFC 3261 §18.3): answers on the
# connection and whether the server closed it.
TCP_EXPECTED: dict[str, tuple[list[int], bool]] = {
    "clerr": ([], True),  # waits for the rest of the body, closes when idle
    "baddn": ([], True),  # no blank line: incomplete, closed when idle
    "ncl": ([400], True),  # negative Content-Length: framing error, answer and close
    "mcl01": ([400], True),  # conflicting Content-Length: likewise
    "inv2543": ([400], True),  # no Content-Length on a stream: likewise
    "dblreq": ([200, 200], True),  # REGISTER and INVITE, then 5 stray octets: close
    "badinv01": ([400], False),  # malformed but framed: refused, connection kept
    "wsinv": ([200], False),
    "mpart01": ([200], False),
}


def expectations() -> dict[str, tuple[bool, int | None]]:
    """name -> (accepted, status of the refusal or None)."""
    out: dict[str, tuple[bool, int | None]] = {}
    for name, o in test_rfc4475.EXPECTED.items():
        out[name] = (o.accepted, o.status)
    for name, status in test_rfc5118.EXPECTED.items():
        out[name] = (status is None, status)
    return out


def raw(name: str) -> bytes:
    for sub in ("rfc4475", "rfc5118"):
        path = SHARED / sub / f"{name}.sip"
        if path.exists():
            return path.read_bytes()
    raise FileNotFoundError(name)


def first_call_id(data: bytes) -> str | None:
    found = re.search(rb"(?im)^(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", data)
    return found.group(1).decode() if found else None


def first_method(data: bytes) -> str:
    return data.split(b" ", 1)[0].decode()


@cache
def unshare_problem() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare (util-linux) and ip (iproute2)"
    probe = subprocess.run(
        ["unshare", "-n", "ip", "link", "set", "lo", "up"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"cannot make a network namespace (root needed): {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    problem = unshare_problem()
    if problem:
        pytest.skip(problem)
    if not SHARED.is_dir():
        pytest.skip("../shared/vectors not present")
    cmd = f"ip link set lo up && exec {sys.executable} {HELPER}"
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", cmd], capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


pytestmark = [pytest.mark.netns, pytest.mark.slow]


def test_every_vector_was_sent(report: dict[str, Any]) -> None:
    assert set(expectations()) <= set(report)
    assert set(TCP_EXPECTED) <= {n for n, e in report.items() if isinstance(e, dict) and "tcp" in e}


@pytest.mark.parametrize("name", sorted(expectations()))
def test_udp_outcome(report: dict[str, Any], name: str) -> None:
    accepted, status = expectations()[name]
    data = raw(name)
    got = report[name]["udp"]
    is_response = data.startswith(b"SIP/")
    if is_response:
        # Responses are never answered: accepted ones reach the application, others do not.
        assert got["answers"] == []
        assert got["handed"] == ([data[8:11].decode()] if accepted else [])
        return
    port = ANSWER_PORT.get(name, 5060)
    if accepted:
        # The application got it and its 200 arrived where §18.2.2 sends it.
        assert got["handed"] == [first_method(data)]
        assert got["answers"] == [[200, first_call_id(data), port]]
    else:
        # Refused by the transport: the application never saw it.
        assert got["handed"] == []
        assert got["answers"] == [[status, first_call_id(data), port]]


@pytest.mark.parametrize("name", sorted(TCP_EXPECTED))
def test_tcp_outcome(report: dict[str, Any], name: str) -> None:
    answers, closed = TCP_EXPECTED[name]
    got = report[name]["tcp"]
    assert got["answers"] == answers
    assert got["closed"] is closed


def test_server_kept_running(report: dict[str, Any]) -> None:
    assert report["_strays"] == []  # no vector was answered twice
    assert report["_probe"]["answers"] == [[200, "probe", 5060]]
    stats = report["_stats"]
    assert stats.get("internal_errors", 0) == 0 and stats.get("handler_errors", 0) == 0
