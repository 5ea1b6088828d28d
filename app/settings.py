"""The one configuration of an MRFC-AS process: a TOML file plus `MRFC_<SECTION>_<KEY>` overrides.

Everything is validated when the process starts, so a typo stops the start with a message that
names the option (`sip.listen_port`, or the environment variable it came from) instead of
surfacing later as a strange SIP failure. Every option is listed in docs/configuration.md.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

CONFIG_ENV = "MRFC_CONFIG"
ENV_PREFIX = "MRFC_"

# A SIP or SIPS URI, loosely: the SIP parser checks the details; here we only catch typos such
# as a missing scheme, which would otherwise make every request to the factory go unmatched.
_SIP_URI = re.compile(r"^sips?:[^\s@]+(@[^\s]+)?$", re.IGNORECASE)
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")


class SettingsError(Exception):
    """The configuration is unusable; the message names each bad option."""


class _Section(BaseModel):
    # Unknown keys are errors: a misspelt option must not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_sip_uri(value: str) -> str:
    if not _SIP_URI.match(value):
        raise ValueError(f"not a sip: or sips: URI: {value!r}")
    return value


def _check_host(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOSTNAME.match(value):
            raise ValueError(f"not an IP address or host name: {value!r}") from None
    return value


class SipSettings(_Section):
    """The focus's SIP side (RFC 3261 transport on UDP and TCP)."""

    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=5070, ge=1, le=65535)
    # The host put into Via/Contact/Record-Route; empty means listen_host.
    advertised_host: str = ""
    # The S-CSCF the focus sends dial-out INVITEs through (RFC 3261 §8.1.2 pre-loaded Route).
    outbound_proxy: str = "sip:127.0.0.1:6060;lr"
    # Only these networks may send SIP to the focus (the S-CSCFs and the MRFP nodes).
    trusted_peers: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    untrusted_action: Literal["reject", "drop"] = "reject"

    _host = field_validator("listen_host")(_check_host)

    @field_validator("advertised_host")
    @classmethod
    def _advertised(cls, value: str) -> str:
        return _check_host(value) if value else value

    @field_validator("outbound_proxy")
    @classmethod
    def _proxy(cls, value: str) -> str:
        return _check_sip_uri(value) if value else value

    @field_validator("trusted_peers")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"not an address or CIDR network: {net!r}") from None
        return value

    @model_validator(mode="after")
    def _need_advertised(self) -> SipSettings:
        # A wildcard address cannot go into a Contact header: peers could not reach it.
        if not self.advertised_host and self.listen_host in ("0.0.0.0", "::"):
            raise ValueError("advertised_host is required when listen_host is a wildcard")
        return self

    @property
    def contact_host(self) -> str:
        return self.advertised_host or self.listen_host

    def trusted_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(n, strict=False) for n in self.trusted_peers]


class TimerSettings(_Section):
    """RFC 3261 §17 timers and RFC 4028 session-timer defaults."""

    t1_ms: int = Field(default=500, ge=10, le=60_000)
    t2_ms: int = Field(default=4000, ge=10, le=600_000)
    t4_ms: int = Field(default=5000, ge=10, le=600_000)
    # RFC 4028 §4: Session-Expires we ask for and the smallest we accept (never below 90 s).
    session_expires: int = Field(default=1800, ge=90, le=86_400)
    min_se: int = Field(default=90, ge=90, le=86_400)

    @model_validator(mode="after")
    def _order(self) -> TimerSettings:
        if self.t2_ms < self.t1_ms:
            raise ValueError("t2_ms must be at least t1_ms (RFC 3261 §17.1.2.2)")
        if self.session_expires < self.min_se:
            raise ValueError("session_expires must be at least min_se (RFC 4028 §4)")
        return self


