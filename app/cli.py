"""`mrfc`: run the MRFC-AS and operate it.

Database commands (`db`, `tokens`, `subscribers`, `conferences list/show`) work on the
configured database directly, so they also work while the server is down. Commands that act on
live calls (`conferences end`, `participants kick/mute`) go through the running server's REST
API, because only the focus holds the dialogs: they need a token (`--token` or $MRFC_TOKEN).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from app.db import make_engine, make_session_factory, migrate, repo, session_scope
from app.db.models import Conference, Participant
from app.settings import Settings, SettingsError, load_settings

app = typer.Typer(
    name="mrfc",
    help="IMS conference focus (MRFC-AS): serve it, and operate conferences, users and tokens.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
tokens_app = typer.Typer(help="REST API tokens (stored hashed; shown once).", no_args_is_help=True)
subscribers_app = typer.Typer(
    help="IMS subscribers (HSS data the CSCFs authenticate with).", no_args_is_help=True
)
conferences_app = typer.Typer(help="Conferences.", no_args_is_help=True)
participants_app = typer.Typer(help="Participants of a live conference.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(tokens_app, name="tokens")
app.add_typer(subscribers_app, name="subscribers")
app.add_typer(conferences_app, name="conferences")
app.add_typer(participants_app, name="participants")

TOKEN_ENV = "MRFC_TOKEN"
API_URL_ENV = "MRFC_API_URL"


@dataclass
class CliState:
    config: Path | None = None
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.config)
            except SettingsError as exc:
                typer.echo(str(exc), err=True)
                raise typer.Exit(2) from None
        return self._settings


STATE = CliState()

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar=TOKEN_ENV, help="Admin API token.", show_default=False),
]
ApiUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--api-url", envvar=API_URL_ENV, help="Default: from the configuration's api section."
    ),
]


@app.callback()
def _root(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", envvar="MRFC_CONFIG", help="TOML configuration file.", exists=False
        ),
    ] = None,
) -> None:
    STATE.config = config
    STATE._settings = None


# --- output -----------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def print_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], as_json: bool) -> None:
    """A plain aligned table (or JSON): readable in a terminal, greppable in a script."""
    if as_json:
        data = [{k: _jsonable(v) for k, v in row.items()} for row in rows]
        typer.echo(json.dumps(data, indent=2))
        return
    if not rows:
        typer.echo("(none)")
        return
    cells = [[_fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    typer.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in cells:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def print_record(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({k: _jsonable(v) for k, v in row.items()}, indent=2))
        return
    width = max(len(k) for k in row)
    for key, value in row.items():
        typer.echo(f"{key.ljust(width)}  {_fmt(value)}")


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


# --- database access --------------------------------------------------------------------------


def _with_session(fn: Callable[[Any], Any]) -> Any:
    """Run `fn(session)` in one transaction on the configured (migrated) database."""
    url = STATE.settings.database.url
    migrate(url)
    engine = make_engine(url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            return fn(session)
    finally:
        engine.dispose()


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Create or upgrade the schema (Alembic)."""
    db = STATE.settings.database
    migrate(db.url, revision)
    typer.echo(f"database {db.safe_url()} at {revision}")


# --- tokens -----------------------------------------------------------------------------------


def _token_row(t: Any) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "scope": t.scope,
        "created_at": t.created_at,
        "last_used_at": t.last_used_at,
        "revoked_at": t.revoked_at,
    }


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Option(help="A name to recognise the token by.")],
    scope: Annotated[str, typer.Option(help="read (lists) or admin (also changes).")] = "read",
    as_json: JsonOpt = False,
) -> None:
    """Create a token and print it once; only its sha256 is stored."""
    try:
        row, plain = _with_session(lambda s: repo.create_token(s, name, scope))
    except repo.RepositoryError as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps({"name": row.name, "scope": row.scope, "token": plain}))
    else:
        typer.echo(plain)
        typer.echo(f"(token {row.name!r}, scope {row.scope}; it is not shown again)", err=True)


