"""`mrfc stack` (what `make run` runs): the whole local IMS conferencing stack under one supervisor.

Children, started in this order and stopped in the reverse one, each in its own session so a
Ctrl-C in the terminal reaches only the supervisor, which then stops them one by one by pid:

1. the built-in media processor (skipped when a FreeSWITCH answers on the configured ESL port),
2. the MRFC-AS (`python -m app.main`), ready when it prints its ready line and `/readyz` is 200,
3. the S-, I- and P-CSCF (Kamailio in the foreground), ready when `kamcmd core.uptime` answers.

Everything the stack writes lives under one directory (`var/` by default): the SQLite database
(also the HSS the CSCFs read with sqlops), `mrfc.toml` when there was none, `log/<child>.log`,
the Kamailio run directories, the admin token (`admin-token`, mode 0600) and `stack.json`, which
tells `mrfc demo` and operators' scripts the addresses and pids of the running stack.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

from app.db import make_engine, make_session_factory, migrate, repo, session_scope
from app.db.models import FilterCriterion, Subscriber
from app.settings import Settings, load_settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
KAMAILIO_DIR = PROJECT_ROOT / "kamailio"

# CONVENTIONS.md: the demo users (digest username = user part, realm = domain) and password.
DEMO_USERS: tuple[str, ...] = (
    "sip:user1_public1@home1.net",
    "sip:user2_public1@home2.net",
    "sip:user3_public1@home1.net",
)
DEMO_PASSWORD = "demo"
HOME_DOMAINS: tuple[str, ...] = ("home1.net", "home2.net")
ADMIN_TOKEN_FILE = "admin-token"
STATE_FILE = "stack.json"
AS_DISPATCHER_SET = 1

# How long each child may take to become ready; generous for a loaded 2-core machine.
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class StackError(Exception):
    """The stack could not start; the message says which part and where its log is."""


@dataclass(frozen=True)
class StackPorts:
    """CONVENTIONS.md defaults; each one can be moved so a second stack runs beside the first."""

    pcscf: int = 5060
    icscf: int = 4060
    scscf: int = 6060
    mrfc_sip: int = 5070
    api: int = 8080
    mrfp_sip: int = 5080
    esl: int = 8021
    rtp_first: int = 20000
    rtp_last: int = 29999


@dataclass(frozen=True)
class StackOptions:
    var_dir: Path = PROJECT_ROOT / "var"
    ports: StackPorts = StackPorts()
    ip: str = "127.0.0.1"
    # Digest authentication at the S-CSCF (kamailio AUTH_ENABLED); off only for experiments.
    auth: bool = True
    # None: var_dir/mrfc.toml, written from the options when it does not exist.
    config: Path | None = None
    kamailio_workers: int = 2
    kamailio_log_level: int = 2


@dataclass
class Child:
    """One supervised process; its stdout and stderr go to `log`."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL to the child's own process group (Kamailio's workers)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        # The child led its own session: anything left in its group (a worker that outlived
        # its parent) goes too. The group id is the child's pid, so nothing else is touched.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


@dataclass
class StackInfo:
    """What `stack.json` holds: enough for `mrfc demo` and scripts to use the running stack."""

    ip: str
    pcscf_port: int
    icscf_port: int
    scscf_port: int
    mrfc_sip_port: int
    api_url: str
    token: str
    factory_uri: str
    users: list[str]
    password: str
    log_dir: str
    pids: dict[str, int] = field(default_factory=dict)
    supervisor_pid: int = 0
    builtin_mrfp: bool = True


# --- configuration ----------------------------------------------------------------------------


def default_config(options: StackOptions, database: Path) -> str:
    """The MRFC-AS configuration of a fresh stack (docs/configuration.md lists every option)."""
    p = options.ports
    return f"""# Written by `mrfc stack` because there was no configuration; edit freely.
# The stack's --*-port options (or MRFC_STACK_* variables) override the ports given here.

[sip]
listen_host = "{options.ip}"
listen_port = {p.mrfc_sip}
# Dial-outs and NOTIFYs toward users go through the S-CSCF (RFC 3261 §8.1.2 pre-loaded Route).
outbound_proxy = "sip:{options.ip}:{p.scscf};lr"

[conference]
factory_uris = ["sip:conf-factory1@mrfc1.home1.net"]
uri_domain = "mrfc1.home1.net"

[[mrfp.nodes]]
name = "mrfp1"
sip_host = "{options.ip}"
sip_port = {p.mrfp_sip}
esl_host = "{options.ip}"
esl_port = {p.esl}
esl_password = "ClueCon"

[database]
url = "sqlite:///{database}"

[api]
host = "{options.ip}"
port = {p.api}

[log]
level = "INFO"
"""


