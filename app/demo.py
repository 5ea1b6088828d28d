"""`mrfc demo` (`make demo`): a three-party conference against the running `mrfc stack`.

SIPp plays the three demo users (scenarios in deploy/demo/scenarios/), all through the P-CSCF:
each REGISTERs with digest authentication; user1 creates the conference through the factory URI
and subscribes to it; user2 joins by the conference URI and subscribes; user1 REFERs the focus
to user3, whom the focus dials out through the S-CSCF, and who subscribes too. The demo then
prints the REST view (who is in, muted, joined when), ends the conference over REST (every UE
gets a BYE, every subscriber a final NOTIFY) and prints the conference-info NOTIFYs each UE got.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.stack import PROJECT_ROOT, load_state

SCENARIOS = PROJECT_ROOT / "deploy" / "demo" / "scenarios"
NS = "{urn:ietf:params:xml:ns:conference-info}"
_TRACE_SPLIT = re.compile(r"^-{5,}.*$", re.M)


class DemoError(Exception):
    """The demo could not run; the message says which step failed and where its logs are."""


def _free_port(ip: str) -> int:
    # A port free for UDP (SIPp's transport here); the kernel picks it.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


@dataclass
class Ue:
    impu: str
    port: int
    log_dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def user(self) -> str:
        return self.impu[4:].split("@")[0]

    @property
    def domain(self) -> str:
        return self.impu.rpartition("@")[2]

    def sipp(
        self, sipp: str, scenario: str, remote: str, keys: dict[str, str], auth: str | None
    ) -> subprocess.Popen[bytes]:
        run_dir = self.log_dir / f"{self.user}-{scenario}"
        run_dir.mkdir(parents=True, exist_ok=True)
        args = [
            sipp, remote, "-sf", str(SCENARIOS / f"{scenario}.xml"),
            "-i", "127.0.0.1", "-p", str(self.port), "-t", "u1", "-m", "1", "-nostdin",
            "-timeout", "60s", "-timeout_error",
            "-trace_msg", "-message_file", str(run_dir / "messages.log"),
            "-trace_err", "-error_file", str(run_dir / "errors.log"),
            "-key", "user", self.user, "-key", "domain", self.domain,
        ]  # fmt: skip
        if auth:
            args += ["-au", self.user, "-ap", auth]
        for name, value in keys.items():
            args += ["-key", name, value]
        out = (run_dir / "stdout.log").open("wb")
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=run_dir
        )
        out.close()
        return proc

    def trace(self, scenario: str) -> str:
        path = self.log_dir / f"{self.user}-{scenario}" / "messages.log"
        return path.read_text(errors="replace") if path.exists() else ""


def received_notifies(trace: str) -> list[str]:
    """The conference NOTIFYs in a SIPp message trace, in arrival order (retransmissions once)."""
    out: list[str] = []
    for chunk in _TRACE_SPLIT.split(trace):
        lines = chunk.strip("\n").splitlines()
        if not lines or "message received" not in lines[0]:
            continue
        message = "\n".join(lines[1:]).strip("\n")
        conference = re.search(r"^Event: *conference", message, re.M)
        if message.startswith("NOTIFY ") and conference and message not in out:
            out.append(message)
    return out


def summarize_notify(message: str) -> str:
    """One line per NOTIFY: version, full/partial, and each user's endpoint status."""
    state = re.search(r"^Subscription-State: *(\S+)", message, re.M)
    body = message.split("\n\n", 1)[1] if "\n\n" in message else ""
    if not body.strip():
        return f"(no body) {state.group(1) if state else ''}"
    root = ET.fromstring(body.strip())
    users = []
    for user in root.iter(f"{NS}user"):
        statuses = [e.findtext(f"{NS}status") or "" for e in user.iter(f"{NS}endpoint")]
        users.append(f"{user.get('entity')} {'/'.join(statuses) or user.get('state', '')}")
    return (
        f"version {root.get('version')} {root.get('state')}, "
        f"subscription {state.group(1) if state else '?'}: " + ("; ".join(users) or "no users")
    )


