"""The FreeSWITCH adapter's event path: `EslFrameReader` (large chunks -> frames),
`plain_line_value` (one header without parsing the rest) and `MAPPED_HEADERS` (which headers
the maintenance mapper reads, per action), checked against the full parsers on the recorded
FreeSWITCH 1.10.12 bytes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.focus.media import MemberRemovalCause, MemberRemoved
from app.mrfp.esl import (
    MAINTENANCE_SUBCLASS,
    EslClientParser,
    EslProtocolError,
    Frame,
    MaintenanceMapper,
    parse_event,
    parse_event_plain_body,
)
from app.mrfp.esl.conference import MAPPED_HEADERS
from app.mrfp.esl.events import plain_line_value, serialize_event_plain
from app.mrfp.esl.frames import EslFrameReader
from tests.support.esl_replay import FIXTURES

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="../shared fixtures missing")

RAW_STREAMS = sorted(FIXTURES.glob("*.from-freeswitch.raw")) if FIXTURES.is_dir() else []


def _event_files() -> list[Path]:
    if not FIXTURES.is_dir():
        return []
    plain = sorted((FIXTURES / "events-plain").glob("*.txt"))
    verbose = sorted((FIXTURES / "events-verbose").glob("plain-*.txt"))
    return plain + verbose


EVENT_FILES = _event_files()


def _plain_bodies() -> list[bytes]:
    return [Frame.parse(p.read_bytes()).body for p in EVENT_FILES]


def _as_reader_frames(frames: list[Frame]) -> list[tuple[dict[str, str], bytes]]:
    return [(dict(f.headers), f.body) for f in frames]


def _chunks(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    last = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        yield data[last:cut]
        last = cut
    yield data[last:]


# ------------------------------------------------------------------ EslFrameReader


@pytest.mark.parametrize("path", RAW_STREAMS, ids=lambda p: p.name)
def test_frame_reader_gives_the_client_parsers_frames_in_one_chunk(path: Path) -> None:
    data = path.read_bytes()
    expected = _as_reader_frames(EslClientParser().feed(data))
    reader = EslFrameReader()
    assert reader.feed(data) == expected
    assert reader.buffered == 0
    assert len(expected) > 1


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(RAW_STREAMS), st.lists(st.integers(min_value=0), max_size=40))
def test_frame_reader_gives_the_same_frames_however_the_bytes_are_cut(
    path: Path, cuts: list[int]
) -> None:
    data = path.read_bytes()
    reader = EslFrameReader()
    got = [frame for chunk in _chunks(data, cuts) for frame in reader.feed(chunk)]
    assert got == _as_reader_frames(EslClientParser().feed(data))
    assert reader.buffered == 0


def test_frame_reader_byte_by_byte_keeps_a_partial_frame() -> None:
    data = (FIXTURES / "events-plain" / "02-add-member-room1.txt").read_bytes()
    reader = EslFrameReader()
    for i in range(len(data) - 1):
        assert reader.feed(data[i : i + 1]) == []
    assert reader.buffered == len(data) - 1
    ((headers, body),) = reader.feed(data[-1:])
    assert headers == {"Content-Length": "2418", "Content-Type": "text/event-plain"}
    assert len(body) == 2418


def test_frame_reader_skips_blank_lines_between_frames() -> None:
    reply = b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n"
    frames = EslFrameReader().feed(b"\n" + reply + b"\n\n" + reply)
    assert [h["Reply-Text"] for h, _ in frames] == ["+OK accepted", "+OK accepted"]


@pytest.mark.parametrize(
    "data",
    [
        b"Content-Length: x\n\n",
        b"Content-Length: -1\n\n",
        b"no colon here\n\n",
        b"Content-Type: api/response\n" + b"X: " + b"y" * (300 * 1024),
    ],
    ids=["bad-length", "negative-length", "no-colon", "endless-header-block"],
)
def test_frame_reader_refuses_what_is_not_esl(data: bytes) -> None:
    with pytest.raises(EslProtocolError):
        EslFrameReader().feed(data)


# ------------------------------------------------------------------ plain_line_value


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_line_value_is_the_parsed_header_for_every_recorded_header(path: Path) -> None:
    body = Frame.parse(path.read_bytes()).body
    event = parse_event_plain_body(body)
    names = {name for name, _ in event.headers} | {"No-Such-Header", "Action-X"}
    for name in names:
        assert plain_line_value(body, name) == event.get(name), name


_names = st.sampled_from(["A", "Action", "Member-ID", "variable_x", "é-n"])
_values = st.text(alphabet="%aF0 :\n\r/é\udcff|+", max_size=10)


@given(st.lists(st.tuples(_names, _values), max_size=8), _names)
def test_line_value_matches_the_parser_on_serialized_events(
    pairs: list[tuple[str, str]], name: str
) -> None:
    # serialize_event_plain writes what switch_event_serialize writes (values URL-encoded).
    body = serialize_event_plain(pairs)
    assert plain_line_value(body, name) == parse_event_plain_body(body).get(name)


# ------------------------------------------------------------------ MAPPED_HEADERS


class _Recording(Mapping[str, str]):
    """A header mapping that remembers which names were read."""

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        return self._headers[name]

    def get(self, name: str, default: object = None) -> object:  # type: ignore[override]
        self.read.add(name)
        return self._headers.get(name, default)

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("the mapper must not walk all headers")

    def __len__(self) -> int:
        return len(self._headers)


def _reduced(headers: dict[str, str]) -> dict[str, str] | None:
    """What the adapter's reader hands the mapper, or None where it drops the event."""
    names = MAPPED_HEADERS.get(headers.get("Action", ""))
    if names is None:
        return None
    keep = ("Event-Subclass", "Action", *names)
    return {n: headers[n] for n in keep if n in headers}


