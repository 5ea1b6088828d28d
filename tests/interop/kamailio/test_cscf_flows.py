"""Three real Kamailio CSCFs (Python KEMI) driven by SIPp UEs and a SIPp stand-in MRFC-AS.

The HSS is a temporary SQLite file with the project's `subscribers`/`filter_criteria` tables.
"""

from __future__ import annotations

import hashlib
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.kamailio import Stack, kamailio_available, start_role, start_stack
from tests.support.ports import free_port
from tests.support.sipp import (
    SippResult,
    header_values,
    run_sipp,
    sipp_available,
    start_sipp,
)

pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (kamailio_available() and sipp_available()), reason="kamailio/sipp not installed"
    ),
]

SCENARIOS = Path(__file__).parent / "scenarios"
USER1 = "sip:user1_public1@home1.net"
USER2 = "sip:user2_public1@home2.net"
USER3_BARRED = "sip:user3_public1@home1.net"
FACTORY = "sip:conf-factory1@mrfc1.home1.net"
IFC_REGEX = r"^sips?:conf-[^@]*@mrfc1\.home1\.net"

SCHEMA = """
CREATE TABLE subscribers(id INTEGER PRIMARY KEY, impu TEXT NOT NULL UNIQUE,
  impi TEXT NOT NULL, realm TEXT NOT NULL, ha1 TEXT NOT NULL, scscf TEXT,
  barred INTEGER NOT NULL DEFAULT 0,
  created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE filter_criteria(id INTEGER PRIMARY KEY, priority INTEGER NOT NULL, method TEXT,
  request_uri_regex TEXT NOT NULL, as_uri TEXT NOT NULL,
  default_handling TEXT NOT NULL DEFAULT 'continue');
"""


def ha1(impi: str, realm: str, password: str) -> str:
    return hashlib.md5(f"{impi}:{realm}:{password}".encode()).hexdigest()