def _wait(
    check: Callable[[], Any], what: str, timeout: float, procs: list[subprocess.Popen[bytes]]
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        for proc in procs:
            if proc.poll() not in (None, 0):
                raise DemoError(f"a SIPp UE failed (exit {proc.returncode}); see var/log/demo/")
        if time.monotonic() > deadline:
            raise DemoError(f"timed out waiting for {what}")
        time.sleep(0.2)


def run_demo(var_dir: Path, *, hold: float = 2.0, echo: Callable[[str], None] = print) -> None:
    state = load_state(var_dir.resolve())
    sipp = shutil.which("sipp")
    if sipp is None:
        raise DemoError("sipp not found: install the Debian package sip-tester (make deps)")
    api = state["api_url"] + "/api/v1"
    headers = {"Authorization": f"Bearer {state['token']}"}
    pcscf = f"{state['ip']}:{state['pcscf_port']}"
    log_dir = var_dir.resolve() / "log" / "demo" / time.strftime("%Y%m%d-%H%M%S")
    user1, user2, user3 = (Ue(impu, _free_port(state["ip"]), log_dir) for impu in state["users"])
    running: list[subprocess.Popen[bytes]] = []
    client = httpx.Client(headers=headers, timeout=10)
    try:
        for ue in (user1, user2, user3):
            proc = ue.sipp(sipp, "register", pcscf, {"expires": "300"}, state["password"])
            if proc.wait(60) != 0:
                raise DemoError(f"{ue.impu} could not register; see {log_dir}")
            echo(f"registered {ue.impu} (127.0.0.1:{ue.port}) through the P-CSCF {pcscf}")
        before = {c["id"] for c in client.get(f"{api}/conferences").json()["items"]}
        running.append(user3.sipp(sipp, "user3", pcscf, {}, None))
        refer_to = user3.impu
        keys1 = {"pcscf": pcscf, "to_uri": state["factory_uri"], "refer_to": refer_to}
        running.append(user1.sipp(sipp, "user1", pcscf, keys1, None))

        def created() -> dict[str, Any] | None:
            items = client.get(f"{api}/conferences", params={"state": "active"}).json()["items"]
            return next((c for c in items if c["id"] not in before), None)

        conf = _wait(created, "the conference of user1", 30, running)
        echo(f"user1 created {conf['uri']} through {state['factory_uri']}")
        running.append(
            user2.sipp(sipp, "user2", pcscf, {"pcscf": pcscf, "to_uri": conf["uri"]}, None)
        )
        parts_url = f"{api}/conferences/{conf['id']}/participants"

        def all_in() -> list[dict[str, Any]] | None:
            items: list[dict[str, Any]] = client.get(parts_url).json()["items"]
            connected = [p for p in items if p["status"] == "connected"]
            return items if len(connected) >= 3 else None

        _wait(all_in, "user1, user2 and user3 connected", 45, running)
        echo("user2 joined by the conference URI; user3 was dialed out after user1's REFER")
        time.sleep(hold)  # let the three stay together a moment: this is a demo, not a test
        conf = client.get(f"{api}/conferences/{conf['id']}").json()
        parts = client.get(parts_url).json()["items"]
        echo("")
        echo(f"REST  GET /conferences/{conf['id']}")
        echo(
            f"  {conf['uri']}  state {conf['state']}  initiator {conf['initiator']}  "
            f"locked {conf['locked']}  mrfp {conf['mrfp_node']}  participants "
            f"{conf['participant_count']}"
        )
        echo(f"REST  GET /conferences/{conf['id']}/participants")
        for p in parts:
            echo(
                f"  {p['uri']:<32} {p['status']:<12} joined {p['joined_at']}  "
                f"via {p['joining_method'] or '-'}  muted {'yes' if p['muted'] else 'no'}"
            )
        echo("")
        echo(f"REST  DELETE /conferences/{conf['id']}  (BYE to all, final NOTIFY to subscribers)")
        resp = client.delete(f"{api}/conferences/{conf['id']}")
        if resp.status_code >= 400:
            raise DemoError(f"DELETE answered {resp.status_code}: {resp.text}")
        for proc in running:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                raise DemoError(f"a SIPp UE did not finish; see {log_dir}") from None
        failed = [
            ue.impu for ue, p in zip((user3, user1, user2), running, strict=True) if p.returncode
        ]
        echo("")
        for ue, scenario in ((user1, "user1"), (user2, "user2"), (user3, "user3")):
            notifies = received_notifies(ue.trace(scenario))
            echo(f"conference-info NOTIFYs received by {ue.impu}: {len(notifies)}")
            for message in notifies:
                try:
                    echo("  " + summarize_notify(message))
                except ET.ParseError:
                    echo("  (unparsable body)")
        echo("")
        echo(f"SIP traces: {log_dir}")
        if failed:
            raise DemoError(f"SIPp reported a failure for {', '.join(failed)}; see {log_dir}")
    finally:
        client.close()
        for proc in running:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
