"""SIP URIs and name-addr values (RFC 3261 §19.1, §20.10, §25.1), sans-IO.

`SipUri` keeps the user part and parameter values as they were written (escaped), so a URI
is forwarded unchanged; comparison follows RFC 3261 §19.1.4 (unescaped, case rules).
Other schemes (tel:, urn:, soap.beep:, ...) parse as `AbsoluteUri` and are kept opaque:
RFC 4475 §3.3.2-3.3.4 want them accepted by the parser and rejected by the application.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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
    if " " not in text and "\t" not in text and '"' not in text:
        # The usual shape (`;branch=z9hG4bK..;rport`, `;tag=..`, `;lr`): no blank and no
        # quote anywhere, so no value can hold a forbidden blank and ';' splits plainly.
        for item in text.split(";"):
            raw_name, eq, value = item.partition("=")
            name = names.get(raw_name)
            if name is None:
                name = _check_param_name(raw_name, item, what)
            params[name] = value if eq else None
        return params
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
    if not params:
        return ""
    return "".join([f";{k}" if v is None else f";{k}={v}" for k, v in params.items()])


def split_hostport(text: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]`, `[v6]:port` (RFC 5118 §4.4: the port is outside [])."""
    found = _HOSTPORTS.get(text)
    if found is None:
        found = _split_hostport(text)
        if len(_HOSTPORTS) >= 1024:
            _HOSTPORTS.clear()  # bounded; a busy focus refills it at once
        _HOSTPORTS[text] = found
    return found


# Valid host[:port] texts already split: a focus sees the same few peers (its CSCFs, its
# media processors, its own address) in nearly every Via and URI. Errors are not kept.
_HOSTPORTS: dict[str, tuple[str, int | None]] = {}


def _split_hostport(text: str) -> tuple[str, int | None]:
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


# Copy-on-write states of a parameter dict (or of a NameAddr's URI object): copies share what
# none of them has handed out, so a copy costs one small object instead of a dict and a URI
# per level. Reading the public `params` (or `uri`) hands the object out: it is unshared first
# and never shared again, since the caller may change it at any time.
_PRIVATE = 0  # owned by this object alone, never handed out
_SHARED = 1  # shared with copies: read-only for all of them
_EXPOSED = 2  # handed out (or given to the constructor): owned alone, may change any time

_new = object.__new__


