"""The conference flow through three real Kamailio CSCFs to the real MRFC-AS.

UE (SIPp) -> P-CSCF -> S-CSCF --iFC--> MRFC-AS -> built-in media processor, and back:
user1 and user2 register with digest authentication, user1 creates a conference through the
factory URI and subscribes to it in the same dialog, user2 joins by the conference URI, and
the conference NOTIFYs reach user1 along the Record-Route set. The HSS is the MRFC-AS's own
SQLite database, provisioned through the repository the REST API and the CLI use.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from app.db import make_engine, make_session_factory, migrate, repo, session_scope
from app.focus.conference_info import ConferenceView
from tests.support.kamailio import Stack as CscfStack
from tests.support.kamailio import kamailio_available, start_stack
from tests.support.ports import free_port
from tests.support.sipp import (
    SippResult,
    header_values,
    run_sipp,
    sipp_available,
    start_sipp,
)
from tests.support.stack import (
    PROJECT,
    Process,
    start_builtin_mrfp,
    wait_ready,
    wait_readyz,
    write_config,
)

pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (kamailio_available() and sipp_available()), reason="kamailio/sipp not installed"
    ),
]

IMS = Path(__file__).parent / "scenarios" / "ims"
REGISTER = Path(__file__).parent / "kamailio" / "scenarios" / "register.xml"
USER1 = "sip:user1_public1@home1.net"
USER2 = "sip:user2_public1@home2.net"
FACTORY = "sip:conf-factory1@mrfc1.home1.net"
# The stack's iFC row: the factory URI and every conference URI go to the AS (dispatcher set 1).
IFC_REGEX = r"^sips?:conf-[^@]*@mrfc1\.home1\.net"


@dataclass
class Env:
    base: Path
    database: Path
    cscf: CscfStack
    mrfc: Process
    mrfp: Process
    api_port: int

    @property
    def pcscf(self) -> str:
        return f"127.0.0.1:{self.cscf.pcscf.port}"

    def logs(self) -> str:
        return (
            self.cscf.logs()
            + f"\n===== mrfc\n{self.mrfc.output()[-6000:]}"
            + f"\n===== mrfp\n{self.mrfp.output()[-3000:]}"
        )


def provision(database: Path) -> None:
    """Schema plus the HSS rows the CSCFs read (kamailio/README.md: subscribers, iFC)."""
    url = f"sqlite:///{database}"
    migrate(url)
    engine = make_engine(url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            for impu in (USER1, USER2):
                repo.add_subscriber(session, impu, "demo")
            repo.add_filter_criterion(
                session, priority=10, request_uri_regex=IFC_REGEX, as_uri="dispatcher:1"
            )
    finally:
        engine.dispose()


def start_mrfc(base: Path, config: Path) -> Process:
    log = base / "mrfc.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.main", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=PROJECT,
            env={k: v for k, v in os.environ.items() if not k.startswith("MRFC_")},
        )
    return Process("mrfc", proc, log)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("cscf_focus")
    database = base / "mrfc.db"
    provision(database)
    mrfp, mrfp_sip, esl = start_builtin_mrfp(base)
    mrfc: Process | None = None
    try:
        sip_port, api_port = free_port(), free_port()
        with start_stack(
            base, hss_db=f"sqlite:///{database}", as_uris=[f"sip:127.0.0.1:{sip_port}"]
        ) as cscf:
            config = base / "mrfc.toml"
            write_config(
                config,
                sip_port=sip_port,
                api_port=api_port,
                mrfp_sip_port=mrfp_sip,
                esl_port=esl,
                database=database,
            )
            # Dial-outs and any request of the focus toward a user go through the S-CSCF, which
            # knows the AS by the address listed in its dispatcher list (kamailio/README.md).
            config.write_text(
                config.read_text().replace(
                    'outbound_proxy = ""', f'outbound_proxy = "{cscf.scscf.uri};lr"'
                )
            )
            # In-dialog requests target the focus's Contact, the conference URI (RFC 4579 §5.1):
            # the S-CSCF routes it to the AS by its filter criteria, without DNS.
            mrfc = start_mrfc(base, config)
            wait_ready(mrfc)
            wait_readyz(f"http://127.0.0.1:{api_port}")
            e = Env(base, database, cscf, mrfc, mrfp, api_port)
            for impu in (USER1, USER2):
                result = register(e, impu, ue_port(impu))
                assert result.ok, result.report() + e.logs()
            yield e
            for process in cscf.processes():
                assert process.alive(), f"{process.role} died:\n{process.log()[-3000:]}"
            assert mrfc.proc.poll() is None, mrfc.output()[-3000:]
    finally:
        if mrfc is not None:
            mrfc.stop()
        mrfp.stop()


_UE_PORTS: dict[str, int] = {}


def ue_port(impu: str) -> int:
    """Each UE keeps one port: the P-CSCF knows a registered UE by its address and port."""
    return _UE_PORTS.setdefault(impu, free_port())


def ue_keys(env: Env, impu: str) -> dict[str, str]:
    user, domain = impu[4:].split("@")
    return {"user": user, "domain": domain, "pcscf": env.pcscf}


def register(env: Env, impu: str, port: int) -> SippResult:
    user, domain = impu[4:].split("@")
    return run_sipp(
        REGISTER,
        env.base / f"register_{user}",
        remote=env.pcscf,
        port=port,
        keys={"user": user, "domain": domain, "expires": "600"},
        auth=(user, "demo"),
    )


def wait_for_rows(env: Env, sql: str, want: int, timeout: float = 20.0) -> list[tuple[object, ...]]:
    engine = create_engine(f"sqlite:///{env.database}")
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as conn:
                rows = [tuple(r) for r in conn.execute(text(sql)).fetchall()]
            if len(rows) >= want or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)
    finally:
        engine.dispose()


def test_create_join_and_notify_through_the_cscfs(env: Env) -> None:
    before = {r[0] for r in wait_for_rows(env, "select id from conferences", 0, 0)}
    ue1 = start_sipp(
        IMS / "ue_create_subscribe.xml",
        env.base / "ue1",
        remote=env.pcscf,
        port=ue_port(USER1),
        keys={**ue_keys(env, USER1), "to_uri": FACTORY},
        variables={"hold_ms": "200"},
        timeout=60,
    )
    try:
        # The conference exists once the focus has taken user1's INVITE: read its URI from the
        # MRFC-AS's database, as user2 would learn it from the conference-info.
        rows = wait_for_rows(
            env, "select id, uri, initiator from conferences order by created_at", len(before) + 1
        )
        created = [r for r in rows if r[0] not in before]
        assert created, ue1.wait(1).report() + env.logs()
        conf_id, conf_uri, initiator = created[0]
        # The focus saw the identity the P-CSCF asserted (RFC 3325), not a UE-supplied one.
        assert initiator == USER1
        ue2 = run_sipp(
            IMS / "ue_join.xml",
            env.base / "ue2",
            remote=env.pcscf,
            port=ue_port(USER2),
            keys={**ue_keys(env, USER2), "to_uri": str(conf_uri)},
            variables={"hold_ms": "1000"},
            timeout=40,
        )
        ue1_result = ue1.wait()
    finally:
        ue1.stop()
    assert ue2.ok, ue2.report() + env.logs()
    assert ue1_result.ok, ue1_result.report() + env.logs()

    # user1: 200 with the conference URI as Contact;isfocus, came back through both CSCFs.
    final = next(m for m in ue1_result.received() if m.startswith("SIP/2.0 200") and "INVITE" in m)
    (contact,) = header_values(final, "Contact")
    assert contact == f"<{conf_uri}>;isfocus"
    rr = ",".join(header_values(final, "Record-Route"))
    assert f":{env.cscf.scscf.port};" in rr and f":{env.cscf.pcscf.port};" in rr
    # user2 joined the same conference and left with a BYE along the same path.
    joined = next(m for m in ue2.received() if m.startswith("SIP/2.0 200") and "INVITE" in m)
    assert header_values(joined, "Contact") == [f"<{conf_uri}>;isfocus"]
    assert any(m.startswith("SIP/2.0 200") and "BYE" in m for m in ue2.received())

    # The conference NOTIFYs reached user1 through the CSCFs: applying them in order gives a
    # view where user2 came and went (RFC 4575 §4.1 versions without gaps).
    notifies = ue1_result.received_requests("NOTIFY")
    assert notifies, ue1_result.report()
    view = ConferenceView()
    info = None
    seen_user2 = False
    for notify in notifies:
        assert header_values(notify, "Event") == ["conference"]
        via = ",".join(header_values(notify, "Via"))
        assert f":{env.cscf.pcscf.port}" in via, via
        body = notify.split("\n\n", 1)[1] if "\n\n" in notify else ""
        if not body.strip():
            continue
        info = view.receive(body.encode())
        seen_user2 = seen_user2 or USER2 in info.users
    assert info is not None and seen_user2
    assert USER2 not in info.users or all(
        e.status == "disconnected" for e in info.users[USER2].endpoints.values()
    )

    # The MRFC-AS's record: both took part, both departed, the conference ended with user1.
    parts = wait_for_rows(
        env,
        f"select uri, status, disconnection_method from participants "
        f"where conference_id = '{conf_id}' and status = 'disconnected'",
        2,
    )
    assert sorted((str(p[0]), p[2]) for p in parts) == [
        (USER1, "departed"),
        (USER2, "departed"),
    ]
