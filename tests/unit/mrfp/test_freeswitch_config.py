"""The drop-in FreeSWITCH configuration (freeswitch/) is well-formed and says what the
MRFC-AS relies on."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parents[3] / "freeswitch"
XML_FILES = sorted(CONF.rglob("*.xml"))


def params(elem: ET.Element) -> dict[str, str]:
    return {p.get("name", ""): p.get("value", "") for p in elem.iter("param")}


def test_there_are_files() -> None:
    names = {p.relative_to(CONF).as_posix() for p in XML_FILES}
    assert {
        "sip_profiles/mrfp.xml",
        "dialplan/mrfc.xml",
        "autoload_configs/conference.mrfc.xml",
        "autoload_configs/event_socket.conf.xml",
        "autoload_configs/acl.mrfc.xml",
        "vars.mrfc.xml",
    } <= names
    assert (CONF / "README.md").is_file()


@pytest.mark.parametrize("path", XML_FILES, ids=lambda p: p.relative_to(CONF).as_posix())
def test_well_formed(path: Path) -> None:
    root = ET.parse(path).getroot()
    assert root.tag in ("include", "configuration")


def test_sip_profile() -> None:
    profile = ET.parse(CONF / "sip_profiles/mrfp.xml").getroot().find("profile")
    assert profile is not None and profile.get("name") == "mrfp"
    p = params(profile)
    assert p["sip-port"] == "$${mrfp_sip_port}"
    assert p["enable-100rel"] == "true"
    assert p["apply-inbound-acl"] == "mrfc_as"
    assert p["context"] == "mrfp"
    vars_text = (CONF / "vars.mrfc.xml").read_text()
    assert "mrfp_sip_port=5080" in vars_text
    assert "mrfc_esl_port=8021" in vars_text


def test_dialplan_puts_x_conference_into_conference() -> None:
    ctx = ET.parse(CONF / "dialplan/mrfc.xml").getroot().find("context")
    assert ctx is not None and ctx.get("name") == "mrfp"
    default = ctx.find("extension[@name='mrfc-conference']")
    assert default is not None
    cond = default.find("condition")
    assert cond is not None and cond.get("field") == "${sip_h_X-Conference}"
    actions = [(a.get("application"), a.get("data")) for a in cond.iter("action")]
    assert ("set", "mrfc_participant=${sip_h_X-Participant}") in actions
    assert actions[-1] == ("conference", "$1@mrfc")
    # the id expression refuses what could change the conference application's argument
    import re

    expr = re.compile(cond.get("expression", ""))
    assert expr.match("a1B2-c3_d4")
    for bad in ("room@other", "room+flags{mute}", "a b", ""):
        assert not expr.match(bad)


def test_conference_profiles() -> None:
    root = ET.parse(CONF / "autoload_configs/conference.mrfc.xml").getroot()
    profiles = {p.get("name"): params(p) for p in root.iter("profile")}
    assert {n: p["rate"] for n, p in profiles.items()} == {
        "mrfc": "8000",
        "mrfc-16k": "16000",
        "mrfc-48k": "48000",
    }
    for p in profiles.values():
        assert p["interval"] == "20"
        assert p["verbose-events"] == "true"
        assert int(p["energy-level"]) > 0


def test_event_socket_and_acl() -> None:
    es = params(ET.parse(CONF / "autoload_configs/event_socket.conf.xml").getroot())
    assert es["password"] == "$${mrfc_esl_password}"
    assert es["apply-inbound-acl"] == "mrfc_esl"
    assert es["listen-ip"] == "$${mrfc_esl_ip}"
    acl = ET.parse(CONF / "autoload_configs/acl.mrfc.xml").getroot()
    lists = {lst.get("name"): lst.get("default") for lst in acl.iter("list")}
    assert lists == {"mrfc_as": "deny", "mrfc_esl": "deny"}