class SipUri:
    """sip: or sips: URI. `user` stays escaped as received; `params` names are lower-case.

    Behaves as a mutable dataclass (fields `host`, `user`, `password`, `port`, `scheme`,
    `params`, `headers`; equality by value) but keeps its scalar fields in one tuple, shares
    its parameters with copies until one of them hands its dict out (see `_SHARED`), and
    remembers its text form until it changes: dialogs copy and write the same few URIs
    over and over. Three slots, so that a copy is three stores.
    """

    __slots__ = ("_params", "_s", "_text")
    __match_args__ = ("host", "user", "password", "port", "scheme", "params", "headers")
    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass with eq is

    _s: tuple[str, str | None, str | None, int | None, str, str | None]
    _params: dict[str, str | None]
    # The text form (while the fields say it), None (not written yet), or False: the dict
    # is handed out (_EXPOSED), so the text is never kept. Until then the dict may be shared
    # with copies (_SHARED), which is why handing it out copies it first.
    _text: str | bool | None

    def __init__(
        self,
        host: str,
        user: str | None = None,
        password: str | None = None,
        port: int | None = None,
        scheme: str = "sip",
        params: dict[str, str | None] | None = None,
        headers: str | None = None,
    ) -> None:
        self._s = (host, user, password, port, scheme, headers)
        if params is None:
            self._params = {}
            self._text = None
        else:
            self._params = params  # the caller keeps it, as a dataclass field would be kept
            self._text = False

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
        uri: SipUri = _new(cls)
        uri._s = (host, user, password, port, scheme_l, headers)
        uri._params = _parse_params(paramtext, "URI") if paramtext else {}
        uri._text = None
        return uri

    def _format(self) -> str:
        host, user, password, port, scheme, headers = self._s
        if user is None:
            out = f"{scheme}:{host}"
        elif password is None:
            out = f"{scheme}:{user}@{host}"
        else:
            out = f"{scheme}:{user}:{password}@{host}"
        if port is not None:
            out = f"{out}:{port}"
        if self._params:
            out += format_params(self._params)
        if headers is not None:
            out = f"{out}?{headers}"
        return out

    def __str__(self) -> str:
        text = self._text
        if text:
            return text  # type: ignore[return-value]  # a str (True is never stored)
        if text is None:
            text = self._text = self._format()
            return text
        return self._format()

    def __repr__(self) -> str:
        host, user, password, port, scheme, headers = self._s
        return (
            f"SipUri(host={host!r}, user={user!r}, password={password!r}, port={port!r}, "
            f"scheme={scheme!r}, params={self._params!r}, headers={headers!r})"
        )

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, SipUri)
        return self._s == other._s and self._params == other._params

    # -- fields ------------------------------------------------------------------------------

    def _replace(self, index: int, value: str | int | None) -> None:
        s = list(self._s)
        s[index] = value
        self._s = tuple(s)  # type: ignore[assignment]  # one field changed, same shape
        if self._text is not False:
            self._text = None

    @property
    def host(self) -> str:
        return self._s[0]

    @host.setter
    def host(self, value: str) -> None:
        self._replace(0, value)

    @property
    def user(self) -> str | None:
        return self._s[1]

    @user.setter
    def user(self, value: str | None) -> None:
        self._replace(1, value)

    @property
    def password(self) -> str | None:
        return self._s[2]

    @password.setter
    def password(self, value: str | None) -> None:
        self._replace(2, value)

    @property
    def port(self) -> int | None:
        return self._s[3]

    @port.setter
    def port(self, value: int | None) -> None:
        self._replace(3, value)

    @property
    def scheme(self) -> str:
        return self._s[4]

    @scheme.setter
    def scheme(self, value: str) -> None:
        self._replace(4, value)

    @property
    def headers(self) -> str | None:
        """The raw `?...` part, escaped, never turned into real headers."""
        return self._s[5]

    @headers.setter
    def headers(self, value: str | None) -> None:
        self._replace(5, value)

    @property
    def params(self) -> dict[str, str | None]:
        # Handed out: the caller may change it whenever it likes (see _EXPOSED). It may be
        # shared with copies, so it is this URI's own copy that goes out.
        if self._text is not False:
            self._params = dict(self._params)
            self._text = False
        return self._params

    @params.setter
    def params(self, value: dict[str, str | None]) -> None:
        self._params = value
        self._text = False

    # -- derived -----------------------------------------------------------------------------

    @property
    def user_unescaped(self) -> str | None:
        user = self._s[1]
        return None if user is None else unquote(user)

    @property
    def host_lower(self) -> str:
        return self._s[0].lower()

    def get_param(self, name: str) -> str | None:
        """A parameter's value (None if absent or valueless), read without handing out the
        dict: reading `params` makes it this URI's own copy and stops remembering the text."""
        return self._params.get(name)

    def has_param(self, name: str) -> bool:
        return name in self._params

    @property
    def transport(self) -> str | None:
        value = self._params.get("transport")
        return value.lower() if value else None

    @property
    def lr(self) -> bool:
        return "lr" in self._params

    @property
    def aor(self) -> str:
        """Address of record: scheme:user@host, no port or parameters (RFC 3261 §10.3 step 5)."""
        user = self.user_unescaped
        host, scheme = self._s[0], self._s[4]
        return f"{scheme}:{user}@{host.lower()}" if user else f"{scheme}:{host}"

    def copy(self) -> SipUri:
        """An independent copy: changing either never shows in the other."""
        new: SipUri = _new(SipUri)
        new._s = self._s
        text = self._text
        if text is False:
            new._params = dict(self._params)
            new._text = None
        else:
            new._params = self._params  # shared until one of them hands it out
            if text is None:
                # Written once for every copy to come (a dialog copies its remote target for
                # each request it sends, and writes each copy into a request line).
                text = self._text = self._format()
            new._text = text
        return new

    def equivalent(self, other: SipUri) -> bool:
        """RFC 3261 §19.1.4 comparison (the parts a UA needs: user, host, port, key params)."""
        a_host, _, _, a_port, a_scheme, _ = self._s
        b_host, _, _, b_port, b_scheme, _ = other._s
        if a_scheme != b_scheme or self.user_unescaped != other.user_unescaped:
            return False
        if a_host.lower() != b_host.lower() or a_port != b_port:
            return False
        mine, theirs = self._params, other._params
        for name in ("transport", "user", "ttl", "method", "maddr"):
            a, b = mine.get(name), theirs.get(name)
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


# URIs by their text. The address headers of different dialogs differ in their tags (header
# parameters) but name the same few URIs: the users, the conference and factory URIs, the
# CSCFs, the media processors. Handed out as copies, which share the parameters and the text
# until one is changed (see _SHARED); values that fail to parse are not kept and fail again.
_URIS: dict[str, Uri] = {}


