"""Fuzzing the parser: whatever arrives, the only exception is ParseError, and what parses
round-trips.

Three sources: random bytes, the RFC 4475/5118 torture messages mutated byte-wise, and
structurally generated messages (methods, URIs, header values, bodies) that must survive
parse -> serialize -> parse unchanged, over datagrams and streams alike.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.sip.errors import ParseError
from app.sip.message import (
    Message,
    Request,
    Response,
    StreamFramer,
    error_response,
    parse_datagram,
    validate_request,
    validate_response,
)

VECTORS = Path(__file__).resolve().parents[3].parent / "shared" / "vectors"
SEEDS = sorted(VECTORS.glob("rfc*/*.sip")) if VECTORS.is_dir() else []
SEED_BYTES = [p.read_bytes() for p in SEEDS] or [
    b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nl: 0\r\n\r\n"
]

FUZZ = settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Generating whole messages costs far more than parsing them: fewer, to keep the suite fast.
STRUCTURED = settings(FUZZ, max_examples=100)

ACCESSORS = (
    "vias",
    "from_",
    "to",
    "call_id",
    "cseq",
    "contacts",
    "routes",
    "record_routes",
    "path",
    "service_routes",
    "p_asserted_identities",
    "p_preferred_identities",
    "refer_to",
    "referred_by",
    "max_forwards",
    "require",
    "proxy_require",
    "supported",
    "allow",
    "allow_events",
    "rseq",
    "rack",
    "expires",
    "event",
    "subscription_state",
    "session_expires",
    "content_type",
    "content_length",
)


def exercise(data: bytes) -> None:
    """Everything a receiver does with untrusted bytes; only ParseError may come out."""
    try:
        msg = parse_datagram(data)
    except ParseError as exc:
        assert isinstance(exc.reason, str) and 100 <= exc.status <= 699
        resp = error_response(data, exc, to_tag="f")
        if resp is not None:
            parse_datagram(bytes(resp))  # what we would send is itself well formed
        return
    for name in ACCESSORS:
        with contextlib.suppress(ParseError):
            getattr(msg, name)
    try:
        if isinstance(msg, Request):
            msg.uri  # noqa: B018
            validate_request(msg)
        else:
            validate_response(msg)
    except ParseError:
        return
    # A message that parsed and validated serializes to bytes that parse the same way.
    again = parse_datagram(bytes(msg))
    assert same(msg, again)


def same(a: Message, b: Message) -> bool:
    if isinstance(a, Request):
        assert isinstance(b, Request)
        start = (a.method, a.uri_text) == (b.method, b.uri_text)
    else:
        assert isinstance(a, Response)
        start = (a.status, a.reason) == (b.status, b.reason)
    return (
        start
        and a.body == b.body
        and [(n, v) for n, v in a.headers if n != "Content-Length"]
        == [(n, v) for n, v in b.headers if n != "Content-Length"]
    )


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes(data: bytes) -> None:
    exercise(data)


@FUZZ
@given(st.binary(max_size=600).map(lambda b: b"INVITE sip:a@b SIP/2.0\r\n" + b))
def test_random_bytes_after_a_start_line(data: bytes) -> None:
    exercise(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEED_BYTES)))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete", "dup", "crlf"]))
        if op == "flip":
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(
                st.sampled_from(
                    [
                        b":",
                        b";",
                        b",",
                        b"<",
                        b">",
                        b'"',
                        b" ",
                        b"\t",
                        b"\r\n",
                        b"\r\n ",
                        b"\x00",
                        b"[",
                        b"]",
                        b"%",
                        b"=",
                        b"@",
                        b"\xff",
                        b"\r\n\r\n",
                    ]
                )
            )
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 20))]
        elif op == "dup":
            end = min(len(data), at + draw(st.integers(1, 80)))
            data[at:at] = data[at:end]
        else:
            data[at:at] = b"\r\n"
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_vectors(data: bytes) -> None:
    exercise(data)


@FUZZ
@given(mutated(), st.lists(st.integers(1, 300), max_size=8))
def test_mutated_vectors_on_a_stream(data: bytes, cuts: list[int]) -> None:
    framer = StreamFramer()
    pos = 0
    try:
        for size in [*cuts, len(data)]:
            for msg in framer.feed(data[pos : pos + size]):
                assert isinstance(msg, Request | Response)
            pos += size
    except ParseError:
        pass


# -- structured messages -------------------------------------------------------------------

TOKEN = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
    min_size=1,
    max_size=12,
)
HOSTS = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){0,3}", fullmatch=True),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
    st.sampled_from(["[2001:db8::1]", "[::1]", "[::ffff:192.0.2.1]", "[2001:db8:::192.0.2.1]"]),
)
PORT = st.one_of(st.none(), st.integers(1, 65535))
USER = st.text(
    "abcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()&=+$,;?/%", min_size=1, max_size=12
).filter(lambda u: "%" not in u or u.endswith("%41"))
PARAMS = st.dictionaries(TOKEN.map(str.lower), st.one_of(st.none(), TOKEN), max_size=3).map(
    lambda d: "".join(f";{k}" if v is None else f";{k}={v}" for k, v in d.items())
)


@st.composite
def sip_uris(draw: st.DrawFn) -> str:
    user = draw(st.one_of(st.none(), USER))
    host = draw(HOSTS)
    port = draw(PORT)
    scheme = draw(st.sampled_from(["sip", "sips"]))
    userpart = f"{user}@" if user else ""
    portpart = f":{port}" if port is not None else ""
    return f"{scheme}:{userpart}{host}{portpart}{draw(PARAMS)}"


@st.composite
def name_addrs(draw: st.DrawFn) -> str:
    uri = draw(sip_uris())
    display = draw(
        st.one_of(
            st.none(),
            st.text(
                st.characters(blacklist_characters='"\\\r\n', blacklist_categories=["Cs", "Cc"]),
                max_size=12,
            ),
        )
    )
    head = f'"{display}" <{uri}>' if display is not None else f"<{uri}>"
    return head + draw(PARAMS)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    is_request = draw(st.booleans())
    method = draw(
        st.one_of(
            st.sampled_from(
                [
                    "INVITE",
                    "ACK",
                    "BYE",
                    "PRACK",
                    "UPDATE",
                    "SUBSCRIBE",
                    "NOTIFY",
                    "REFER",
                    "OPTIONS",
                ]
            ),
            TOKEN,
        )
    )
    vias = draw(
        st.lists(
            st.tuples(st.sampled_from(["UDP", "TCP", "TLS"]), HOSTS, PORT), min_size=1, max_size=4
        )
    )
    via_lines = [
        f"SIP/2.0/{t} {h}{'' if p is None else f':{p}'};branch=z9hG4bK{i}"
        for i, (t, h, p) in enumerate(vias)
    ]
    if draw(st.booleans()) and len(via_lines) > 1:
        via_lines = [", ".join(via_lines)]
    lines = [f"Via: {v}" for v in via_lines]
    lines += [
        f"From: {draw(name_addrs())};tag={draw(TOKEN)}",
        f"To: {draw(name_addrs())}",
        f"Call-ID: {draw(TOKEN)}@{draw(HOSTS)}",
        f"CSeq: {draw(st.integers(0, 2**31 - 1))} {method}",
        f"Max-Forwards: {draw(st.integers(0, 255))}",
    ]
    for _ in range(draw(st.integers(0, 3))):
        lines.append(f"Contact: {draw(name_addrs())}")
    for _ in range(draw(st.integers(0, 2))):
        lines.append(f"Record-Route: <{draw(sip_uris())};lr>")
    extra = draw(
        st.lists(
            st.tuples(
                TOKEN.map(lambda t: "X-" + t),
                st.text(st.characters(min_codepoint=32, max_codepoint=0x7E), max_size=30).map(
                    str.strip
                ),
            ),
            max_size=3,
        )
    )
    lines += [f"{n}: {v}" for n, v in extra]
    body = draw(st.binary(max_size=200))
    lines.append(f"Content-Length: {len(body)}")
    if is_request:
        start = f"{method} {draw(sip_uris())} SIP/2.0"
    else:
        status = draw(st.integers(100, 699))
        start = f"SIP/2.0 {status} {draw(st.sampled_from(['OK', 'Ringing', '', 'Busy Here']))}"
    return ("\r\n".join([start, *lines]) + "\r\n\r\n").encode() + body


@STRUCTURED
@given(messages())
def test_structured_messages_parse_validate_and_round_trip(data: bytes) -> None:
    msg = parse_datagram(data)
    if isinstance(msg, Request):
        validate_request(msg)
    else:
        validate_response(msg)
    assert bytes(msg) == data  # canonical input: byte-exact
    for name in ACCESSORS:
        getattr(msg, name)
    exercise(data)


@settings(STRUCTURED, max_examples=40)
@given(st.lists(messages(), min_size=1, max_size=3), st.lists(st.integers(1, 400), max_size=10))
def test_structured_messages_on_a_stream(datas: list[bytes], cuts: list[int]) -> None:
    stream = b"\r\n".join(datas)  # a CRLF keep-alive between messages
    framer = StreamFramer()
    got: list[bytes] = []
    pos = 0
    for size in [*cuts, len(stream)]:
        got.extend(bytes(m) for m in framer.feed(stream[pos : pos + size]))
        pos += size
    assert got == datas and framer.pending == 0
