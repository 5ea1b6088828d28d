"""Start the MRFC-AS and the built-in media processor as real processes on free ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

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
    # The SQLAlchemy URL the MRFC-AS runs on (SQLite at `database` unless another was given).
    database_url: str = ""
    config: Path | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def mrfp(self) -> Process:
        return self.processes[0]

    @property
    def mrfc(self) -> Process:
        return self.processes[-1]

    def create_token(self, name: str, scope: str = "admin") -> str:
        """A REST API token made the way an operator makes one: `mrfc tokens create`."""
        assert self.config is not None
        return create_token(self.config, name, scope)

    def logs(self, tail: int = 4000) -> str:
        """The last part of every process's output, for assertion messages."""
        return "\n".join(f"--- {p.name}\n{p.output()[-tail:]}" for p in self.processes)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read the MRFC-AS's SQLite database (written through by its own thread)."""
        conn = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=10)
        try:
            return list(conn.execute(sql, params).fetchall())
        except sqlite3.OperationalError:
            return []  # not created or locked yet: the caller polls again
        finally:
            conn.close()

    def event_kinds(self) -> list[str]:
        return [r[0] for r in self.query("select kind from event_log order by id")]

    def esl_api(self, command: str, timeout: float = 10.0) -> str:
        """`api <command>` on the media processor's event socket; the reply's body."""
        return esl_api("127.0.0.1", self.esl_port, "ClueCon", command, timeout)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll `probe` until it returns something truthy (tests wait on conditions, not sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def wait_readyz(api: str, timeout: float = 30.0) -> None:
    """Poll the MRFC-AS's `/readyz` (base URL `api`) until it answers 200: SIP listening and
    the ESL connection to the media processor up."""
    import httpx

    last = ""

    def ready() -> bool:
        nonlocal last
        try:
            resp = httpx.get(f"{api}/readyz", timeout=3)
        except httpx.HTTPError as exc:
            last = str(exc)
            return False
        last = resp.text
        return resp.status_code == 200

    try:
        wait_for(ready, timeout, "MRFC-AS /readyz")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {last}") from None


def read_esl_frame(sock: socket.socket, buf: bytearray) -> tuple[dict[str, str], bytes]:
    """One ESL frame (headers, body) from a blocking socket, either way: what follows it in
    the stream stays in `buf` for the next call."""
    while b"\n\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("ESL connection closed")
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\n\n")
    headers = dict(
        (k.strip(), v.strip())
        for k, _, v in (line.partition(":") for line in head.decode().splitlines())
    )
    length = int(headers.get("Content-Length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("ESL connection closed")
        rest += chunk
    buf[:] = rest[length:]
    return headers, rest[:length]


def esl_api(host: str, port: int, password: str, command: str, timeout: float = 10.0) -> str:
    """One `api` command over a fresh event-socket connection (auth/request, auth, api)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        buf = bytearray()
        read_esl_frame(sock, buf)  # Content-Type: auth/request
        sock.sendall(f"auth {password}\n\n".encode())
        headers, _ = read_esl_frame(sock, buf)
        if not headers.get("Reply-Text", "").startswith("+OK"):
            raise ConnectionError(f"ESL auth refused: {headers}")
        sock.sendall(f"api {command}\n\n".encode())
        while True:
            headers, body = read_esl_frame(sock, buf)
            if headers.get("Content-Type") == "api/response":
                return body.decode(errors="replace")


def start_builtin_mrfp(
    log_dir: Path, rtp_ports: int = 40, media_timeout: float | None = None
) -> tuple[Process, int, int]:
    """`media_timeout` 0 keeps members that send no RTP (SIPp UEs) for good."""
    sip_port, esl_port = free_port(), free_port()
    rtp = free_port_range(rtp_ports)
    timeout = [] if media_timeout is None else ["--media-timeout", str(media_timeout)]
    process = _start(
        "mrfp",
        [
            sys.executable, "-m", "app.mrfp.builtin.main",
            "--sip-host", "127.0.0.1", "--sip-port", str(sip_port),
            "--esl-host", "127.0.0.1", "--esl-port", str(esl_port),
            "--esl-password", "ClueCon",
            "--rtp-host", "127.0.0.1", "--rtp-ports", f"{rtp}-{rtp + rtp_ports - 1}",
            *timeout,
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
    database_url: str | None = None,
    sip_options: Mapping[str, object] | None = None,
    log_level: str = "INFO",
) -> None:
    """`sip_options` adds to (or overrides) the [sip] section, e.g. trusted_peers."""
    sip: dict[str, object] = {
        "listen_host": "127.0.0.1",
        "listen_port": sip_port,
        "outbound_proxy": "",
    }
    sip.update(sip_options or {})
    # JSON strings, numbers, booleans and arrays of them are also TOML values.
    sip_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in sip.items())
    url = database_url or f"sqlite:///{database}"
    factories = ", ".join(f'"{uri}"' for uri in factory_uris)
    path.write_text(
        f"""
[sip]
{sip_lines}

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
url = {json.dumps(url)}

[api]
host = "127.0.0.1"
port = {api_port}

[log]
level = "{log_level}"
"""
    )


def create_token(config: Path, name: str, scope: str = "admin") -> str:
    """Run the CLI (`mrfc --config <config> tokens create`) and return the printed token."""
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "--config", str(config), "tokens", "create",
         "--name", name, "--scope", scope, "--json"],
        cwd=PROJECT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"mrfc tokens create failed ({out.returncode}): {out.stderr[-2000:]}")
    token = json.loads(out.stdout.strip().splitlines()[-1])["token"]
    assert isinstance(token, str)
    return token


def start_stack(
    tmp: Path,
    *,
    max_participants: int = 16,
    factory_uris: Sequence[str] = (DEFAULT_FACTORY_URI,),
    database_url: str | None = None,
    sip_options: Mapping[str, object] | None = None,
    log_level: str = "INFO",
    rtp_ports: int = 40,
    media_timeout: float | None = None,
) -> Stack:
    """Start both processes; `factory_uris` replaces the default list (e.g. add one by IP);
    `database_url` (e.g. a PostgreSQL one) replaces the SQLite file in `tmp`; `sip_options`
    add to the [sip] section; `media_timeout` is the media processor's (0: never)."""
    mrfp, mrfp_sip, esl = start_builtin_mrfp(tmp, rtp_ports, media_timeout)
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
        database_url=database_url,
        sip_options=sip_options,
        log_level=log_level,
    )
    # MRFC_CPROFILE=<file>: run the MRFC-AS under cProfile (its event-loop thread) for profiling.
    profile = os.environ.get("MRFC_CPROFILE")
    profiler = ["-m", "cProfile", "-o", profile] if profile else []
    mrfc = _start(
        "mrfc", [sys.executable, *profiler, "-m", "app.main", "--config", str(config)], tmp
    )
    try:
        wait_ready(mrfc)
    except Exception:
        mrfp.stop()
        mrfc.stop()
        raise
    return Stack(
        sip_port,
        api_port,
        mrfp_sip,
        esl,
        database,
        [mrfp, mrfc],
        database_url=database_url or f"sqlite:///{database}",
        config=config,
    )


def restart_mrfc(stack: Stack) -> Process:
    """Stop the MRFC-AS (SIGTERM) and start it again on the same config and database."""
    index, old = next((i, p) for i, p in enumerate(stack.processes) if p.name.startswith("mrfc"))
    old.stop()
    base = old.log.parent
    config = stack.config or base / "mrfc.toml"
    generation = sum(1 for p in base.glob("mrfc*.log"))
    new = _start(
        f"mrfc-{generation + 1}",
        [sys.executable, "-m", "app.main", "--config", str(config)],
        base,
    )
    wait_ready(new)
    stack.processes[index] = new
    return new