class ConferenceSettings(_Section):
    """Conference factory and the conference URIs it hands out (3GPP TS 24.147 §5.3.1)."""

    factory_uris: tuple[str, ...] = ("sip:conf-factory1@mrfc1.home1.net",)
    uri_domain: str = "mrfc1.home1.net"
    max_participants: int = Field(default=16, ge=1, le=10_000)

    @field_validator("factory_uris")
    @classmethod
    def _factories(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one factory URI is needed")
        for uri in value:
            _check_sip_uri(uri)
        return value

    _domain = field_validator("uri_domain")(_check_host)


class MrfpNode(_Section):
    """One media processor: SIP for the media legs, ESL for control."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    sip_host: str = "127.0.0.1"
    sip_port: int = Field(default=5080, ge=1, le=65535)
    esl_host: str = "127.0.0.1"
    esl_port: int = Field(default=8021, ge=1, le=65535)
    # SecretStr: shows as '**********' in repr, str() and logs.
    esl_password: SecretStr = SecretStr("ClueCon")

    _hosts = field_validator("sip_host", "esl_host")(_check_host)


class MrfpSettings(_Section):
    nodes: tuple[MrfpNode, ...] = (MrfpNode(name="mrfp1"),)

    @field_validator("nodes")
    @classmethod
    def _unique(cls, value: tuple[MrfpNode, ...]) -> tuple[MrfpNode, ...]:
        if not value:
            raise ValueError("at least one MRFP node is needed")
        names = [n.name for n in value]
        if len(set(names)) != len(names):
            raise ValueError("MRFP node names must be unique")
        return value


class DatabaseSettings(_Section):
    # SQLite is the embedded default; postgresql://user:pass@host/db works too (psycopg 3).
    url: str = "sqlite:///var/mrfc.db"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^(sqlite|postgres|postgresql)(\+\w+)?://", value):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return value

    def safe_url(self) -> str:
        """The URL with any password masked, for logs."""
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", self.url)

    def __repr_args__(self) -> Any:
        # The URL can carry the database password; never print it.
        return [("url", self.safe_url())]


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)

    _host = field_validator("host")(_check_host)


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class Settings(_Section):
    sip: SipSettings = SipSettings()
    timers: TimerSettings = TimerSettings()
    conference: ConferenceSettings = ConferenceSettings()
    mrfp: MrfpSettings = MrfpSettings()
    database: DatabaseSettings = DatabaseSettings()
    api: ApiSettings = ApiSettings()
    log: LogSettings = LogSettings()


SECTIONS: tuple[str, ...] = tuple(Settings.model_fields)


def _env_overrides(env: Mapping[str, str]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """`MRFC_SIP_LISTEN_PORT=5071` -> {"sip": {"listen_port": "5071"}}; also option -> env name.

    List values come as JSON (`["a","b"]`) or comma-separated; MRFP nodes as JSON only.
    """
    found: dict[str, dict[str, Any]] = {}
    origin: dict[str, str] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("_")
        # Other MRFC_* variables (MRFC_TOKEN for the CLI) are not settings.
        if section not in SECTIONS or not key:
            continue
        value: Any = raw
        stripped = raw.strip()
        if stripped.startswith(("[", "{")):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError:
                value = raw
        elif _is_list_field(section, key):
            value = [item.strip() for item in raw.split(",") if item.strip()]
        found.setdefault(section, {})[key] = value
        origin[f"{section}.{key}"] = name
    return found, origin


def _is_list_field(section: str, key: str) -> bool:
    model = Settings.model_fields[section].annotation
    assert isinstance(model, type) and issubclass(model, BaseModel)
    field = model.model_fields.get(key)
    return field is not None and "tuple" in str(field.annotation)


def _format_errors(exc: ValidationError, origin: Mapping[str, str], source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        option = ".".join(str(p) for p in err["loc"]) or "(top level)"
        where = ""
        for opt, env_name in origin.items():
            if option == opt or option.startswith(opt + "."):
                where = f" (from {env_name})"
        # Secrets are never echoed: ESL passwords, and the database URL (it may hold one).
        secret = "password" in option or option == "database.url"
        value = "" if "input" not in err or secret else f", got {err['input']!r}"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {option}{where}: {msg}{value}")
    return "\n".join(lines)


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (`path`, else $MRFC_CONFIG, else defaults only), then env overrides.

    Raises SettingsError naming every bad option.
    """
    env = os.environ if env is None else env
    if path is None:
        path = env.get(CONFIG_ENV) or None
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise SettingsError(f"configuration file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"configuration file {path} is not valid TOML: {exc}") from None
    overrides, origin = _env_overrides(env)
    for section, values in overrides.items():
        current = data.get(section)
        if current is None:
            current = data[section] = {}
        if not isinstance(current, dict):
            raise SettingsError(f"invalid configuration ({source}): {section} must be a table")
        current.update(values)
    if origin:
        source += " + environment"
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(_format_errors(exc, origin, source)) from None
