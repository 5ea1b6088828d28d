"""Start the MRFC-AS and the built-in media processor as real processes on free ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port, free_port_range

PROJECT = Path(__file__).resolve().parents[2]
DEFAULT_FACTORY_URI = "sip:conf-factory1@mrfc1.home1.net"


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _start(name: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None) -> Process:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=PROJECT,
            env={**os.environ, **(env or {})},
        )
    return Process(name, proc, log)


def wait_ready(process: Process, marker: str = "ready ", timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker in process.output():
            return
        if process.proc.poll() is not None:
            raise RuntimeError(f"{process.name} exited early:\n{process.output()[-3000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"{process.name} not ready in {timeout} s:\n{process.output()[-3000:]}")


@dataclass
class Stack:
    """The MRFC-AS with the built-in media processor behind it."""

    sip_port: int
    api_port: int
    mrfp_sip_port: int
    esl_port: int
    database: Path
    processes: list[Process]

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def start_builtin_mrfp(log_dir: Path) -> tuple[Process, int, int]:
    sip_port, esl_port = free_port(), free_port()
    rtp = free_port_range(40)
    process = _start(
        "mrfp",
        [
            sys.executable, "-m", "app.mrfp.builtin.main",
            "--sip-host", "127.0.0.1", "--sip-port", str(sip_port),
            "--esl-host", "127.0.0.1", "--esl-port", str(esl_port),
            "--esl-password", "ClueCon",
            "--rtp-host", "127.0.0.1", "--rtp-ports", f"{rtp}-{rtp + 39}",
        ],
        log_dir,
    )  # fmt: skip
    wait_ready(process)
    return process, sip_port, esl_port


def write_config(
    path: Path,
    *,
    sip_port: int,
    api_port: int,
    mrfp_sip_port: int,
    esl_port: int,
    database: Path,
    max_participants: int = 16,
    factory_uris: Sequence[str] = (DEFAULT_FACTORY_URI,),
) -> None:
    factories = ", ".join(f'"{uri}"' for uri in factory_uris)
    path.write_text(
        f"""
[sip]
listen_host = "127.0.0.1"
listen_port = {sip_port}
outbound_proxy = ""

[conference]
factory_uris = [{factories}]
uri_domain = "mrfc1.home1.net"
max_participants = {max_participants}

[[mrfp.nodes]]
name = "mrfp1"
sip_host = "127.0.0.1"
sip_port = {mrfp_sip_port}
esl_host = "127.0.0.1"
esl_port = {esl_port}
esl_password = "ClueCon"

[database]
url = "sqlite:///{database}"

[api]
host = "127.0.0.1"
port = {api_port}

[log]
level = "INFO"
"""
    )


def start_stack(
    tmp: Path,
    *,
    max_participants: int = 16,
    factory_uris: Sequence[str] = (DEFAULT_FACTORY_URI,),
) -> Stack:
    """Start both processes; `factory_uris` replaces the default list (e.g. add one by IP)."""
    mrfp, mrfp_sip, esl = start_builtin_mrfp(tmp)
    sip_port, api_port = free_port(), free_port()
    database = tmp / "mrfc.sqlite3"
    config = tmp / "mrfc.toml"
    write_config(
        config,
        sip_port=sip_port,
        api_port=api_port,
        mrfp_sip_port=mrfp_sip,
        esl_port=esl,
        database=database,
        max_participants=max_participants,
        factory_uris=factory_uris,
    )
    mrfc = _start("mrfc", [sys.executable, "-m", "app.main", "--config", str(config)], tmp)
    try:
        wait_ready(mrfc)
    except Exception:
        mrfp.stop()
        mrfc.stop()
        raise
    return Stack(sip_port, api_port, mrfp_sip, esl, database, [mrfp, mrfc])
