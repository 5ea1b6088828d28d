"""Plain ESL event bodies: URL decoding as `switch_url_decode` does it, on the reader's fast
path (byte-level split, decoded values reused) as on the plain one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.mrfp.esl import parse_event_plain_body, url_decode
from app.mrfp.esl.events import _escape, serialize_event_plain, url_encode

_HEX = "0123456789abcdefABCDEF"
_SE = "surrogateescape"


def reference_decode(raw: bytes) -> bytes:
    """switch_url_decode, one byte at a time: `%XX` in either case, nothing else."""
    out = bytearray()
    i = 0
    while i < len(raw):
        pair = raw[i + 1 : i + 3]
        if raw[i] == 0x25 and len(pair) == 2 and all(chr(b) in _HEX for b in pair):
            out.append(int(pair, 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


# Values full of the characters that matter: '%', hex digits of both cases, '+', non-ASCII.
_values = st.text(alphabet="%%%aAfF09gz+ :/é\udcff", max_size=12)


@given(_values)
def test_url_decode_matches_switch_url_decode(value: str) -> None:
    raw = value.encode("utf-8", "surrogateescape")
    assert url_decode(value).encode("utf-8", "surrogateescape") == reference_decode(raw)


@given(st.lists(st.tuples(st.sampled_from(["A", "Caller-ID", "é-x"]), _values), max_size=6))
def test_plain_body_values_decode_the_same_every_time(pairs: list[tuple[str, str]]) -> None:
    body = "".join(f"{n}: {v}\n" for n, v in pairs).encode("utf-8", "surrogateescape") + b"\n"
    expected = tuple(
        (n, reference_decode(v.encode("utf-8", _SE)).decode("utf-8", _SE)) for n, v in pairs
    )
    for _ in range(2):  # the second parse reuses what the first one decoded
        assert parse_event_plain_body(body).headers == expected


def test_encoded_values_round_trip() -> None:
    for value in ("Wed, 25 Nov 2026 11:39:10 GMT", "fd00::2", "100%", "sip:a@b;x=y", "é|:"):
        body = f"V: {url_encode(value)}\n\n".encode()
        assert parse_event_plain_body(body)["V"] == value
        assert parse_event_plain_body(body)["V"] == value


@given(st.text(alphabet=st.characters(max_codepoint=0x2FF), max_size=12))
def test_url_encode_writes_safe_values_as_they_are_and_escapes_the_rest(value: str) -> None:
    # The regex fast path must agree with the byte loop on every value.
    assert url_encode(value) == _escape(value)


def test_url_encode_escapes_each_unsafe_byte() -> None:
    for char in '\r\n "#&+:;<=>?@[\\]^`{|}\x7f\x01é':
        assert url_encode(f"a{char}b") != f"a{char}b", repr(char)
    assert url_encode("100%2F") == "100%2F"  # no double encoding
    assert url_encode("sip-1.2_3~x/y*z!(')$,") == "sip-1.2_3~x/y*z!(')$,"


@given(st.lists(st.tuples(st.sampled_from(["A", "Caller-ID", "é-x"]), _values), max_size=6))
def test_plain_serialization_is_the_same_from_its_line_memo(pairs: list[tuple[str, str]]) -> None:
    expected = ("".join(f"{n}: {url_encode(v)}\n" for n, v in pairs) + "\n").encode("utf-8", _SE)
    for _ in range(2):  # the second time every line comes from the memo
        assert serialize_event_plain(pairs) == expected


def test_as_dict_keeps_the_first_of_repeated_names_in_event_order() -> None:
    event = parse_event_plain_body(b"A: 1\nB: 2\nA: 3\nC: 4\n\n")
    assert list(event.as_dict().items()) == [("A", "1"), ("B", "2"), ("C", "4")]
    plain = parse_event_plain_body(b"A: 1\nB: 2\n\n")
    assert list(plain.as_dict().items()) == [("A", "1"), ("B", "2")]
