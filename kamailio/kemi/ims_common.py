"""What the three CSCF routing scripts share: defines, header parsing, HSS reads, loop guard.

Runs inside Kamailio's embedded Python (app_python3), so it is stdlib-only. Everything that
decides is a plain function or takes the `KSR` object as an argument, so the tests drive it
with a fake `KSR` (tests/unit/kamailio/fake_ksr.py).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

# The `KSR` module app_python3 exports (or the tests' fake): typed loosely on purpose, its
# functions are generated from C and carry no annotations.
Ksr = Any

# --- defines -----------------------------------------------------------------------------


def define(ksr: Ksr, name: str, default: str) -> str:
    """The value of `#!define NAME` (overridable with `-A`), without the string quotes."""
    value = ksr.pv.get(f"$def({name})")
    if value is None:
        return default
    text = str(value).strip()
    if text in ("", "<null>"):
        return default
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return text


def define_flag(ksr: Ksr, name: str, default: bool) -> bool:
    value = define(ksr, name, "1" if default else "0").lower()
    return value not in ("0", "no", "off", "false", "")


def define_list(ksr: Ksr, name: str, default: str) -> list[str]:
    """A whitespace- or comma-separated define, e.g. HOME_DOMAINS "home1.net home2.net"."""
    return [item for item in re.split(r"[\s,]+", define(ksr, name, default)) if item]


# --- header values ------------------------------------------------------------------------


def split_header_values(value: str) -> list[str]:
    """Split a comma-separated header (RFC 3261 §7.3.1) outside quotes and <...>."""
    parts: list[str] = []
    current: list[str] = []
    in_quotes = in_angle = escaped = False
    for ch in value:
        if escaped:
            escaped = False
        elif in_quotes and ch == "\\":
            escaped = True
        elif ch == '"':
            in_quotes = not in_quotes
        elif not in_quotes and ch == "<":
            in_angle = True
        elif not in_quotes and ch == ">":
            in_angle = False
        elif ch == "," and not in_quotes and not in_angle:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


@dataclass(frozen=True)
class NameAddr:
    """One name-addr / addr-spec value: the URI and the header parameters after it."""

    uri: str
    params: dict[str, str]


def _parse_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in text.split(";"):
        name, _, val = item.strip().partition("=")
        if name:
            params[name.strip().lower()] = val.strip().strip('"')
    return params


def parse_name_addr(value: str) -> NameAddr:
    """`"Bob" <sip:b@x;lr>;expires=60` -> uri `sip:b@x;lr`, params {expires: 60}."""
    value = value.strip()
    start = value.find("<")
    if start >= 0:
        end = value.find(">", start)
        if end < 0:
            return NameAddr(value[start + 1 :].strip(), {})
        return NameAddr(value[start + 1 : end].strip(), _parse_params(value[end + 1 :]))
    # RFC 3261 §20.10: without <>, parameters after the addr-spec are header parameters.
    uri, _, rest = value.partition(";")
    return NameAddr(uri.strip(), _parse_params(rest))


@dataclass(frozen=True)
class UriParts:
    scheme: str
    user: str
    host: str
    port: int | None
    params: dict[str, str]


_URI_RE = re.compile(
    r"^(?P<scheme>sips?):(?:(?P<user>[^@]*)@)?(?P<hostport>[^;?]*)(?P<rest>.*)$", re.I
)


def parse_uri(uri: str) -> UriParts | None:
    """A sip:/sips: URI split into parts, or None for anything else (tel:, garbage)."""
    match = _URI_RE.match(uri.strip())
    if not match:
        return None
    hostport = match["hostport"]
    port: int | None = None
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        host = f"[{host}]"
        if tail.startswith(":") and tail[1:].isdigit():
            port = int(tail[1:])
    else:
        host, _, port_text = hostport.partition(":")
        if port_text:
            if not port_text.isdigit():
                return None
            port = int(port_text)
    if not host:
        return None
    params_text = match["rest"].split("?", 1)[0]
    return UriParts(
        match["scheme"].lower(), match["user"] or "", host.lower(), port, _parse_params(params_text)
    )


def aor(uri: str) -> str | None:
    """The address-of-record form `sip:user@host` an IMPU is stored as (RFC 3261 §10.3)."""
    parts = parse_uri(uri)
    if parts is None or not parts.user:
        return None
    return f"sip:{parts.user}@{parts.host}"


def header_values(ksr: Ksr, name: str) -> list[str]:
    """Every value of header `name`, across repeated headers and comma lists."""
    count = ksr.pv.get(f"$hdrc({name})") or 0
    values: list[str] = []
    for index in range(int(count)):
        raw = ksr.pv.get(f"$(hdr({name})[{index}])")
        if raw:
            values.extend(split_header_values(str(raw)))
    return values


def via_branch(via_value: str) -> str:
    """The branch parameter of the first Via value (RFC 3261 §8.1.1.7)."""
    first = split_header_values(via_value)[0] if via_value else ""
    return _parse_params(first.partition(";")[2]).get("branch", "")


# --- loop detection -----------------------------------------------------------------------


def loop_key(
    method: str, ruri: str, routes: str, call_id: str, cseq: str, from_tag: str, source: str
) -> str:
    """The RFC 3261 §16.3 item 4 loop-detection input, hashed.

    A spiral (the same request coming back with another Request-URI or Route set) has another
    key; a loop (the very same request again, in a new transaction) has the same key and
    another branch. The previous hop is part of the key because the S-CSCF -> I-CSCF -> S-CSCF
    spiral of a request from an AS returns with the same Request-URI and no Route: only its
    sender differs. A real loop still repeats the same sender on its next round.
    """
    material = "\n".join((method, ruri, routes, call_id, cseq, from_tag, source))
    return hashlib.sha1(material.encode("utf-8", "replace")).hexdigest()


def is_loop(stored_branch: str | None, branch: str) -> bool:
    """Seen this key before under another top-Via branch -> a loop, not a retransmission."""
    return bool(stored_branch) and stored_branch != branch


# --- HSS (the project's database, read with sqlops) ---------------------------------------


class HssError(Exception):
    """The HSS database could not be read: answer 500, never guess."""


@dataclass(frozen=True)
class Subscriber:
    impu: str
    impi: str
    realm: str
    ha1: str
    scscf: str | None
    barred: bool


@dataclass(frozen=True)
class FilterCriterion:
    priority: int
    method: str | None
    request_uri_regex: str
    as_uri: str
    default_handling: str


def sql_literal(value: str) -> str:
    """A single-quoted SQL string literal (sqlops has no bound parameters)."""
    if "\x00" in value:
        raise ValueError("NUL in SQL literal")
    return "'" + value.replace("'", "''") + "'"


def match_ifc(criteria: list[FilterCriterion], method: str, ruri: str) -> FilterCriterion | None:
    """The first criterion (lowest priority number, TS 29.228 §B.2.2) matching the request."""
    for criterion in sorted(criteria, key=lambda c: c.priority):
        if criterion.method and criterion.method.upper() != method.upper():
            continue
        try:
            if re.search(criterion.request_uri_regex, ruri):
                return criterion
        except re.error:
            # A bad row must not break routing for everyone else.
            continue
    return None


class Hss:
    """Reads of the `subscribers` and `filter_criteria` tables through sqlops."""

    def __init__(self, ksr: Ksr, con: str = "hss") -> None:
        self.ksr = ksr
        self.con = con

    def _rows(self, sql: str, ncols: int) -> list[list[str | None]]:
        res = "hssr"
        # sqlops returns 0 for a successful SELECT; only < 0 is an error.
        if self.ksr.sqlops.sql_query(self.con, sql, res) < 0:
            raise HssError(sql)
        try:
            count = int(self.ksr.pv.get(f"$dbr({res}=>rows)") or 0)
            rows: list[list[str | None]] = []
            for r in range(count):
                row: list[str | None] = []
                for c in range(ncols):
                    value = self.ksr.pv.get(f"$dbr({res}=>[{r},{c}])")
                    row.append(None if value is None or value == "<null>" else str(value))
                rows.append(row)
            return rows
        finally:
            self.ksr.sqlops.sql_result_free(res)

    def subscriber(self, impu: str) -> Subscriber | None:
        rows = self._rows(
            "SELECT impu, impi, realm, ha1, scscf, barred FROM subscribers "
            f"WHERE impu = {sql_literal(impu)}",
            6,
        )
        if not rows:
            return None
        impu_v, impi, realm, ha1, scscf, barred = rows[0]
        return Subscriber(
            impu=impu_v or impu,
            impi=impi or "",
            realm=realm or "",
            ha1=(ha1 or "").lower(),
            scscf=scscf or None,
            barred=(barred or "0") not in ("0", "f", "false", ""),
        )

    def implicit_set(self, impi: str) -> list[str]:
        """Unbarred IMPUs sharing one IMPI: registered together (TS 23.228 §4.3.3.4)."""
        rows = self._rows(
            f"SELECT impu FROM subscribers WHERE impi = {sql_literal(impi)} AND barred = 0 "
            "ORDER BY id",
            1,
        )
        return [r[0] for r in rows if r[0]]

    def assign_scscf(self, impu: str, scscf: str) -> None:
        """Record the serving S-CSCF; keeps an earlier assignment made by another I-CSCF."""
        sql = (
            f"UPDATE subscribers SET scscf = {sql_literal(scscf)} "
            f"WHERE impu = {sql_literal(impu)} AND scscf IS NULL"
        )
        if self.ksr.sqlops.sql_query(self.con, sql, "hssw") < 0:
            raise HssError(sql)
        self.ksr.sqlops.sql_result_free("hssw")

    def filter_criteria(self) -> list[FilterCriterion]:
        rows = self._rows(
            "SELECT priority, method, request_uri_regex, as_uri, default_handling "
            "FROM filter_criteria ORDER BY priority, id",
            5,
        )
        return [
            FilterCriterion(
                priority=int(r[0] or 0),
                method=r[1] or None,
                request_uri_regex=r[2] or "",
                as_uri=r[3] or "",
                default_handling=(r[4] or "continue").lower(),
            )
            for r in rows
        ]


# --- the request prelude every role runs ---------------------------------------------------


def reply(ksr: Ksr, code: int, reason: str) -> int:
    """Answer statefully when a transaction exists, else statelessly; ends the route."""
    if ksr.tm.t_newtran() > 0:
        ksr.tm.t_reply(code, reason)
    else:
        ksr.sl.sl_send_reply(code, reason)
    return 1


def relay(ksr: Ksr) -> int:
    if ksr.tm.t_relay() < 0:
        ksr.sl.sl_reply_error()
    return 1


def prelude(ksr: Ksr) -> bool:
    """Checks every request passes first; False when it has been answered or dropped.

    Order follows the usual proxy checks of RFC 3261 §16.3: well-formedness, Max-Forwards,
    then CANCEL/retransmission matching, then loop detection.
    """
    # sanity replies to (or drops) what it rejects; Kamailio keeps running either way.
    if ksr.sanity.sanity_check_defaults() < 1:
        return False
    # RFC 3261 §16.3 item 3: Max-Forwards 0 -> 483 (OPTIONS may be answered, we do not).
    if ksr.maxfwd.process_maxfwd(70) < 0:
        ksr.sl.sl_send_reply(483, "Too Many Hops")
        return False
    method = ksr.pv.get("$rm") or ""
    if method == "CANCEL":
        # RFC 3261 §16.10: forward a CANCEL only along a matching INVITE transaction.
        if ksr.tm.t_check_trans() > 0:
            relay(ksr)
        return False
    if ksr.siputils.has_totag() > 0:
        return True  # in-dialog requests are neither loops nor new transactions here
    if method == "ACK":
        # ACK of a non-2xx final response: tm absorbs it (hop-by-hop, RFC 3261 §17.1.1.3).
        ksr.tm.t_check_trans()
        return False
    # A retransmission of a request with a transaction gets the last reply again.
    if ksr.tm.t_check_trans() == 0:
        return False
    routes = ",".join(header_values(ksr, "Route"))
    key = loop_key(
        method,
        ksr.pv.get("$ru") or "",
        routes,
        ksr.pv.get("$ci") or "",
        ksr.pv.get("$cs") or "",
        ksr.pv.get("$ft") or "",
        f"{ksr.pv.get('$pr')}:{ksr.pv.get('$si')}:{ksr.pv.get('$sp')}",
    )
    branch = via_branch(ksr.pv.get("$hdr(Via)") or "")
    if is_loop(ksr.htable.sht_get("loop", key), branch):
        ksr.sl.sl_send_reply(482, "Loop Detected")
        return False
    ksr.htable.sht_sets("loop", key, branch)
    return True


def route_in_dialog(ksr: Ksr) -> int:
    """Requests with a To tag follow their Route set (RFC 3261 §16.12, loose routing)."""
    if ksr.rr.loose_route() > 0:
        return relay(ksr)
    if (ksr.pv.get("$rm") or "") == "ACK":
        if ksr.tm.t_check_trans() > 0:
            return relay(ksr)
        return 1
    ksr.sl.sl_send_reply(404, "Not Here")
    return 1


def top_route(ksr: Ksr) -> UriParts | None:
    """The URI of the topmost Route value, if any."""
    routes = header_values(ksr, "Route")
    if not routes:
        return None
    return parse_uri(parse_name_addr(routes[0]).uri)


def is_own_route(route: UriParts | None, ip: str, port: int, user: str) -> bool:
    """Does the Route name this element with the given marker user part (term/orig)?"""
    if route is None:
        return False
    return route.user == user and route.host == ip.lower() and (route.port or 5060) == port