def parse_uri_copy(text: str) -> Uri:
    """`parse_uri(text)`, from a bounded memo: a fresh copy, equal to a fresh parse."""
    found = _URIS.get(text)
    if found is None:
        found = parse_uri(text)
        if len(_URIS) >= 1024:
            _URIS.clear()  # crude but bounded: a busy focus refills it at once
        _URIS[text] = found
    return found.copy() if isinstance(found, SipUri) else AbsoluteUri(found.text)


class NameAddr:
    """name-addr / addr-spec with header parameters (From, To, Contact, Route, Refer-To ...).

    RFC 3261 §20.10: without <>, the parameters after the URI are header parameters, not URI
    parameters; `bracketed` remembers the form so it is written back the same way.

    Behaves as a mutable dataclass (fields `uri`, `display_name`, `params`, `bracketed`);
    copies share their URI object and parameters until one hands them out (see `_SHARED`),
    and the text form is remembered together with the URI text it was built from.
    """

    __slots__ = ("_bracketed", "_display", "_params", "_pstate", "_text", "_uri", "_ustate")
    __match_args__ = ("uri", "display_name", "params", "bracketed")
    __hash__ = None  # type: ignore[assignment]

    _uri: Uri
    _ustate: int
    _display: str | None
    _params: dict[str, str | None]
    _pstate: int
    _bracketed: bool
    # (text of the URI, text of the whole value): valid while the URI still writes that
    # same string object (a changed URI writes a new one) and nothing here changed.
    _text: tuple[str, str] | None

    def __init__(
        self,
        uri: Uri,
        display_name: str | None = None,
        params: dict[str, str | None] | None = None,
        bracketed: bool = True,
    ) -> None:
        self._uri = uri
        self._ustate = _EXPOSED  # the caller keeps it, as a dataclass field would be kept
        self._display = display_name
        if params is None:
            self._params = {}
            self._pstate = _PRIVATE
        else:
            self._params = params
            self._pstate = _EXPOSED
        self._bracketed = bracketed
        self._text = None

    @classmethod
    def _make(
        cls, uri: Uri, display: str | None, params: dict[str, str | None], bracketed: bool
    ) -> NameAddr:
        """A value whose parts nobody else holds (the parser's)."""
        new: NameAddr = _new(cls)
        new._uri = uri
        new._ustate = _PRIVATE
        new._display = display
        new._params = params
        new._pstate = _PRIVATE
        new._bracketed = bracketed
        new._text = None
        return new

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        # From and To values end with a tag after a part that repeats across dialogs (the
        # conference URI, the focus's and the media processor's addresses): that part is
        # parsed once (see _ADDR_HEADS) and the tag added to a copy of it.
        at = text.rfind(";tag=")
        if at > 0:
            tag = text[at + 5 :]
            if (
                " " not in tag
                and ";" not in tag
                and '"' not in tag
                and "<" not in tag
                and ">" not in tag
                and tag.isprintable()
            ):
                head_text = text[:at]
                head = _ADDR_HEADS.get(head_text)
                if head is None:
                    head = _addr_head(head_text)
                if head is not None:
                    params = head._params.copy()
                    params["tag"] = tag
                    return cls._make(_copy_uri(head._uri), head._display, params, head._bracketed)
        return cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> NameAddr:
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
            uri = parse_uri_copy(text[lt + 1 : gt])
            rest = text[gt + 1 :]
            if not rest:
                return cls._make(uri, display, {}, True)
            rest = rest.strip()
            if rest and rest[0] != ";":
                raise ParseError(f"Garbage after <URI>: {rest!r}")
            return cls._make(uri, display, _parse_params(rest[1:], "header"), True)
        # addr-spec: the URI ends at the first ';' (RFC 3261 §20.10); '?' is not allowed here.
        uritext, _, paramtext = text.partition(";")
        uritext = uritext.strip()
        if "?" in uritext or " " in uritext:
            raise ParseError(f"addr-spec {uritext!r} needs <> around it")
        return cls._make(parse_uri_copy(uritext), None, _parse_params(paramtext, "header"), False)

    def __str__(self) -> str:
        uri = str(self._uri)
        cached = self._text
        if cached is not None and cached[0] is uri:
            return cached[1]
        if self._display is not None:
            head = f'"{self._display}" <{uri}>'
        elif self._bracketed or (
            isinstance(self._uri, SipUri) and (self._uri._params or self._uri._s[5])
        ):
            head = f"<{uri}>"
        else:
            head = uri
        text = head + format_params(self._params) if self._params else head
        if self._pstate != _EXPOSED:
            self._text = (uri, text)
        return text

    def __repr__(self) -> str:
        return (
            f"NameAddr(uri={self._uri!r}, display_name={self._display!r}, "
            f"params={self._params!r}, bracketed={self._bracketed!r})"
        )

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, NameAddr)
        return (self._uri, self._display, self._params, self._bracketed) == (
            other._uri,
            other._display,
            other._params,
            other._bracketed,
        )

    # -- fields ------------------------------------------------------------------------------

    @property
    def uri(self) -> Uri:
        # Handed out: the caller may change it, so it must be this value's own from now on.
        if self._ustate != _EXPOSED:
            if self._ustate == _SHARED:
                self._uri = _copy_uri(self._uri)
            self._ustate = _EXPOSED
        return self._uri

    @uri.setter
    def uri(self, value: Uri) -> None:
        self._uri = value
        self._ustate = _EXPOSED

    @property
    def display_name(self) -> str | None:
        return self._display

    @display_name.setter
    def display_name(self, value: str | None) -> None:
        self._display = value
        self._text = None

    @property
    def params(self) -> dict[str, str | None]:
        if self._pstate != _EXPOSED:
            if self._pstate == _SHARED:
                self._params = dict(self._params)
            self._pstate = _EXPOSED
            self._text = None
        return self._params

    @params.setter
    def params(self, value: dict[str, str | None]) -> None:
        self._params = value
        self._pstate = _EXPOSED
        self._text = None

    @property
    def bracketed(self) -> bool:
        return self._bracketed

    @bracketed.setter
    def bracketed(self, value: bool) -> None:
        self._bracketed = value
        self._text = None

    # -- derived -----------------------------------------------------------------------------

    @property
    def tag(self) -> str | None:
        return self._params.get("tag")

    def get_param(self, name: str) -> str | None:
        """A header parameter's value (None if absent or valueless), read without handing
        out the dict (see SipUri.get_param)."""
        return self._params.get(name)

    def has_param(self, name: str) -> bool:
        return name in self._params

    @property
    def sip_uri(self) -> SipUri:
        uri = self.uri
        if not isinstance(uri, SipUri):
            raise ParseError(f"Not a SIP URI: {uri}")
        return uri

    def copy(self) -> NameAddr:
        """An independent copy: changing either never shows in the other."""
        new: NameAddr = _new(NameAddr)
        if self._ustate == _EXPOSED:
            new._uri = _copy_uri(self._uri)
            new._ustate = _PRIVATE
        else:
            new._uri = self._uri
            new._ustate = self._ustate = _SHARED
        new._display = self._display
        if self._pstate == _EXPOSED:
            new._params = dict(self._params)
            new._pstate = _PRIVATE
        else:
            new._params = self._params
            new._pstate = self._pstate = _SHARED
        new._bracketed = self._bracketed
        if self._text is None and self._pstate != _EXPOSED:
            str(self)  # written once for every copy to come, as for SipUri.copy
        new._text = self._text
        return new


