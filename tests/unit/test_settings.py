"""Configuration: TOML + MRFC_* environment, validated at start with the option named."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import Settings, SettingsError, load_settings

FULL = """
[sip]
listen_host = "0.0.0.0"
listen_port = 5071
advertised_host = "mrfc1.home1.net"
outbound_proxy = "sip:scscf.home1.net:6060;lr"
trusted_peers = ["10.0.0.0/8", "192.0.2.7"]
untrusted_action = "drop"

[timers]
t1_ms = 250
t2_ms = 4000
session_expires = 900

[conference]
factory_uris = ["sip:conf-factory1@mrfc1.home1.net", "sip:conf-factory2@mrfc1.home1.net"]
uri_domain = "conf.example.net"
max_participants = 8

[[mrfp.nodes]]
name = "fs1"
esl_host = "10.0.0.5"
esl_password = "s3cret-esl"

[[mrfp.nodes]]
name = "fs2"
sip_port = 5090

[database]
url = "postgresql://mrfc:dbpass@db.example.net/mrfc"

[api]
port = 8081

[log]
level = "debug"
format = "json"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mrfc.toml"
    path.write_text(text)
    return path


def test_defaults_match_the_conventions() -> None:
    s = load_settings(env={})
    assert s.sip.listen_port == 5070 and s.api.port == 8080
    assert s.conference.factory_uris == ("sip:conf-factory1@mrfc1.home1.net",)
    assert s.conference.uri_domain == "mrfc1.home1.net"
    (node,) = s.mrfp.nodes
    assert (node.sip_port, node.esl_port, node.esl_password.get_secret_value()) == (
        5080,
        8021,
        "ClueCon",
    )
    assert s.database.url.startswith("sqlite:///var/")
    assert s.sip.untrusted_action == "reject"
    assert (s.timers.t1_ms, s.timers.t2_ms, s.timers.t4_ms) == (500, 4000, 5000)


def test_full_file(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, FULL), env={})
    assert s.sip.contact_host == "mrfc1.home1.net"
    assert [str(n) for n in s.sip.trusted_networks()] == ["10.0.0.0/8", "192.0.2.7/32"]
    assert s.sip.untrusted_action == "drop"
    assert [n.name for n in s.mrfp.nodes] == ["fs1", "fs2"]
    assert s.mrfp.nodes[1].sip_port == 5090
    assert s.log.level == "DEBUG" and s.log.format == "json"
    assert len(s.conference.factory_uris) == 2


def test_file_from_env_and_env_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    env = {
        "MRFC_CONFIG": str(path),
        "MRFC_SIP_LISTEN_PORT": "5072",
        "MRFC_SIP_TRUSTED_PEERS": "127.0.0.1, 10.1.0.0/16",
        "MRFC_MRFP_NODES": '[{"name": "only", "esl_port": 8022}]',
        "MRFC_TOKEN": "not a setting",
    }
    s = load_settings(env=env)
    assert s.sip.listen_port == 5072
    assert s.sip.trusted_peers == ("127.0.0.1", "10.1.0.0/16")
    assert [(n.name, n.esl_port) for n in s.mrfp.nodes] == [("only", 8022)]
    assert s.api.port == 8081  # untouched keys keep the file's value


def test_secrets_never_in_repr(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, FULL), env={})
    text = repr(s) + str(s)
    assert "s3cret-esl" not in text and "ClueCon" not in text and "dbpass" not in text
    assert s.database.safe_url() == "postgresql://mrfc:***@db.example.net/mrfc"
    assert s.mrfp.nodes[0].esl_password.get_secret_value() == "s3cret-esl"


@pytest.mark.parametrize(
    ("env", "option"),
    [
        ({"MRFC_SIP_LISTEN_PORT": "70000"}, "sip.listen_port (from MRFC_SIP_LISTEN_PORT)"),
        ({"MRFC_SIP_LISTEN_PORT": "abc"}, "sip.listen_port"),
        ({"MRFC_SIP_UNTRUSTED_ACTION": "ignore"}, "sip.untrusted_action"),
        ({"MRFC_SIP_TRUSTED_PEERS": "10.0.0.0/33"}, "sip.trusted_peers"),
        ({"MRFC_SIP_LISTEN_HOST": "0.0.0.0"}, "sip: "),
        ({"MRFC_SIP_OUTBOUND_PROXY": "scscf:6060"}, "sip.outbound_proxy"),
        ({"MRFC_CONFERENCE_FACTORY_URIS": "conf-factory1@x"}, "conference.factory_uris"),
        ({"MRFC_CONFERENCE_MAX_PARTICIPANTS": "0"}, "conference.max_participants"),
        ({"MRFC_TIMERS_T2_MS": "100"}, "timers: "),
        ({"MRFC_TIMERS_MIN_SE": "60"}, "timers.min_se"),
        ({"MRFC_DATABASE_URL": "mysql://x/y"}, "database.url"),
        ({"MRFC_API_PORT": "-1"}, "api.port"),
        ({"MRFC_LOG_LEVEL": "chatty"}, "log.level"),
        ({"MRFC_LOG_FORMAT": "xml"}, "log.format"),
        ({"MRFC_SIP_LISTEN_PROT": "5070"}, "sip.listen_prot"),
        ({"MRFC_MRFP_NODES": "[]"}, "mrfp.nodes"),
        ({"MRFC_MRFP_NODES": '[{"name": "a"}, {"name": "a"}]'}, "mrfp.nodes"),
        ({"MRFC_MRFP_NODES": '[{"name": "a", "esl_port": 0}]'}, "mrfp.nodes.0.esl_port"),
    ],
)
def test_bad_values_name_the_option(env: dict[str, str], option: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(env=env)
    assert option in str(err.value)


def test_bad_file_values_and_unknown_keys(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"api\.prot"):
        load_settings(write(tmp_path, "[api]\nprot = 1\n"), env={})
    with pytest.raises(SettingsError, match=r"nosuch"):
        load_settings(write(tmp_path, "[nosuch]\nx = 1\n"), env={})
    with pytest.raises(SettingsError, match=r"mrfp\.nodes\.0\.name"):
        load_settings(write(tmp_path, "[[mrfp.nodes]]\nsip_port = 5080\n"), env={})


def test_password_values_are_not_echoed_in_errors() -> None:
    env = {"MRFC_MRFP_NODES": '[{"name": "a", "esl_password": ["leak-me"]}]'}
    with pytest.raises(SettingsError) as err:
        load_settings(env=env)
    assert "mrfp.nodes.0.esl_password" in str(err.value)
    assert "leak-me" not in str(err.value)


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "nope.toml", env={})
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(write(tmp_path, "[sip\n"), env={})


def test_settings_are_immutable() -> None:
    s = Settings()
    with pytest.raises(ValidationError, match="frozen"):
        s.sip.listen_port = 1