@tokens_app.command("list")
def tokens_list(as_json: JsonOpt = False) -> None:
    rows = _with_session(lambda s: [_token_row(t) for t in repo.list_tokens(s)])
    print_rows(rows, ["id", "name", "scope", "created_at", "last_used_at", "revoked_at"], as_json)


@tokens_app.command("revoke")
def tokens_revoke(name: Annotated[str, typer.Argument(help="Token name or id.")]) -> None:
    row = _with_session(lambda s: repo.revoke_token(s, name))
    if row is None:
        raise fail(f"no token {name!r}")
    typer.echo(f"revoked {row.name}")


# --- subscribers ------------------------------------------------------------------------------


def _subscriber_row(s: Any) -> dict[str, Any]:
    return {
        "id": s.id,
        "impu": s.impu,
        "impi": s.impi,
        "realm": s.realm,
        "scscf": s.scscf,
        "barred": s.barred,
        "created_at": s.created_at,
    }


@subscribers_app.command("add")
def subscribers_add(
    impu: Annotated[str, typer.Argument(help="Public identity, e.g. sip:user1_public1@home1.net")],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True)],
    impi: Annotated[str | None, typer.Option(help="Default: the IMPU's user part.")] = None,
    realm: Annotated[str | None, typer.Option(help="Default: the IMPU's domain.")] = None,
    scscf: Annotated[str | None, typer.Option(help="Assigned S-CSCF URI.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Provision a user; only HA1 = MD5(impi:realm:password) is stored."""
    try:
        row = _with_session(
            lambda s: _subscriber_row(
                repo.add_subscriber(s, impu, password, impi=impi, realm=realm, scscf=scscf)
            )
        )
    except repo.RepositoryError as exc:
        raise fail(str(exc)) from None
    print_record(row, as_json)


@subscribers_app.command("list")
def subscribers_list(as_json: JsonOpt = False) -> None:
    def query(s: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = repo.list_subscribers(s, limit=repo.MAX_LIMIT, cursor=cursor)
            rows += [_subscriber_row(x) for x in page.items]
            if page.next_cursor is None:
                return rows
            cursor = page.next_cursor

    print_rows(_with_session(query), ["id", "impu", "impi", "realm", "barred"], as_json)


@subscribers_app.command("remove")
def subscribers_remove(impu: Annotated[str, typer.Argument(help="IMPU or id.")]) -> None:
    if not _with_session(lambda s: repo.remove_subscriber(s, impu)):
        raise fail(f"no subscriber {impu!r}")
    typer.echo(f"removed {impu}")


# --- conferences and participants -------------------------------------------------------------


def _conference_row(c: Conference, count: int) -> dict[str, Any]:
    return {
        "id": c.id,
        "uri": c.uri,
        "state": c.state,
        "participants": count,
        "locked": c.locked,
        "initiator": c.initiator,
        "mrfp_node": c.mrfp_node,
        "created_at": c.created_at,
        "ended_at": c.ended_at,
    }


def _participant_row(p: Participant) -> dict[str, Any]:
    return {
        "id": p.id,
        "uri": p.uri,
        "status": p.status,
        "muted": p.muted,
        "joined_at": p.joined_at,
        "left_at": p.left_at,
        "disconnection_method": p.disconnection_method,
    }


@conferences_app.command("list")
def conferences_list(
    state: Annotated[str | None, typer.Option(help="active or ended")] = None,
    limit: Annotated[int, typer.Option(min=1, max=repo.MAX_LIMIT)] = repo.DEFAULT_LIMIT,
    as_json: JsonOpt = False,
) -> None:
    """Newest first."""

    def query(s: Any) -> list[dict[str, Any]]:
        page = repo.list_conferences(s, state=state, limit=limit)
        counts = repo.participant_counts(s, [c.id for c in page.items])
        return [_conference_row(c, counts[c.id]) for c in page.items]

    columns = ["id", "uri", "state", "participants", "locked", "created_at"]
    print_rows(_with_session(query), columns, as_json)


@conferences_app.command("show")
def conferences_show(conference_id: str, as_json: JsonOpt = False) -> None:
    """One conference with its participants."""

    def query(s: Any) -> dict[str, Any] | None:
        conf = repo.get_conference(s, conference_id)
        if conf is None:
            return None
        row = _conference_row(conf, repo.participant_counts(s, [conf.id])[conf.id])
        parts = repo.list_participants(s, conf.id, limit=repo.MAX_LIMIT).items
        row["participant_list"] = [_participant_row(p) for p in parts]
        events = repo.list_events(s, conference_id=conf.id, limit=repo.MAX_LIMIT).items
        row["event_log"] = [
            {"at": e.at, "kind": e.kind, "participant_id": e.participant_id, "actor": e.actor}
            for e in events
        ]
        return row

    row = _with_session(query)
    if row is None:
        raise fail(f"no conference {conference_id}")
    if as_json:
        for key in ("participant_list", "event_log"):
            row[key] = [{k: _jsonable(v) for k, v in item.items()} for item in row[key]]
        print_record(row, True)
        return
    parts = row.pop("participant_list")
    events = row.pop("event_log")
    print_record(row, False)
    typer.echo("")
    print_rows(parts, ["id", "uri", "status", "muted", "joined_at", "left_at"], False)
    typer.echo("")
    print_rows(events, ["at", "kind", "participant_id", "actor"], False)


def _api_call(
    method: str, path: str, token: str | None, api_url: str | None, body: Any = None
) -> httpx.Response:
    """Call the running server; REST errors become a readable message and exit code 1."""
    if not token:
        raise fail(f"an admin token is needed: --token or ${TOKEN_ENV}", 2)
    if api_url is None:
        api = STATE.settings.api
        host = "127.0.0.1" if api.host in ("0.0.0.0", "::") else api.host
        api_url = f"http://{host}:{api.port}"
    try:
        resp = httpx.request(
            method,
            api_url.rstrip("/") + "/api/v1" + path,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30.0,
        )
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach the MRFC-AS at {api_url}: {exc}") from None
    if resp.status_code >= 400:
        try:
            err = resp.json()["error"]
            message = f"{err['message']} ({resp.status_code} {err['code']})"
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {resp.status_code}"
        raise fail(message)
    return resp


@conferences_app.command("end")
def conferences_end(conference_id: str, token: TokenOpt = None, api_url: ApiUrlOpt = None) -> None:
    """End a live conference: BYE to everyone, final NOTIFY to subscribers."""
    _api_call("DELETE", f"/conferences/{conference_id}", token, api_url)
    typer.echo(f"ended {conference_id}")


@participants_app.command("list")
def participants_list(conference_id: str, as_json: JsonOpt = False) -> None:
    def query(s: Any) -> list[dict[str, Any]] | None:
        if repo.get_conference(s, conference_id) is None:
            return None
        parts = repo.list_participants(s, conference_id, limit=repo.MAX_LIMIT).items
        return [_participant_row(p) for p in parts]

    rows = _with_session(query)
    if rows is None:
        raise fail(f"no conference {conference_id}")
    print_rows(rows, ["id", "uri", "status", "muted", "joined_at", "left_at"], as_json)


@participants_app.command("kick")
def participants_kick(
    conference_id: str, participant_id: str, token: TokenOpt = None, api_url: ApiUrlOpt = None
) -> None:
    """BYE the participant; subscribers see disconnection-method="booted"."""
    path = f"/conferences/{conference_id}/participants/{participant_id}"
    _api_call("DELETE", path, token, api_url)
    typer.echo(f"kicked {participant_id}")


@participants_app.command("mute")
def participants_mute(
    conference_id: str,
    participant_id: str,
    unmute: Annotated[bool, typer.Option("--unmute", help="Unmute instead.")] = False,
    token: TokenOpt = None,
    api_url: ApiUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Mute (or --unmute) at the MRFP; shown in the conference-info."""
    resp = _api_call(
        "PATCH",
        f"/conferences/{conference_id}/participants/{participant_id}",
        token,
        api_url,
        {"muted": not unmute},
    )
    if as_json:
        typer.echo(json.dumps(resp.json(), indent=2))
    else:
        typer.echo(f"{'unmuted' if unmute else 'muted'} {participant_id}")


# --- running the service ----------------------------------------------------------------------


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "at": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log.format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log.level)


# SERVE: the MRFC-AS process: SIP focus, MRFP control and REST API in one event loop.
@app.command("serve")
def serve() -> None:
    """Run the MRFC-AS: the SIP focus, the MRFP control and the REST API."""
    from app.main import main as run_server

    settings = STATE.settings
    setup_logging(settings)
    raise typer.Exit(run_server(settings))


# STACK: `make run` — the whole local stack (CSCFs, MRFC-AS, media processor).
def _port_opt(name: str, default: int, what: str) -> Any:
    return typer.Option(
        f"--{name}-port",
        envvar=f"MRFC_STACK_{name.upper().replace('-', '_')}_PORT",
        min=1,
        max=65535,
        help=f"{what} (default {default}, or from the configuration).",
        show_default=False,
    )


VarDirOpt = Annotated[
    Path,
    typer.Option("--var-dir", envvar="MRFC_STACK_VAR_DIR", help="Database, logs, run files."),
]


@app.command("stack")
def stack(
    var_dir: VarDirOpt = Path("var"),
    pcscf: Annotated[int | None, _port_opt("pcscf", 5060, "P-CSCF SIP port")] = None,
    icscf: Annotated[int | None, _port_opt("icscf", 4060, "I-CSCF SIP port")] = None,
    scscf: Annotated[int | None, _port_opt("scscf", 6060, "S-CSCF SIP port")] = None,
    sip: Annotated[int | None, _port_opt("sip", 5070, "MRFC-AS SIP port")] = None,
    api: Annotated[int | None, _port_opt("api", 8080, "REST API port")] = None,
    mrfp_sip: Annotated[int | None, _port_opt("mrfp-sip", 5080, "media processor SIP port")] = None,
    esl: Annotated[int | None, _port_opt("esl", 8021, "media processor ESL port")] = None,
    rtp_ports: Annotated[
        str, typer.Option("--rtp-ports", envvar="MRFC_STACK_RTP_PORTS", help="low-high")
    ] = "20000-29999",
    auth: Annotated[
        bool,
        typer.Option(
            "--auth/--no-auth", envvar="MRFC_STACK_AUTH", help="Digest auth at the S-CSCF."
        ),
    ] = True,
) -> None:
    """Start the whole local stack: media processor, MRFC-AS, S-/I-/P-CSCF (Ctrl-C stops it)."""
    from app.stack import StackOptions, StackPorts, run_stack

    low, _, high = rtp_ports.partition("-")
    if not (low.isdigit() and high.isdigit() and 1 <= int(low) < int(high) <= 65535):
        raise fail(f"--rtp-ports: not a low-high port range: {rtp_ports!r}", 2)
    given = {
        "pcscf": pcscf, "icscf": icscf, "scscf": scscf, "mrfc_sip": sip, "api": api,
        "mrfp_sip": mrfp_sip, "esl": esl,
    }  # fmt: skip
    explicit = {name for name, value in given.items() if value is not None}
    ports = StackPorts(
        **{name: value for name, value in given.items() if value is not None},
        rtp_first=int(low),
        rtp_last=int(high),
    )
    options = StackOptions(var_dir=var_dir, ports=ports, auth=auth, config=STATE.config)
    raise typer.Exit(run_stack(options, explicit))


# DEMO: `make demo` — a three-party conference against the running stack.
@app.command("demo")
def demo(
    var_dir: VarDirOpt = Path("var"),
    hold: Annotated[
        float, typer.Option(help="Seconds the three stay together before the REST end.")
    ] = 2.0,
) -> None:
    """Three SIPp UEs: user1 creates, user2 joins, user3 is dialed out by REFER; then the
    REST view of the conference and the conference-info NOTIFYs each UE got."""
    from app.demo import DemoError, run_demo
    from app.stack import StackError

    try:
        run_demo(var_dir, hold=hold, echo=typer.echo)
    except (DemoError, StackError) as exc:
        raise fail(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> None:
    app(args=list(argv) if argv is not None else None, prog_name="mrfc")


if __name__ == "__main__":
    main()
