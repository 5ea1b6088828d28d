"""`make run` from the repository: the whole stack comes up, takes a call, and Ctrl-C leaves
no process behind (issue 9, "How it is shown").

The stack runs on free ports (MRFC_STACK_*_PORT, which `make` passes through) with its var
directory in tmp_path, so it can run beside a developer's own `make run` on the default ports.
The venv is taken as installed (`-o .venv/.installed`): the test must not reinstall it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support.kamailio import kamailio_available
from tests.support.ports import free_port, free_port_range
from tests.support.sipp import run_sipp, sipp_available

pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (kamailio_available() and sipp_available() and shutil.which("make")),
        reason="kamailio, sipp or make not installed",
    ),
]

PROJECT = Path(__file__).resolve().parents[2]
SCENARIOS = Path(__file__).parent
REGISTER = SCENARIOS / "kamailio" / "scenarios" / "register.xml"
CALL = SCENARIOS / "scenarios" / "ims" / "ue_join.xml"
FACTORY = "sip:conf-factory1@mrfc1.home1.net"
USER1 = "sip:user1_public1@home1.net"
CHILDREN = ("mrfp", "mrfc", "scscf", "icscf", "pcscf")


def process_groups() -> dict[int, list[int]]:
    """pgid -> pids of every process on the machine (from /proc, no ps needed)."""
    groups: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command name is in parentheses and may hold spaces: split after it.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                groups.setdefault(int(fields[2]), []).append(int(stat.parent.name))
    return groups


def wait_for(predicate: object, what: str, timeout: float, log: Path) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen in {timeout} s:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)


def test_make_run_call_rest_and_clean_stop(tmp_path: Path) -> None:
    var = tmp_path / "var"
    rtp = free_port_range(40)
    ports = {
        "PCSCF": free_port(), "ICSCF": free_port(), "SCSCF": free_port(), "SIP": free_port(),
        "API": free_port(), "MRFP_SIP": free_port(), "ESL": free_port(),
    }  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("MRFC_")}
    env.update({f"MRFC_STACK_{name}_PORT": str(port) for name, port in ports.items()})
    env["MRFC_STACK_VAR_DIR"] = str(var)
    env["MRFC_STACK_RTP_PORTS"] = f"{rtp}-{rtp + 39}"
    out_path = tmp_path / "make-run.out"
    with out_path.open("wb") as out:
        # A session of its own, like a terminal's foreground job: Ctrl-C goes to the group.
        make = subprocess.Popen(
            ["make", "--no-print-directory", "-o", ".venv/.installed", "run"],
            cwd=PROJECT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pids: dict[str, int] = {}
    try:
        wait_for(
            lambda: "stack ready" in out_path.read_text() or make.poll() is not None,
            "stack ready",
            180,
            out_path,
        )
        output = out_path.read_text()
        assert make.poll() is None, output
        token = re.search(r"token: (\S+)", output)
        pid_line = re.search(r"pids: +(.*)", output)
        assert token and pid_line, output
        pids = {k: int(v) for k, v in (kv.split("=") for kv in pid_line.group(1).split())}
        assert sorted(pids) == sorted(CHILDREN)
        assert f"127.0.0.1:{ports['PCSCF']}" in output and FACTORY in output
        api = f"http://127.0.0.1:{ports['API']}/api/v1"
        headers = {"Authorization": f"Bearer {token.group(1)}"}

        # A UE registers (digest, password demo) and calls the factory URI via the P-CSCF.
        pcscf = f"127.0.0.1:{ports['PCSCF']}"
        ue_port = free_port()
        reg = run_sipp(
            REGISTER,
            tmp_path / "register",
            remote=pcscf,
            port=ue_port,
            keys={"user": "user1_public1", "domain": "home1.net", "expires": "600"},
            auth=("user1_public1", "demo"),
        )
        assert reg.ok, reg.report()
        call = run_sipp(
            CALL,
            tmp_path / "call",
            remote=pcscf,
            port=ue_port,
            keys={"user": "user1_public1", "domain": "home1.net", "pcscf": pcscf,
                  "to_uri": FACTORY},
            variables={"hold_ms": "1500"},
            timeout=40,
        )  # fmt: skip
        assert call.ok, call.report() + "\n" + (var / "log" / "mrfc.log").read_text()[-3000:]

        # The conference over REST with the printed token: created by user1, who joined and left.
        resp = httpx.get(f"{api}/conferences", headers=headers, timeout=10)
        assert resp.status_code == 200, resp.text
        confs = [c for c in resp.json()["items"] if c["initiator"] == USER1]
        assert len(confs) == 1, resp.json()
        conf = confs[0]
        assert conf["factory_uri"] == FACTORY and conf["uri"].startswith("sip:conf-")
        parts = httpx.get(
            f"{api}/conferences/{conf['id']}/participants", headers=headers, timeout=10
        ).json()["items"]
        assert [(p["uri"], p["joined_at"] is not None) for p in parts] == [(USER1, True)]
        assert httpx.get(f"{api}/conferences", timeout=10).status_code == 401
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGINT)
        try:
            make.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait(10)
            raise AssertionError("make run did not stop on SIGINT") from None
        finally:
            # Whatever happened, nothing the stack started may outlive the test.
            for pid in pids.values():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)

    output = out_path.read_text()
    assert "stopped" in output, output[-3000:]
    # Stopped in reverse order of starting, each by its pid.
    order = [m.group(1) for m in re.finditer(r"stopping (\w+) \(pid", output)]
    assert order == list(reversed(CHILDREN)), output[-3000:]
    # No child and none of Kamailio's workers (each child leads its own process group) is left.
    left = {pgid: members for pgid, members in process_groups().items() if pgid in pids.values()}
    assert left == {}, left
    assert not (var / "stack.json").exists()
