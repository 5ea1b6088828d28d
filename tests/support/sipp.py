"""Run SIPp scenarios (sipp 3.6) against local SIP elements: free ports, logs, message trace.

    uas = start_sipp(scn / "as_uas.xml", tmp_path / "as", port=as_port)
    res = run_sipp(scn / "uac.xml", tmp_path / "uac", remote=f"127.0.0.1:{pcscf_port}",
                   keys={"to_user": "conf-factory1"}, auth=("user1_public1", "demo"))
    assert res.ok, res.report()
    assert uas.wait().ok

`keys` become `-key name value` (used as `[name]` in the XML); `variables` `-set name value`.
The message trace (`-trace_msg`) is kept, split into messages by `SippResult.messages()`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port

SIPP_BIN = shutil.which("sipp") or "/usr/bin/sipp"

# SIPp writes "----- <date> \n UDP message sent/received ..." blocks into the message file.
_TRACE_SPLIT = re.compile(r"^-{5,}.*$", re.M)


def sipp_available() -> bool:
    return Path(SIPP_BIN).exists()


@dataclass
class SippResult:
    returncode: int
    stdout: str
    stderr: str
    trace: str
    errors: str
    log_dir: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def messages(self) -> list[str]:
        """Every traced message, header+body, as sent or received (in trace order)."""
        chunks = [c.strip("\n") for c in _TRACE_SPLIT.split(self.trace)]
        out: list[str] = []
        for chunk in chunks:
            lines = chunk.splitlines()
            # The first line says "UDP message received [n] bytes :" or "... sent ...".
            if lines and ("message received" in lines[0] or "message sent" in lines[0]):
                out.append("\n".join(lines[1:]).strip("\n"))
        return [m for m in out if m]

    def received(self) -> list[str]:
        return self._direction("received")

    def sent(self) -> list[str]:
        return self._direction("sent")

    def _direction(self, which: str) -> list[str]:
        out: list[str] = []
        for chunk in _TRACE_SPLIT.split(self.trace):
            lines = chunk.strip("\n").splitlines()
            if lines and f"message {which}" in lines[0]:
                out.append("\n".join(lines[1:]).strip("\n"))
        return [m for m in out if m]

    def received_requests(self, method: str) -> list[str]:
        return [m for m in self.received() if m.startswith(f"{method} ")]

    def report(self) -> str:
        return (
            f"sipp exit {self.returncode}\n--- stderr\n{self.stderr[-3000:]}\n"
            f"--- errors\n{self.errors[-3000:]}\n--- trace\n{self.trace[-6000:]}"
        )


def header_values(message: str, name: str) -> list[str]:
    """Values of header `name` (case-insensitive, compact forms not mapped) in a traced message."""
    head = message.split("\r\n\r\n", 1)[0].split("\n\n", 1)[0]
    prefix = name.lower() + ":"
    return [
        line.split(":", 1)[1].strip()
        for line in head.splitlines()
        if line.lower().startswith(prefix)
    ]


class SippProcess:
    """A SIPp run in the background (e.g. a UAS started before its UAC)."""

    def __init__(
        self, proc: subprocess.Popen[bytes], log_dir: Path, port: int, timeout: float
    ) -> None:
        self.proc = proc
        self.log_dir = log_dir
        self.port = port
        self.timeout = timeout

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self, name: str) -> str:
        path = self.log_dir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def result(self) -> SippResult:
        return SippResult(
            self.proc.returncode if self.proc.returncode is not None else -1,
            self._read("stdout.log"),
            self._read("stderr.log"),
            self._read("messages.log"),
            self._read("errors.log"),
            self.log_dir,
        )

    def wait(self, timeout: float | None = None) -> SippResult:
        try:
            self.proc.wait(timeout if timeout is not None else self.timeout)
        except subprocess.TimeoutExpired:
            self.stop()
        return self.result()

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(3)


def sipp_args(
    scenario: Path,
    log_dir: Path,
    *,
    remote: str | None = None,
    port: int,
    ip: str = "127.0.0.1",
    transport: str = "u1",
    calls: int = 1,
    keys: Mapping[str, str] | None = None,
    variables: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    service: str | None = None,
    timeout: float = 20.0,
    extra: Sequence[str] = (),
) -> list[str]:
    args = [
        SIPP_BIN,
        *([remote] if remote else []),
        "-sf", str(scenario),
        "-i", ip,
        "-p", str(port),
        "-t", transport,
        "-m", str(calls),
        "-nostdin",
        "-timeout", f"{int(timeout)}s",
        "-timeout_error",
        "-trace_msg", "-message_file", str(log_dir / "messages.log"),
        "-trace_err", "-error_file", str(log_dir / "errors.log"),
    ]  # fmt: skip
    if service:
        args += ["-s", service]
    if auth:
        args += ["-au", auth[0], "-ap", auth[1]]
    for name, value in (keys or {}).items():
        args += ["-key", name, value]
    for name, value in (variables or {}).items():
        args += ["-set", name, value]
    return [*args, *extra]


def start_sipp(
    scenario: Path,
    log_dir: Path,
    *,
    remote: str | None = None,
    port: int | None = None,
    ip: str = "127.0.0.1",
    transport: str = "u1",
    calls: int = 1,
    keys: Mapping[str, str] | None = None,
    variables: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    service: str | None = None,
    timeout: float = 20.0,
    extra: Sequence[str] = (),
) -> SippProcess:
    """Start SIPp in the background; `port` defaults to a free one (see `.port`)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port(ip)
    args = sipp_args(
        scenario, log_dir, remote=remote, port=port, ip=ip, transport=transport, calls=calls,
        keys=keys, variables=variables, auth=auth, service=service, timeout=timeout,
        extra=extra,
    )  # fmt: skip
    (log_dir / "command.txt").write_text(" ".join(args) + "\n")
    with (log_dir / "stdout.log").open("wb") as out, (log_dir / "stderr.log").open("wb") as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=log_dir)
    # SIPp's own -timeout ends it; the extra margin covers start-up on a loaded machine.
    return SippProcess(proc, log_dir, port, timeout + 10.0)


def run_sipp(scenario: Path, log_dir: Path, **kwargs: object) -> SippResult:
    """Start SIPp and wait for it (same arguments as `start_sipp`)."""
    process = start_sipp(scenario, log_dir, **kwargs)  # type: ignore[arg-type]
    try:
        return process.wait()
    finally:
        process.stop()