def settings_overrides(options: StackOptions, explicit: set[str]) -> dict[str, str]:
    """MRFC_* variables that make the MRFC-AS follow the ports given on the command line."""
    p = options.ports
    env: dict[str, str] = {}
    if "mrfc_sip" in explicit:
        env["MRFC_SIP_LISTEN_PORT"] = str(p.mrfc_sip)
    if "api" in explicit:
        env["MRFC_API_PORT"] = str(p.api)
    if "scscf" in explicit:
        env["MRFC_SIP_OUTBOUND_PROXY"] = f"sip:{options.ip}:{p.scscf};lr"
    return env


def mrfp_overrides(settings: Settings, options: StackOptions, explicit: set[str]) -> dict[str, str]:
    """The first MRFP node moved to the ports given on the command line (JSON: a tuple field)."""
    if not ({"mrfp_sip", "esl"} & explicit):
        return {}
    nodes = [n.model_dump() for n in settings.mrfp.nodes]
    for node in nodes:
        node["esl_password"] = node["esl_password"].get_secret_value()
    if "mrfp_sip" in explicit:
        nodes[0]["sip_port"] = options.ports.mrfp_sip
    if "esl" in explicit:
        nodes[0]["esl_port"] = options.ports.esl
    return {"MRFC_MRFP_NODES": json.dumps(nodes)}


def sqlops_con(db_url: str) -> tuple[str, bool]:
    """The database URL as Kamailio sqlops wants it (`hss=>sqlite:////abs` has four slashes:
    three of the scheme and the root of the absolute path), and whether it is PostgreSQL."""
    url = db_url
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres+psycopg://"):
        if url.startswith(prefix):
            return "hss=>postgres://" + url[len(prefix) :], True
    if url.startswith("postgres://"):
        return "hss=>" + url, True
    path = url.split("://", 1)[1].removeprefix("/")
    return f"hss=>sqlite:///{Path(path).resolve()}", False


def uri_domain(uri: str) -> str:
    rest = uri.split(":", 1)[1]
    return rest.rpartition("@")[2].split(";", 1)[0].split(":", 1)[0]


# --- database: schema, HSS rows, admin token ---------------------------------------------------


def ifc_regex(domains: Sequence[str]) -> str:
    """The factory URI and every conference URI share the `conf-` user prefix (CONVENTIONS)."""
    alternatives = "|".join(d.replace(".", r"\.") for d in sorted(set(domains)))
    return rf"^sips?:conf-[^@]*@({alternatives})"


def provision(settings: Settings, token_file: Path) -> tuple[str, list[str]]:
    """Migrate, then add what is missing: demo users, the iFC row, an admin token.

    Idempotent: a re-run keeps existing users (and their passwords) and prints the same token
    as long as it is still valid in the database. Returns (token, notes for the operator).
    """
    url = settings.database.url
    migrate(url)
    engine = make_engine(url)
    notes: list[str] = []
    domains = [uri_domain(u) for u in settings.conference.factory_uris]
    domains.append(settings.conference.uri_domain)
    regex = ifc_regex(domains)
    try:
        with session_scope(make_session_factory(engine)) as session:
            for impu in DEMO_USERS:
                if session.query(Subscriber).filter_by(impu=impu).first() is None:
                    repo.add_subscriber(session, impu, DEMO_PASSWORD)
                    notes.append(f"provisioned {impu}")
            have = session.query(FilterCriterion).filter_by(request_uri_regex=regex).first()
            if have is None:
                # TS 29.228 iFC: conference requests go to the AS nodes of dispatcher set 1.
                repo.add_filter_criterion(
                    session,
                    priority=10,
                    request_uri_regex=regex,
                    as_uri=f"dispatcher:{AS_DISPATCHER_SET}",
                    default_handling="continue",
                )
                notes.append("provisioned the conference iFC row")
            token = token_file.read_text().strip() if token_file.exists() else ""
            if not token or repo.authenticate_token(session, token) is None:
                _, token = repo.create_token(session, f"stack-admin-{int(time.time())}", "admin")
                token_file.write_text(token + "\n")
                token_file.chmod(0o600)
                notes.append("created an admin API token")
    finally:
        engine.dispose()
    return token, notes


