"""SIP URIs and name-addr values (RFC 3261 §19.1, §20.10, §25.1), sans-IO.

`SipUri` keeps the user part and parameter values as they were written (escaped), so a URI
is forwarded unchanged; comparison follows RFC 3261 §19.1.4 (unescaped, case rules).
Other schemes (tel:, urn:, soap.beep:, ...) parse as `AbsoluteUri` and are kept opaque:
RFC 4475 §3.3.2-3.3.4 want them accepted by the parser and rejected by the application.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from app.sip.errors import ParseError

# Character classes checked with one compiled regex each: a C loop instead of a Python
# generator per character (these run for every URI and parameter a message carries).
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+").fullmatch  # RFC 3261 §25.1 token
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*").fullmatch  # RFC 3986 §3.1
# hostname / IPv4address; "_" is not in RFC 3261 §25.1 but appears in container and service
# names, and rejecting a whole message for it helps nobody.
_HOST = re.compile(r"[A-Za-z0-9\-._]+").fullmatch
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+").fullmatch  # IPv6reference content (RFC 5118 §4.10)
# RFC 3261 §25.1: user = 1*( unreserved / escaped / user-unreserved ); ";" is allowed
# (RFC 4475 §3.1.1.9 semiuri), and any printable character but the delimiters is tolerated.
_BAD_URI = re.compile(r"[ \t\r\n<>]").search
_BAD_PARAM_NAME = re.compile(r"[ \t<>\"]").search


def is_token(text: str) -> bool:
    return _TOKEN(text) is not None


def _parse_params(text: str, what: str) -> dict[str, str | None]:
    """`;a=b;c` -> {"a": "b", "c": None}; names lower-cased (RFC 3261 §19.1.4).

    LWS around names and '=' is allowed (RFC 3261 §25.1 SEMI, EQUAL); a value is a token,
    host or quoted-string, so whitespace inside an unquoted value is an error.
    """
    params: dict[str, str | None] = {}
    if not text:
        return params
    names = _PARAM_NAMES
    for item in text.split(";") if '"' not in text else _split_outside_quotes(text, ";"):
        raw_name, eq, value = item.partition("=")
        name = names.get(raw_name)
        if name is None:
            name = _check_param_name(raw_name, item, what)
        if not eq:
            params[name] = None
            continue
        if value[:1] in (" ", "\t") or value[-1:] in (" ", "\t"):
            value = value.strip()
        if (" " in value or "\t" in value) and not (
            len(value) > 1 and value[0] == '"' and value[-1] == '"'
        ):
            raise ParseError(f"Bad {what} parameter value {item[:40]!r}")
        params[name] = value
    return params


# Raw parameter name -> lower-case name, for names already checked (a few dozen in practice).
_PARAM_NAMES: dict[str, str] = {}


def _check_param_name(raw_name: str, item: str, what: str) -> str:
    if not item:
        raise ParseError(f"Empty {what} parameter")
    name = raw_name.strip()
    if not name or _BAD_PARAM_NAME(name):
        raise ParseError(f"Bad {what} parameter {item[:40]!r}")
    if len(_PARAM_NAMES) < 4096:
        _PARAM_NAMES[raw_name] = name.lower()
    return name.lower()


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    """`text.split(sep)`, except inside quoted strings."""
    parts: list[str] = []
    start = i = 0
    while True:
        at = text.find(sep, i)
        if at < 0:
            break
        quote = text.find('"', i, at)
        if quote >= 0:
            i = _closing_quote(text, quote) + 1  # the separator may be inside: look again
            continue
        parts.append(text[start:at])
        start = i = at + 1
    parts.append(text[start:])
    return parts


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def split_hostport(text: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]`, `[v6]:port` (RFC 5118 §4.4: the port is outside [])."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ParseError(f"Unterminated IPv6 reference {text!r}")
        host = text[: end + 1]
        if not _IPV6(host[1:-1]):
            raise ParseError(f"Bad IPv6 reference {host!r}")
        rest = text[end + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise ParseError(f"Garbage after IPv6 reference {text!r}")
        return host, _parse_port(rest[1:])
    if text.count(":") > 1:
        raise ParseError(f"IPv6 address without [] in {text[:60]!r}")  # RFC 5118 §4.2
    host, colon, port = text.partition(":")
    if not _HOST(host):
        # RFC 5118 §4.2: an IPv6 address without [] is a parse error.
        raise ParseError(f"Bad host {text!r}")
    return host, (_parse_port(port) if colon else None)


def _parse_port(text: str) -> int:
    port = int(text) if text.isdigit() and len(text) <= 5 else 65536
    if port > 65535:
        raise ParseError(f"Bad port {text[:12]!r}")
    return port


@dataclass(slots=True)
class SipUri:
    """sip: or sips: URI. `user` stays escaped as received; `params` names are lower-case."""

    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    scheme: str = "sip"
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str | None = None  # the raw `?...` part, escaped, never turned into real headers

    @classmethod
    def parse(cls, text: str) -> SipUri:
        scheme, colon, rest = text.partition(":")
        scheme_l = scheme.lower()
        if not colon or scheme_l not in ("sip", "sips"):
            raise ParseError(f"Not a SIP URI: {text!r}")
        if not rest or _BAD_URI(rest):
            raise ParseError(f"Bad characters in URI {text!r}")
        user: str | None = None
        password: str | None = None
        # '@' cannot appear raw after the host (params and headers escape it), while the user
        # part may hold '?' and ';' (RFC 4475 §3.1.1.2, §3.1.1.9): split at the last '@' first.
        at = rest.rfind("@")
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1 :]
            # Blanks and <> were refused above and '@' cannot remain: only '"' is left.
            if not userinfo or '"' in userinfo:
                raise ParseError(f"Bad user part in {text!r}")
            # The password separator ':' cannot be in the user (RFC 3261 §25.1 user-unreserved).
            user, pcolon, pw = userinfo.partition(":")
            password = pw if pcolon else None
        headers: str | None = None
        qmark = rest.find("?")
        if qmark >= 0:
            rest, headers = rest[:qmark], rest[qmark + 1 :]
        hostport, _, paramtext = rest.partition(";")
        host, port = split_hostport(hostport)
        return cls(host, user, password, port, scheme_l, _parse_params(paramtext, "URI"), headers)

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        out.append(format_params(self.params))
        if self.headers is not None:
            out.append("?" + self.headers)
        return "".join(out)

    @property
    def user_unescaped(self) -> str | None:
        return None if self.user is None else unquote(self.user)

    @property
    def host_lower(self) -> str:
        return self.host.lower()

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def lr(self) -> bool:
        return "lr" in self.params

    @property
    def aor(self) -> str:
        """Address of record: scheme:user@host, no port or parameters (RFC 3261 §10.3 step 5)."""
        user = self.user_unescaped
        return f"{self.scheme}:{user}@{self.host.lower()}" if user else f"{self.scheme}:{self.host}"

    def copy(self) -> SipUri:
        return SipUri(
            self.host,
            self.user,
            self.password,
            self.port,
            self.scheme,
            dict(self.params),
            self.headers,
        )

    def equivalent(self, other: SipUri) -> bool:
        """RFC 3261 §19.1.4 comparison (the parts a UA needs: user, host, port, key params)."""
        if self.scheme != other.scheme or self.user_unescaped != other.user_unescaped:
            return False
        if self.host.lower() != other.host.lower() or self.port != other.port:
            return False
        for name in ("transport", "user", "ttl", "method", "maddr"):
            a, b = self.params.get(name), other.params.get(name)
            if (a is None) != (b is None) or (a and b and a.lower() != b.lower()):
                return False
        return True


@dataclass(slots=True)
class AbsoluteUri:
    """Any other scheme, kept as written (tel:, urn:, im:, soap.beep: ...)."""

    text: str

    @property
    def scheme(self) -> str:
        return self.text.partition(":")[0].lower()

    def __str__(self) -> str:
        return self.text


Uri = SipUri | AbsoluteUri


def parse_uri(text: str) -> Uri:
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME(scheme) or not rest:
        raise ParseError(f"Bad URI {text!r}")
    if scheme.lower() in ("sip", "sips"):
        return SipUri.parse(text)
    if _BAD_URI(text):
        raise ParseError(f"Bad characters in URI {text!r}")
    return AbsoluteUri(text)


@dataclass(slots=True)
class NameAddr:
    """name-addr / addr-spec with header parameters (From, To, Contact, Route, Refer-To ...).

    RFC 3261 §20.10: without <>, the parameters after the URI are header parameters, not URI
    parameters; `bracketed` remembers the form so it is written back the same way.
    """

    uri: Uri
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    bracketed: bool = True

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        text = text.strip()
        if not text:
            raise ParseError("Empty address")
        display: str | None = None
        if text[0] == '"':
            end = _closing_quote(text, 0)
            display = text[1:end]
            text = text[end + 1 :].lstrip()
            if not text.startswith("<"):
                raise ParseError("Quoted display name without <URI>")
        lt = text.find("<")
        if lt >= 0:
            if display is None and lt > 0:
                words = text[:lt].strip()
                # RFC 3261 §25.1: an unquoted display name is a sequence of tokens.
                if words and not all(is_token(w) for w in words.split()):
                    raise ParseError(f"Unquoted display name {words!r} has non-token characters")
                display = words or None
            gt = text.find(">", lt)
            if gt < 0:
                raise ParseError("Unterminated <URI>")
            uri = parse_uri(text[lt + 1 : gt])
            rest = text[gt + 1 :].strip()
            if rest and not rest.startswith(";"):
                raise ParseError(f"Garbage after <URI>: {rest!r}")
            return cls(uri, display, _parse_params(rest[1:], "header"), True)
        # addr-spec: the URI ends at the first ';' (RFC 3261 §20.10); '?' is not allowed here.
        uritext, _, paramtext = text.partition(";")
        uritext = uritext.strip()
        if "?" in uritext or " " in uritext:
            raise ParseError(f"addr-spec {uritext!r} needs <> around it")
        return cls(parse_uri(uritext), None, _parse_params(paramtext, "header"), False)

    def __str__(self) -> str:
        uri = str(self.uri)
        if self.display_name is not None:
            head = f'"{self.display_name}" <{uri}>'
        elif self.bracketed or (
            isinstance(self.uri, SipUri) and (self.uri.params or self.uri.headers)
        ):
            head = f"<{uri}>"
        else:
            head = uri
        return head + format_params(self.params)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def sip_uri(self) -> SipUri:
        if not isinstance(self.uri, SipUri):
            raise ParseError(f"Not a SIP URI: {self.uri}")
        return self.uri

    def copy(self) -> NameAddr:
        uri = self.uri.copy() if isinstance(self.uri, SipUri) else AbsoluteUri(self.uri.text)
        return NameAddr(uri, self.display_name, dict(self.params), self.bracketed)


def _closing_quote(text: str, start: int) -> int:
    """Index of the '"' closing the quoted string that opens at `start` (RFC 3261 §25.1:
    a backslash escapes the next character, so a quote preceded by an odd run of backslashes
    is part of the string)."""
    i = start + 1
    while True:
        end = text.find('"', i)
        if end < 0:
            raise ParseError("Unterminated quoted string")
        k = end - 1
        while k > start and text[k] == "\\":
            k -= 1
        if (end - 1 - k) % 2 == 0:
            return end
        i = end + 1