# The part of a name-addr before its last `;tag=`, parsed (never handed out: NameAddr.parse
# copies its URI and parameters). A part is kept only if it parsed, is printable and does not
# end in ';', and a tag is added only if it is plain (printable; no blank, ';', quote, '<' or
# '>'): then `head;tag=<tag>` parses to exactly `head`'s value plus that header parameter.
# The first '<', the '>' after it and any quoted display name all lie in the head, so the
# URI and display name are the head's; the parameters after them split as the head's did,
# plus one more (or, repeated, the tag's value replaced in its place, as the whole's parse).
_ADDR_HEADS: dict[str, NameAddr] = {}
_ADDR_HEADS_MAX = 1024


# Heads seen once: a head is parsed and kept the second time it comes, so an address that
# appears in one dialog only (a UE's Contact, a one-off caller) costs no extra parse.
_ADDR_HEADS_SEEN: set[str] = set()


def _addr_head(text: str) -> NameAddr | None:
    """Parse and remember the part before a tag (see _ADDR_HEADS) the second time it is
    seen; None the first time, or if it does not qualify or does not parse (the whole is then
    parsed, and refused with its own reason)."""
    if text not in _ADDR_HEADS_SEEN:
        if len(_ADDR_HEADS_SEEN) >= _ADDR_HEADS_MAX:
            _ADDR_HEADS_SEEN.clear()
        _ADDR_HEADS_SEEN.add(text)
        return None
    if not text.isprintable() or text.rstrip().endswith(";"):
        return None
    try:
        head = NameAddr._parse(text)
    except ParseError:
        return None
    if len(_ADDR_HEADS) >= _ADDR_HEADS_MAX:
        _ADDR_HEADS.clear()  # bounded; the busy addresses come back at once
    _ADDR_HEADS[text] = head
    return head


def _copy_uri(uri: Uri) -> Uri:
    return uri.copy() if isinstance(uri, SipUri) else AbsoluteUri(uri.text)


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
