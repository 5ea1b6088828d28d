"""Plain ESL event bodies: URL decoding as `switch_url_decode` does it, on the reader's fast
path (byte-level split, decoded values reused) as on the plain one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.mrfp.esl import parse_event_plain_body, url_decode
from app.mrfp.esl.events import url_encode

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


def test_as_dict_keeps_the_first_of_repeated_names_in_event_order() -> None:
    event = parse_event_plain_body(b"A: 1\nB: 2\nA: 3\nC: 4\n\n")
    assert list(event.as_dict().items()) == [("A", "1"), ("B", "2"), ("C", "4")]
    plain = parse_event_plain_body(b"A: 1\nB: 2\n\n")
    assert list(plain.as_dict().items()) == [("A", "1"), ("B", "2")]