def _recorded_sequences() -> list[list[dict[str, str]]]:
    plain = [p for p in EVENT_FILES if p.parent.name == "events-plain"]
    verbose = [p for p in EVENT_FILES if p.parent.name == "events-verbose"]
    out = []
    for files in (plain, verbose):
        out.append([parse_event(Frame.parse(p.read_bytes())).as_dict() for p in files])
    # lock/unlock were not recorded; their headers are the conference events' ones.
    create = dict(out[0][0])
    out.append([create, {**create, "Action": "lock"}, {**create, "Action": "unlock"}])
    return out


@pytest.mark.parametrize("events", _recorded_sequences(), ids=["plain", "verbose", "lock"])
def test_mapper_gives_the_same_events_from_the_reduced_headers(
    events: list[dict[str, str]],
) -> None:
    full, reduced = MaintenanceMapper("fs1"), MaintenanceMapper("fs1")
    for headers in events:
        expected = full.map(headers)
        small = _reduced(headers)
        if small is None:
            assert expected == [], headers["Action"]
            continue
        recording = _Recording(small)
        assert reduced.map(recording) == expected
        allowed = {"Event-Subclass", "Action", *MAPPED_HEADERS[headers["Action"]]}
        assert recording.read <= allowed, headers["Action"]
    for conference in full.conferences():
        assert reduced.members(conference) == full.members(conference)
    assert reduced.conferences() == full.conferences()


@pytest.mark.parametrize(
    "action", ["floor-change", "deaf-member", "undeaf-member", "hup-member", "energy-level"]
)
def test_actions_the_reader_drops_map_to_nothing_and_change_nothing(action: str) -> None:
    assert action not in MAPPED_HEADERS
    mapper = MaintenanceMapper("fs1")
    headers = {
        "Event-Subclass": MAINTENANCE_SUBCLASS,
        "Action": "add-member",
        "Conference-Name": "r1",
        "Member-ID": "1",
    }
    mapper.map(headers)
    before = (mapper.conferences(), mapper.members("r1"))
    assert mapper.map({**headers, "Action": action}) == []
    assert (mapper.conferences(), mapper.members("r1")) == before
    # and a later del-member is still a plain hangup
    assert mapper.map({**headers, "Action": "del-member"}) == [
        MemberRemoved("fs1", "r1", "1", None, MemberRemovalCause.HANGUP)
    ]
