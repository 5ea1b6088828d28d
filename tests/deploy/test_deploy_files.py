"""deploy/: systemd units pass `systemd-analyze verify`, the Compose example has the expected
services wired to each other, the Kamailio env files name only real defines, and the role
launcher really starts a CSCF from environment variables."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from app.settings import load_settings
from tests.support.kamailio import kamailio_available
from tests.support.ports import free_port

PROJECT = Path(__file__).resolve().parents[2]
DEPLOY = PROJECT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


def readme_defines() -> set[str]:
    text = (PROJECT / "kamailio" / "README.md").read_text()
    return set(re.findall(r"^\| `([A-Z_]+)` \|", text, re.M))


def env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            out[name] = value
    return out


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_systemd_unit_verifies(unit: Path, tmp_path: Path) -> None:
    # The units name /opt/mrfc; verify checks that ExecStart exists, so point it at this tree.
    name = unit.name.replace("@.service", "@scscf.service")
    text = unit.read_text().replace("/opt/mrfc", str(PROJECT))
    (tmp_path / name).write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"./{name}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Unknown keys are only warnings (exit 0), so any output counts as a failure too.
    problems = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if name in line or "Unknown" in line or "not executable" in line
    ]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr


def test_compose_services_and_wiring() -> None:
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "freeswitch", "mrfc-as", "pcscf", "icscf", "scscf"}
    address = {
        name: svc["networks"]["ims"]["ipv4_address"]
        for name, svc in services.items()
        if "networks" in svc
    }
    for role in ("pcscf", "icscf", "scscf"):
        env = services[role]["environment"]
        assert services[role]["command"] == [role]
        assert env["LISTEN_IP"] == address[role]
        assert set(env) <= readme_defines(), set(env) - readme_defines()
    assert services["pcscf"]["environment"]["ICSCF_URI"] == f"sip:{address['icscf']}:4060"
    assert services["icscf"]["environment"]["SCSCF_URI"] == f"sip:{address['scscf']}:6060"
    ds = (DEPLOY / "compose" / "dispatcher.list").read_text()
    assert f"sip:{address['mrfc-as']}:5070" in ds
    # The MRFC-AS's variables are valid settings (the same validation as at its start).
    mrfc_env = {k: str(v) for k, v in services["mrfc-as"]["environment"].items()}
    settings = load_settings(None, mrfc_env)
    assert settings.sip.outbound_proxy == f"sip:{address['scscf']}:6060;lr"
    assert settings.database.url.startswith("postgresql://")
    assert f"@{address['postgres']}/" in settings.database.url
    for dockerfile in ("Dockerfile", "Dockerfile.kamailio"):
        assert (DEPLOY / "compose" / dockerfile).exists()


@pytest.mark.parametrize("role", ["pcscf", "icscf", "scscf"])
def test_kamailio_env_files_name_real_defines(role: str) -> None:
    env = env_file(DEPLOY / "kamailio" / f"{role}.env")
    assert set(env) <= readme_defines(), set(env) - readme_defines()
    assert "LISTEN_IP" in env and "LISTEN_PORT" in env


@pytest.mark.interop
@pytest.mark.skipif(not kamailio_available(), reason="kamailio not installed")
def test_kamailio_role_launcher_starts_a_role(tmp_path: Path) -> None:
    hss = tmp_path / "hss.db"
    hss.touch()
    ds = tmp_path / "dispatcher.list"
    ds.write_text("1 sip:127.0.0.1:5070 0 100\n")
    ctl = f"unix:{tmp_path}/ctl"
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "RUNTIME_DIRECTORY": str(tmp_path),
        "LISTEN_IP": "127.0.0.1",
        "LISTEN_PORT": str(free_port()),
        "ICSCF_URI": "sip:127.0.0.1:4060",
        "HSS_SQLCON": f"hss=>sqlite:///{hss}",
        "DS_LIST_FILE": str(ds),
        "CTL_SOCKET": ctl,
        "KAMAILIO_WORKERS": "1",
    }
    log = (tmp_path / "scscf.log").open("wb")
    proc = subprocess.Popen(
        [str(DEPLOY / "kamailio" / "kamailio-role"), "scscf"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            done = subprocess.run(
                ["kamcmd", "-s", ctl, "core.uptime"], capture_output=True, timeout=5, check=False
            )
            if done.returncode == 0:
                break
            assert proc.poll() is None, (tmp_path / "scscf.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "scscf.log").read_text()[-3000:]
            time.sleep(0.1)
        # The defines reached Kamailio: it listens where LISTEN_IP/LISTEN_PORT say.
        listening = (tmp_path / "scscf.log").read_text()
        assert f"udp: 127.0.0.1:{env['LISTEN_PORT']}" in listening, listening
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