# --- children ---------------------------------------------------------------------------------


def _start(name: str, args: Sequence[str], log_dir: Path, env: Mapping[str, str]) -> Child:
    log = log_dir / f"{name}.log"
    with log.open("ab") as out:
        out.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(args)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(args),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=PROJECT_ROOT,
            env=dict(env),
            # Own session: a terminal's Ctrl-C reaches the supervisor only, which then stops
            # the children in order; the group id (= pid) also reaches Kamailio's workers.
            start_new_session=True,
        )
    return Child(name, proc, log)


def _wait(child: Child, check: Callable[[], bool], what: str, stopping: threading.Event) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not check():
        if stopping.is_set():
            raise StackError("interrupted while starting")
        if not child.alive():
            raise StackError(
                f"{child.name} exited with {child.proc.returncode} before {what}; "
                f"log {child.log}:\n{child.output()[-2000:]}"
            )
        if time.monotonic() > deadline:
            raise StackError(f"{child.name}: no {what} in {READY_TIMEOUT:.0f} s; log {child.log}")
        time.sleep(0.1)


def _ready_line(child: Child, offset: int) -> Callable[[], bool]:
    def check() -> bool:
        return "ready " in child.output()[offset:]

    return check


def _http_ready(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _kamailio_bin(name: str) -> str:
    found = shutil.which(name) or f"/usr/sbin/{name}"
    if not Path(found).exists():
        raise StackError(f"{name} not found: install the Debian package kamailio (make deps)")
    return found


def _kamcmd(ctl: str, *args: str) -> str:
    done = subprocess.run(
        [_kamailio_bin("kamcmd"), "-s", ctl, *args],
        capture_output=True,
        timeout=5,
        check=False,
    )
    if done.returncode != 0:
        raise StackError(done.stderr.decode(errors="replace").strip() or "kamcmd failed")
    return done.stdout.decode(errors="replace")


def _quoted(value: str) -> str:
    # String defines keep their quotes inside the value (kamailio/README.md).
    return '"' + value.replace('"', '\\"') + '"'


class Supervisor:
    """Starts the children in order, watches them, stops them in reverse order."""

    def __init__(self, options: StackOptions, out: TextIO = sys.stdout) -> None:
        self.options = options
        self.out = out
        self.children: list[Child] = []
        self.stopping = threading.Event()
        self.var_dir = options.var_dir.resolve()
        self.log_dir = self.var_dir / "log"
        self.run_dir = self.var_dir / "run"

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    # --- start -------------------------------------------------------------------------------

    def start(self, settings: Settings, env: Mapping[str, str], token: str) -> StackInfo:
        o, p = self.options, self.options.ports
        node = settings.mrfp.nodes[0]
        builtin = not tcp_open(node.esl_host, node.esl_port)
        if builtin:
            self.say(
                f"starting the built-in media processor (sip {node.sip_port}, esl {node.esl_port})"
            )
            mrfp = _start(
                "mrfp",
                [
                    sys.executable, "-m", "app.mrfp.builtin.main",
                    "--sip-host", node.sip_host, "--sip-port", str(node.sip_port),
                    "--esl-host", node.esl_host, "--esl-port", str(node.esl_port),
                    "--esl-password", node.esl_password.get_secret_value(),
                    "--rtp-host", node.sip_host,
                    "--rtp-ports", f"{p.rtp_first}-{p.rtp_last}",
                ],
                self.log_dir,
                env,
            )  # fmt: skip
            offset = len(mrfp.output())
            self.children.append(mrfp)
            _wait(mrfp, _ready_line(mrfp, offset), "ready line", self.stopping)
        else:
            self.say(
                f"using the media processor (FreeSWITCH) at ESL {node.esl_host}:{node.esl_port}"
            )

        sip = settings.sip
        api_host = "127.0.0.1" if settings.api.host in ("0.0.0.0", "::") else settings.api.host
        api_url = f"http://{api_host}:{settings.api.port}"
        config = o.config or self.var_dir / "mrfc.toml"
        self.say(f"starting the MRFC-AS (sip {sip.listen_port}, api {settings.api.port})")
        mrfc = _start(
            "mrfc", [sys.executable, "-m", "app.main", "--config", str(config)], self.log_dir, env
        )
        offset = len(mrfc.output())
        self.children.append(mrfc)
        _wait(mrfc, _ready_line(mrfc, offset), "ready line", self.stopping)
        _wait(mrfc, _http_ready(f"{api_url}/readyz"), "200 from /readyz", self.stopping)

        con, postgres = sqlops_con(settings.database.url)
        ds_list = self.run_dir / "dispatcher.list"
        ds_list.write_text(
            "# setid destination flags priority (written by mrfc stack)\n"
            f"{AS_DISPATCHER_SET} sip:{sip.contact_host}:{sip.listen_port} 0 100\n"
        )
        hss: dict[str, str | int] = {"HSS_SQLCON": _quoted(con)}
        if postgres:
            hss["WITH_POSTGRES"] = 1
        roles: list[tuple[str, int, dict[str, str | int]]] = [
            (
                "scscf",
                p.scscf,
                {
                    **hss,
                    "ICSCF_URI": _quoted(f"sip:{o.ip}:{p.icscf}"),
                    "DS_LIST_FILE": _quoted(str(ds_list)),
                    "AUTH_ENABLED": 1 if o.auth else 0,
                },
            ),
            ("icscf", p.icscf, {**hss, "SCSCF_URI": _quoted(f"sip:{o.ip}:{p.scscf}")}),
            (
                "pcscf",
                p.pcscf,
                {
                    "ICSCF_URI": _quoted(f"sip:{o.ip}:{p.icscf}"),
                    "HOME_DOMAINS": _quoted(" ".join(HOME_DOMAINS)),
                },
            ),
        ]
        for role, port, defines in roles:
            self.say(f"starting the {role[0].upper()}-CSCF (sip {port})")
            self._start_kamailio(role, port, defines, env)

        return StackInfo(
            ip=o.ip,
            pcscf_port=p.pcscf,
            icscf_port=p.icscf,
            scscf_port=p.scscf,
            mrfc_sip_port=sip.listen_port,
            api_url=api_url,
            token=token,
            factory_uri=settings.conference.factory_uris[0],
            users=list(DEMO_USERS),
            password=DEMO_PASSWORD,
            log_dir=str(self.log_dir),
            pids={c.name: c.pid for c in self.children},
            supervisor_pid=os.getpid(),
            builtin_mrfp=builtin,
        )

    def _start_kamailio(
        self, role: str, port: int, defines: Mapping[str, str | int], env: Mapping[str, str]
    ) -> str:
        o = self.options
        run_dir = self.run_dir / role
        run_dir.mkdir(parents=True, exist_ok=True)
        ctl = f"unix:{run_dir}/kamailio_ctl"
        all_defines: dict[str, str | int] = {
            "LISTEN_IP": o.ip,
            "LISTEN_PORT": port,
            "CTL_SOCKET": _quoted(ctl),
            "LOG_LEVEL": o.kamailio_log_level,
            **defines,
        }
        args = [
            _kamailio_bin("kamailio"),
            "-f", str(KAMAILIO_DIR / f"{role}.cfg"),
            "-w", str(KAMAILIO_DIR),
            "-DD", "-E",
            "-Y", str(run_dir),
            "-m", "64", "-M", "8",
            "-n", str(o.kamailio_workers),
        ]  # fmt: skip
        for name, value in all_defines.items():
            args += ["-A", f"{name}={value}"]
        child = _start(role, args, self.log_dir, env)
        self.children.append(child)

        def uptime() -> bool:
            try:
                _kamcmd(ctl, "core.uptime")
                return True
            except (StackError, subprocess.TimeoutExpired):
                return False

        _wait(child, uptime, "answer to kamcmd core.uptime", self.stopping)
        return ctl

    # --- run and stop ------------------------------------------------------------------------

    def watch(self) -> Child | None:
        """Block until a stop is asked (returns None) or a child dies (returns it)."""
        while not self.stopping.wait(0.2):
            for child in self.children:
                if not child.alive():
                    return child
        return None

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.alive():
                self.say(f"stopping {child.name} (pid {child.pid})")
            child.stop()


def _banner(info: StackInfo, options: StackOptions) -> list[str]:
    users = "\n".join(
        f"    {u}   (digest username {u[4:].split('@')[0]}, realm {u.rpartition('@')[2]})"
        for u in info.users
    )
    auth = "on" if options.auth else "OFF (--no-auth)"
    return [
        "",
        "stack ready",
        f"  dial:     {info.factory_uri} through the P-CSCF at {info.ip}:{info.pcscf_port}"
        " (UDP/TCP); REGISTER there first",
        f"  users:    password {info.password!r}, digest authentication {auth}",
        users,
        f"  REST:     {info.api_url}/api/v1   token: {info.token}",
        f'            curl -H "Authorization: Bearer {info.token}" '
        f"{info.api_url}/api/v1/conferences",
        f"  console:  {info.api_url}/console/   (sign in with the token)",
        f"  health:   {info.api_url}/healthz  {info.api_url}/readyz  {info.api_url}/metrics",
        f"  logs:     {info.log_dir}/{{mrfp,mrfc,scscf,icscf,pcscf}}.log",
        "  pids:     " + " ".join(f"{k}={v}" for k, v in info.pids.items()),
        "  demo:     make demo (or mrfc demo) in another terminal;  stop: Ctrl-C",
        "",
    ]


def run_stack(options: StackOptions, explicit: set[str] | None = None) -> int:
    """Run the stack until SIGINT/SIGTERM; returns the exit status (0 after a clean stop).

    `explicit` names the StackPorts fields given on the command line: those override the
    configuration file; the others come from it (or from the defaults when it is written).
    """
    explicit = explicit or set()
    sup = Supervisor(options)
    var_dir = sup.var_dir
    for directory in (var_dir, sup.log_dir, sup.run_dir):
        directory.mkdir(parents=True, exist_ok=True)

    def on_signal(signum: int, frame: object) -> None:
        sup.stopping.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    state_file = var_dir / STATE_FILE
    try:
        config = options.config or var_dir / "mrfc.toml"
        if not config.exists():
            config.write_text(default_config(options, var_dir / "mrfc.db"))
            sup.say(f"wrote {config}")
        env = {**os.environ, **settings_overrides(options, explicit)}
        settings = load_settings(config, env)
        env.update(mrfp_overrides(settings, options, explicit))
        settings = load_settings(config, env)
        env["MRFC_CONFIG"] = str(config)
        token, notes = provision(settings, var_dir / ADMIN_TOKEN_FILE)
        sup.say(f"database {settings.database.safe_url()} ready")
        for note in notes:
            sup.say(note)
        info = sup.start(settings, env, token)
        state_file.write_text(json.dumps(asdict(info), indent=2) + "\n")
        state_file.chmod(0o600)
        for line in _banner(info, options):
            sup.say(line)
        dead = sup.watch()
        if dead is not None:
            sup.say(
                f"error: {dead.name} (pid {dead.pid}) exited with {dead.proc.returncode}; "
                f"see {dead.log}"
            )
            return 1
        sup.say("stopping the stack")
        return 0
    except StackError as exc:
        sup.say(f"error: {exc}")
        return 1
    except Exception as exc:
        sup.say(f"error: {type(exc).__name__}: {exc}")
        return 1
    finally:
        # Signals during the shutdown must not interrupt it halfway.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        sup.stop()
        with contextlib.suppress(FileNotFoundError):
            state_file.unlink()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sup.say("stopped")


def load_state(var_dir: Path) -> dict[str, Any]:
    """The running stack's `stack.json` (see StackInfo); StackError when no stack runs."""
    path = var_dir / STATE_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise StackError(f"no running stack: {path} is missing (start one with make run)") from None
    return data
