"""Start a Kamailio CSCF role (kamailio/<role>.cfg) in the foreground for a test, stop it by pid.

Each instance gets free loopback ports, its own run dir (ctl socket, log) and its defines;
readiness is `kamcmd core.uptime` answering on the ctl socket.

    with start_stack(tmp_path, hss_db=db, as_uris=["sip:127.0.0.1:5070"]) as stack:
        stack.pcscf.port, stack.scscf.uri ...

`as_uris` points the S-CSCF at any MRFC-AS address(es): the SIPp stand-in or the real one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ports import free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
KAMAILIO_DIR = PROJECT_ROOT / "kamailio"
KAMAILIO_BIN = shutil.which("kamailio") or "/usr/sbin/kamailio"
KAMCMD_BIN = shutil.which("kamcmd") or "/usr/sbin/kamcmd"
ROLES = ("pcscf", "icscf", "scscf")


def kamailio_available() -> bool:
    return Path(KAMAILIO_BIN).exists() and Path(KAMCMD_BIN).exists()


def quoted(value: str) -> str:
    """A string define for `-A`: Kamailio wants the quotes inside the value."""
    return '"' + value.replace('"', '\\"') + '"'


def hss_sqlcon(db_url: str) -> str:
    """`sqlite:///abs/path.db` or `postgres://…` (SQLAlchemy forms accepted) -> sqlops con."""
    url = db_url
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres+psycopg://"):
        if url.startswith(prefix):
            url = "postgres://" + url[len(prefix) :]
    if url.startswith("sqlite+pysqlite://"):
        url = "sqlite://" + url[len("sqlite+pysqlite://") :]
    return f"hss=>{url}"


def write_dispatcher_list(path: Path, as_uris: Sequence[str], setid: int = 1) -> Path:
    """The AS nodes in failover order: the first has the highest priority."""
    lines = ["# setid destination flags priority"]
    for index, uri in enumerate(as_uris):
        lines.append(f"{setid} {uri} 0 {100 - index}")
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class KamailioProcess:
    role: str
    ip: str
    port: int
    run_dir: Path
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def uri(self) -> str:
        return f"sip:{self.ip}:{self.port}"

    @property
    def ctl(self) -> str:
        return f"unix:{self.run_dir}/kamailio_ctl"

    def kamcmd(self, *args: str, timeout: float = 5.0) -> str:
        done = subprocess.run(
            [KAMCMD_BIN, "-s", self.ctl, *args],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr.decode(errors="replace") or "kamcmd failed")
        return done.stdout.decode(errors="replace")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # Kill the whole process group: Kamailio's workers are its children.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)


def start_role(
    role: str,
    run_dir: Path,
    defines: Mapping[str, str | int] | None = None,
    *,
    ip: str = "127.0.0.1",
    port: int | None = None,
    workers: int = 2,
    log_level: int = 2,
    ready_timeout: float = 15.0,
    cfg_dir: Path = KAMAILIO_DIR,
) -> KamailioProcess:
    """Start kamailio/<role>.cfg; string defines must already carry quotes (see `quoted`)."""
    if role not in ROLES:
        raise ValueError(role)
    run_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port(ip)
    all_defines: dict[str, str | int] = {
        "LISTEN_IP": ip,
        "LISTEN_PORT": port,
        "CTL_SOCKET": quoted(f"unix:{run_dir}/kamailio_ctl"),
        "LOG_LEVEL": log_level,
    }
    all_defines.update(defines or {})
    args = [
        KAMAILIO_BIN,
        "-f",
        str(cfg_dir / f"{role}.cfg"),
        "-w",
        str(cfg_dir),
        "-DD",
        "-E",
        "-Y",
        str(run_dir),
        "-m",
        "64",
        "-M",
        "8",
        "-n",
        str(workers),
    ]
    for name, value in all_defines.items():
        args += ["-A", f"{name}={value}"]
    log_path = run_dir / f"{role}.log"
    log_file = log_path.open("wb")
    proc = subprocess.Popen(
        args,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=cfg_dir,
        start_new_session=True,
    )
    log_file.close()
    kp = KamailioProcess(role, ip, port, run_dir, proc, log_path)
    deadline = time.monotonic() + ready_timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{role} exited with {proc.returncode}:\n{kp.log()[-4000:]}")
        try:
            kp.kamcmd("core.uptime", timeout=2.0)
            return kp
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        if time.monotonic() > deadline:
            kp.stop()
            raise RuntimeError(f"{role} not ready in {ready_timeout}s:\n{kp.log()[-4000:]}")
        time.sleep(0.05)


@dataclass
class Stack:
    pcscf: KamailioProcess
    icscf: KamailioProcess
    scscf: KamailioProcess
    dispatcher_list: Path
    extra: list[KamailioProcess] = field(default_factory=list)

    def processes(self) -> list[KamailioProcess]:
        return [self.pcscf, self.icscf, self.scscf, *self.extra]

    def logs(self) -> str:
        return "\n".join(f"===== {p.role}\n{p.log()[-6000:]}" for p in self.processes())

    def stop(self) -> None:
        for process in self.processes():
            process.stop()


@contextlib.contextmanager
def start_stack(
    base_dir: Path,
    *,
    hss_db: str,
    as_uris: Sequence[str] = ("sip:127.0.0.1:5070",),
    auth: bool = True,
    home_domains: Sequence[str] = ("home1.net", "home2.net"),
    as_timeout_ms: int = 3000,
    ip: str = "127.0.0.1",
    extra_defines: Mapping[str, Mapping[str, str | int]] | None = None,
) -> Iterator[Stack]:
    """P-, I- and S-CSCF wired to each other on free ports; stopped on exit.

    `hss_db` is a database URL (`sqlite:////abs/file.db`, `postgresql://…`); `as_uris` the
    MRFC-AS nodes in failover order.
    """
    extra = extra_defines or {}
    ports = {role: free_port(ip) for role in ROLES}
    ds_list = write_dispatcher_list(base_dir / "dispatcher.list", as_uris)
    db_defines: dict[str, str | int] = {"HSS_SQLCON": quoted(hss_sqlcon(hss_db))}
    if hss_db.startswith(("postgres", "postgresql")):
        db_defines["WITH_POSTGRES"] = 1
    started: list[KamailioProcess] = []
    try:
        scscf = start_role(
            "scscf",
            base_dir / "scscf",
            {
                **db_defines,
                "ICSCF_URI": quoted(f"sip:{ip}:{ports['icscf']}"),
                "DS_LIST_FILE": quoted(str(ds_list)),
                "AUTH_ENABLED": 1 if auth else 0,
                "AS_TIMEOUT_MS": as_timeout_ms,
                **extra.get("scscf", {}),
            },
            ip=ip,
            port=ports["scscf"],
        )
        started.append(scscf)
        icscf = start_role(
            "icscf",
            base_dir / "icscf",
            {
                **db_defines,
                "SCSCF_URI": quoted(f"sip:{ip}:{ports['scscf']}"),
                **extra.get("icscf", {}),
            },
            ip=ip,
            port=ports["icscf"],
        )
        started.append(icscf)
        pcscf = start_role(
            "pcscf",
            base_dir / "pcscf",
            {
                "ICSCF_URI": quoted(f"sip:{ip}:{ports['icscf']}"),
                "HOME_DOMAINS": quoted(" ".join(home_domains)),
                **extra.get("pcscf", {}),
            },
            ip=ip,
            port=ports["pcscf"],
        )
        started.append(pcscf)
        stack = Stack(pcscf, icscf, scscf, ds_list)
        yield stack
    finally:
        for process in started:
            process.stop()