def make_hss(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    for impu, barred in ((USER1, 0), (USER2, 0), (USER3_BARRED, 1)):
        impi, realm = impu[4:].split("@")
        db.execute(
            "INSERT INTO subscribers(impu, impi, realm, ha1, barred) VALUES (?,?,?,?,?)",
            (impu, impi, realm, ha1(impi, realm, "demo"), barred),
        )
    db.execute(
        "INSERT INTO filter_criteria(priority, method, request_uri_regex, as_uri) "
        "VALUES (10, NULL, ?, 'dispatcher:1')",
        (IFC_REGEX,),
    )
    db.commit()
    db.close()
    return path


@dataclass
class Env:
    stack: Stack
    base: Path
    hss: Path
    as_port: int
    ue1_port: int
    ue2_port: int

    @property
    def pcscf(self) -> str:
        return f"127.0.0.1:{self.stack.pcscf.port}"

    def ue_keys(self, impu: str) -> dict[str, str]:
        user, domain = impu[4:].split("@")
        return {"user": user, "domain": domain, "pcscf": self.pcscf}


def register(env: Env, impu: str, port: int, name: str) -> SippResult:
    user, domain = impu[4:].split("@")
    return run_sipp(
        SCENARIOS / "register.xml",
        env.base / name,
        remote=env.pcscf,
        port=port,
        keys={"user": user, "domain": domain, "expires": "600"},
        auth=(user, "demo"),
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("cscf")
    hss = make_hss(base / "hss.db")
    as_port, dead_as_port = free_port(), free_port()
    # The first AS node never answers: the S-CSCF must fail over to the second.
    as_uris = [f"sip:127.0.0.1:{dead_as_port}", f"sip:127.0.0.1:{as_port}"]
    with start_stack(base, hss_db=f"sqlite:///{hss}", as_uris=as_uris, as_timeout_ms=1000) as st:
        e = Env(st, base, hss, as_port, free_port(), free_port())
        for impu, port, name in ((USER1, e.ue1_port, "reg1"), (USER2, e.ue2_port, "reg2")):
            result = register(e, impu, port, name)
            assert result.ok, result.report() + st.logs()
        yield e
        for process in st.processes():
            assert process.alive(), f"{process.role} died:\n{process.log()[-3000:]}"


def message(
    env: Env, name: str, port: int, from_uri: str, to_uri: str, *,
    route: str | None = None, max_fwd: int = 70, extra: str = "X-Test: none",
    remote: str | None = None,
) -> SippResult:  # fmt: skip
    return run_sipp(
        SCENARIOS / "uac_message.xml",
        env.base / name,
        remote=remote or env.pcscf,
        port=port,
        keys={
            "from_uri": from_uri,
            "to_uri": to_uri,
            "route_hdr": f"Route: <sip:{route};lr>" if route else "X-Route: none",
            "max_fwd": str(max_fwd),
            "extra_hdr": extra,
        },
    )


def final_status(result: SippResult) -> int:
    for msg in result.received():
        if msg.startswith("SIP/2.0 ") and not msg.startswith("SIP/2.0 100"):
            return int(msg.split()[1])
    raise AssertionError("no final response\n" + result.report())


def test_registration_has_service_route_and_path(env: Env) -> None:
    # Registering again refreshes; the 200 carries our Service-Route (RFC 3608) and Path.
    result = register(env, USER1, env.ue1_port, "rereg1")
    assert result.ok, result.report()
    ok = [m for m in result.received() if m.startswith("SIP/2.0 200")][-1]
    routes = header_values(ok, "Service-Route")
    assert routes and f":{env.stack.scscf.port};lr" in routes[0] and "orig@" in routes[0]
    assert any(f"term@127.0.0.1:{env.stack.pcscf.port}" in p for p in header_values(ok, "Path"))
    assert any(USER1 in v for v in header_values(ok, "P-Associated-URI"))


def test_factory_invite_reaches_as_with_asserted_identity(env: Env) -> None:
    uas = start_sipp(SCENARIOS / "as_uas.xml", env.base / "as_invite", port=env.as_port)
    try:
        uac = run_sipp(
            SCENARIOS / "uac_invite.xml",
            env.base / "uac_invite",
            remote=env.pcscf,
            port=env.ue1_port,
            keys={**env.ue_keys(USER1), "to_uri": FACTORY, "ppi": USER1, "pai": USER2},
        )
        as_result = uas.wait()
    finally:
        uas.stop()
    assert uac.ok, uac.report() + env.stack.logs()
    assert as_result.ok, as_result.report()
    invite = as_result.received_requests("INVITE")[0]
    assert invite.startswith(f"INVITE {FACTORY} ")
    # The S-CSCF record-routed after the P-CSCF: its entry is on top (RFC 3261 §16.6 item 4).
    rr = ",".join(header_values(invite, "Record-Route"))
    s_at, p_at = rr.find(f":{env.stack.scscf.port};"), rr.find(f":{env.stack.pcscf.port};")
    assert 0 <= s_at < p_at, rr
    assert header_values(invite, "P-Asserted-Identity") == [f"<{USER1}>"]
    assert header_values(invite, "P-Preferred-Identity") == []
    # The ACK and BYE reached the AS through the same route set.
    assert as_result.received_requests("ACK") and as_result.received_requests("BYE")


def test_refer_reaches_user2_and_notify_comes_back(env: Env) -> None:
    uas = start_sipp(SCENARIOS / "uas_refer.xml", env.base / "uas_refer", port=env.ue2_port)
    try:
        uac = run_sipp(
            SCENARIOS / "uac_refer.xml",
            env.base / "uac_refer",
            remote=env.pcscf,
            port=env.ue1_port,
            keys={**env.ue_keys(USER1), "to_uri": USER2, "refer_to": FACTORY},
        )
        ue2 = uas.wait()
    finally:
        uas.stop()
    assert uac.ok, uac.report() + env.stack.logs()
    assert ue2.ok, ue2.report()
    refer = ue2.received_requests("REFER")[0]
    # The S-CSCF's lookup put the registered contact in the Request-URI.
    assert refer.startswith(f"REFER sip:user2_public1@127.0.0.1:{env.ue2_port} ")
    assert header_values(refer, "P-Asserted-Identity") == [f"<{USER1}>"]
    assert uac.received_requests("NOTIFY")


def test_request_from_as_reaches_registered_user(env: Env) -> None:
    uas = start_sipp(SCENARIOS / "uas_message.xml", env.base / "uas_from_as", port=env.ue2_port)
    try:
        sent = message(
            env, "as_message", env.as_port, FACTORY, USER2,
            remote=f"127.0.0.1:{env.stack.scscf.port}",
        )  # fmt: skip
        ue2 = uas.wait()
    finally:
        uas.stop()
    assert final_status(sent) == 200, sent.report() + env.stack.logs()
    assert ue2.ok and ue2.received_requests("MESSAGE")


def test_spoofed_pai_is_replaced_and_unknown_ppi_gives_default(env: Env) -> None:
    uas = start_sipp(SCENARIOS / "uas_message.xml", env.base / "uas_pai", port=env.ue2_port)
    try:
        sent = message(
            env, "pai_message", env.ue1_port, USER1, USER2, route=env.pcscf,
            extra=f"P-Asserted-Identity: <{USER3_BARRED}>, <sip:boss@home1.net>",
        )  # fmt: skip
        ue2 = uas.wait()
    finally:
        uas.stop()
    assert final_status(sent) == 200, sent.report() + env.stack.logs()
    got = ue2.received_requests("MESSAGE")[0]
    assert header_values(got, "P-Asserted-Identity") == [f"<{USER1}>"]


@pytest.mark.parametrize(
    ("case", "to_uri", "registered", "max_fwd", "expected"),
    [
        ("unregistered", USER2, False, 70, 403),
        ("unknown", "sip:nobody@home1.net", True, 70, 404),
        ("barred", USER3_BARRED, True, 70, 403),
        ("max_forwards", USER2, True, 0, 483),
    ],
)
def test_refusals(
    env: Env, case: str, to_uri: str, registered: bool, max_fwd: int, expected: int
) -> None:
    port = env.ue1_port if registered else free_port()
    result = message(env, f"neg_{case}", port, USER1, to_uri, route=env.pcscf, max_fwd=max_fwd)
    assert final_status(result) == expected, result.report() + env.stack.logs()


def test_barred_identity_cannot_register(env: Env) -> None:
    user, domain = USER3_BARRED[4:].split("@")
    result = run_sipp(
        SCENARIOS / "register_refused.xml",
        env.base / "reg_barred",
        remote=env.pcscf,
        port=free_port(),
        keys={"user": user, "domain": domain},
    )
    assert result.ok, result.report()


def test_unregistered_target_gets_480(env: Env) -> None:
    # Known in the HSS, never registered: the S-CSCF's lookup finds no contact.
    db = sqlite3.connect(env.hss)
    db.execute(
        "INSERT OR IGNORE INTO subscribers(impu, impi, realm, ha1) VALUES (?,?,?,?)",
        ("sip:idle@home1.net", "idle", "home1.net", ha1("idle", "home1.net", "x")),
    )
    db.commit()
    db.close()
    result = message(env, "neg_480", env.ue1_port, USER1, "sip:idle@home1.net", route=env.pcscf)
    assert final_status(result) == 480, result.report() + env.stack.logs()


def test_garbage_does_not_bring_kamailio_down(env: Env) -> None:
    junk = [
        b"\x00\xff\xfe garbage\r\n\r\n",
        b"INVITE sip:x@y SIP/2.0\r\nVia: broken\r\nCSeq: notanumber\r\n\r\n",
        b"REGISTER sip:home1.net SIP/2.0\r\nContent-Length: 99999\r\n\r\nshort",
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for process in env.stack.processes():
            for data in junk:
                sock.sendto(data, ("127.0.0.1", process.port))
    for process in env.stack.processes():
        assert "uptime" in process.kamcmd("core.uptime")
    result = message(env, "after_junk", env.ue1_port, USER1, USER2 + "x", route=env.pcscf)
    assert final_status(result) == 404


def test_loop_is_detected(tmp_path: Path) -> None:
    # A P-CSCF whose "I-CSCF" is itself: the REGISTER comes back unchanged -> 482.
    port = free_port()
    pcscf = start_role(
        "pcscf", tmp_path / "loop", {"ICSCF_URI": f'"sip:127.0.0.1:{port}"'}, port=port
    )
    try:
        user, domain = USER1[4:].split("@")
        result = run_sipp(
            SCENARIOS / "register_refused.xml",
            tmp_path / "loop_sipp",
            remote=f"127.0.0.1:{port}",
            port=free_port(),
            keys={"user": user, "domain": domain},
            timeout=10,
        )
        assert "SIP/2.0 482" in result.trace, result.report() + pcscf.log()
    finally:
        pcscf.stop()
