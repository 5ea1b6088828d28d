"""The built-in media processor's ESL server against what a real FreeSWITCH 1.10.12 sent
(../shared/fixtures/freeswitch/): the FreeSWITCH adapter's assertions run against it, and its
frames have the recorded header sets and order (values that depend on host, time or UUIDs
aside)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app.focus.media import (
    ConferenceCreated,
    ConferenceDestroyed,
    MemberAdded,
    MemberMuteChanged,
    MemberRemovalCause,
    MemberRemoved,
    MemberTalkingChanged,
)
from app.mrfp.builtin.conference import ConferenceRegistry, EventContext, Leg, Member
from app.mrfp.builtin.esl_server import EslServer
from app.mrfp.esl import EslClientParser, Frame, parse_event
from app.mrfp.freeswitch import FreeSwitchNode
from app.mrfp.port import CommandFailed, ConferenceNotFound, MemberNotFound
from tests.support.esl_replay import FIXTURES
from tests.support.media_sink import MediaSink

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="../shared fixtures missing")

WAIT = 15.0


def leg(user: str, port: int) -> Leg:
    return Leg(
        call_id=f"{user}-leg@127.0.0.1",
        channel_uuid=f"00000000-0000-4000-8000-{port:012d}",
        from_user=user,
        from_host=f"127.0.0.1:{port}",
        from_display=user,
        destination="mrfp",
        participant=f"p-{user}",
        conference_header="room1",
    )


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parser = EslClientParser()
        self.frames: list[Frame] = []
        self.raw = bytearray()

    @classmethod
    async def connect(cls, server: EslServer) -> RawClient:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        return cls(reader, writer)

    async def next(self) -> Frame:
        while not self.frames:
            data = await asyncio.wait_for(self.reader.read(65536), WAIT)
            if not data:
                raise ConnectionError("closed")
            self.raw += data
            self.frames += self.parser.feed(data)
        return self.frames.pop(0)

    async def send(self, line: str) -> Frame:
        self.writer.write(line.encode() + b"\n\n")
        await self.writer.drain()
        return await self.next()

    async def read_to_end(self) -> bytes:
        while data := await asyncio.wait_for(self.reader.read(65536), WAIT):
            self.raw += data
        return bytes(self.raw)


@pytest.fixture
async def server() -> AsyncIterator[EslServer]:
    registry = ConferenceRegistry(EventContext(hostname="vm", ipv4="192.0.2.2"))
    srv = EslServer(registry, "127.0.0.1", 0, "ClueCon")
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def node(server: EslServer) -> AsyncIterator[tuple[FreeSwitchNode, MediaSink]]:
    sink = MediaSink()
    n = FreeSwitchNode(
        "fs1", "127.0.0.1", server.port, "ClueCon", command_timeout=5.0, backoff_initial=0.1
    )
    await n.start(sink)
    try:
        assert await n.wait_connected(WAIT)
        yield n, sink
    finally:
        await n.stop()


def recorded_frames(path: Path) -> list[Frame]:
    return EslClientParser().feed(path.read_bytes())


def api_body(name: str) -> str:
    return recorded_frames(FIXTURES / "api" / name)[-1].text


# ---------------------------------------------------------------------------------------------
# the adapter's assertions (tests/unit/mrfp/test_freeswitch_node.py) against this server


async def test_adapter_json_list_gives_members(
    server: EslServer, node: tuple[FreeSwitchNode, MediaSink]
) -> None:
    n, _ = node
    registry = server.registry
    registry.join("room1", leg("uac-a", 5070))
    registry.join("room1", leg("uac-b", 5072))
    members = await n.list_members("room1")
    assert [m.member_id for m in members] == ["2", "1"]
    assert members[0].channel_uuid == "00000000-0000-4000-8000-000000005072"
    assert members[1].caller_id_number == "uac-a"
    assert all(not m.muted and not m.deaf for m in members)
    assert members[1].flags["has_floor"] is True
    assert await n.conference_count() == 1


async def test_adapter_commands_and_typed_errors(
    server: EslServer, node: tuple[FreeSwitchNode, MediaSink]
) -> None:
    n, _ = node
    registry = server.registry
    registry.join("room1", leg("uac-a", 5070))
    registry.join("room1", leg("uac-b", 5072))
    await n.mute("room1", "1")
    assert registry.conference("room1").member("1").muted
    await n.unmute("room1", "1")
    await n.deaf("room1", "2")
    await n.undeaf("room1", "2")
    await n.lock("room1")
    assert registry.conference("room1").locked
    await n.unlock("room1")
    await n.kick("room1", "2")  # `+OK kicked 2`
    with pytest.raises(MemberNotFound):
        await n.kick("room1", "2")  # `-ERR Non-Existant ID 2`
    with pytest.raises(ConferenceNotFound):
        await n.list_members("nosuchroom")
    with pytest.raises(ConferenceNotFound):
        await n.kick("nosuchroom", "1")
    with pytest.raises(CommandFailed):
        await n.api("nosuchcommand")
    await n.hup("room1", "1")
    with pytest.raises(ConferenceNotFound):
        await n.list_members("room1")  # the last member left: destroyed


async def test_adapter_gets_events_as_media_events_with_sip_legs(
    server: EslServer, node: tuple[FreeSwitchNode, MediaSink]
) -> None:
    _, sink = node
    registry = server.registry
    a: Member = registry.join("room1", leg("uac-a", 5070))
    registry.join("room1", leg("uac-b", 5072))
    registry.talking_changed(a.key, True, 5000)
    registry.talking_changed(a.key, False)
    registry.set_mute("room1", "1", True)
    registry.set_mute("room1", "1", False)
    registry.kick("room1", "2")
    registry.leave(a, hangup=True)
    await sink.wait_for(lambda ev: any(isinstance(e, ConferenceDestroyed) for e in ev))
    got = sink.media()
    assert got == [
        ConferenceCreated("fs1", "room1"),
        MemberAdded(
            "fs1",
            "room1",
            "1",
            "uac-a-leg@127.0.0.1",
            channel_uuid="00000000-0000-4000-8000-000000005070",
            caller_id_number="uac-a",
            participant="p-uac-a",
        ),
        MemberAdded(
            "fs1",
            "room1",
            "2",
            "uac-b-leg@127.0.0.1",
            channel_uuid="00000000-0000-4000-8000-000000005072",
            caller_id_number="uac-b",
            participant="p-uac-b",
        ),
        MemberTalkingChanged("fs1", "room1", "1", True),
        MemberTalkingChanged("fs1", "room1", "1", False),
        MemberMuteChanged("fs1", "room1", "1", True),
        MemberMuteChanged("fs1", "room1", "1", False),
        MemberRemoved("fs1", "room1", "2", "uac-b-leg@127.0.0.1", MemberRemovalCause.KICKED),
        MemberRemoved("fs1", "room1", "1", "uac-a-leg@127.0.0.1", MemberRemovalCause.HANGUP),
        ConferenceDestroyed("fs1", "room1"),
    ]


# ---------------------------------------------------------------------------------------------
# frames compared with the recorded ones


async def test_auth_bad_auth_and_exit_bytes_are_freeswitchs(server: EslServer) -> None:
    bad = await RawClient.connect(server)
    await bad.next()
    bad.writer.write(b"auth WrongPassword\n\n")
    assert await bad.read_to_end() == (FIXTURES / "esl-badauth.from-freeswitch.raw").read_bytes()
    bad.writer.close()

    good = await RawClient.connect(server)
    await good.next()
    await good.send("auth ClueCon")
    assert bytes(good.raw) == (FIXTURES / "api/00-auth-exchange.txt").read_bytes()
    good.writer.write(b"exit\n\n")
    rest = (await good.read_to_end()).removeprefix(
        (FIXTURES / "api/00-auth-exchange.txt").read_bytes()
    )
    recorded = (FIXTURES / "esl-events-plain.from-freeswitch.raw").read_bytes()
    assert recorded.endswith(rest)  # `+OK bye` then the disconnect notice, byte for byte
    good.writer.close()


DETERMINISTIC_API = {
    "conference list": "05-conference-list-empty.txt",
    "conference json_list": "06-conference-json_list-empty.txt",
    "conference nosuchroom list": "07-error-conference-nosuchroom-list.txt",
    "conference nosuchroom kick 1": "08-error-conference-nosuchroom-kick.txt",
    "conference nosuchroom json_list": "09-error-conference-nosuchroom-json_list.txt",
    "nosuchcommand": "10-error-unknown-command.txt",
}


def _shape(value: Any) -> Any:
    """The structure of a JSON value: keys in order, and value types."""
    if isinstance(value, dict):
        return [(k, _shape(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_shape(v) for v in value[:1]]
    return type(value).__name__


_LIST_ROW = re.compile(r"^\d+;sofia/mrfp/[^;]+@[^;]+;[0-9a-f-]{36};[^;]*;[^;]*;[a-z|]*;0;0;0$")


async def test_api_replies_match_recorded_frames(server: EslServer) -> None:
    client = await RawClient.connect(server)
    await client.next()
    await client.send("auth ClueCon")
    for command, name in DETERMINISTIC_API.items():
        reply = await client.send(f"api {command}")
        assert bytes(reply) == (FIXTURES / "api" / name).read_bytes(), command
    status = await client.send("api status")
    recorded = recorded_frames(FIXTURES / "api/01-status.txt")[0]
    assert [k for k, _ in status.headers] == [k for k, _ in recorded.headers]
    assert len(status.text.splitlines()) == len(recorded.text.splitlines())

    registry = server.registry
    a = registry.join("room1", leg("uac-a", 5070))
    registry.join("room1", leg("uac-b", 5072))
    for command, name in (
        ("conference room1 list count", "15-conference-room1-list-count.txt"),
        ("conference room1 mute 1", "16-conference-room1-mute.txt"),
        ("conference room1 unmute 1", "17-conference-room1-unmute.txt"),
    ):
        reply = await client.send(f"api {command}")
        assert bytes(reply) == (FIXTURES / "api" / name).read_bytes(), command
    # json_list: the recorded structure, key for key, and the same cJSON layout.
    ours = json.loads((await client.send("api conference json_list")).text)
    theirs = json.loads(api_body("12-conference-json_list-2-members.txt"))
    assert _shape(ours) == _shape(theirs)
    assert [m["id"] for m in ours[0]["members"]] == [2, 1]
    # list: the heading and rows of `conference list` (talking is live state; ours: silent).
    listing = (await client.send("api conference list")).text
    recorded_listing = api_body("11-conference-list-2-members.txt")
    assert listing.splitlines()[0] == recorded_listing.splitlines()[0]
    rows = listing.splitlines()[1:]
    assert all(_LIST_ROW.match(r) for r in rows), rows
    assert rows[0].startswith("2;sofia/mrfp/uac-b@127.0.0.1:5072;")
    assert rows[1].endswith(";uac-a;uac-a;hear|speak|floor;0;0;0")
    kick = await client.send("api conference room1 kick 2")
    assert bytes(kick) == (FIXTURES / "api/18-conference-room1-kick.txt").read_bytes()
    after = (await client.send("api conference list")).text.splitlines()[0]
    assert after == api_body("19-conference-list-after-kick.txt").splitlines()[0]
    gone = await client.send("api conference room1 kick 2")
    assert (
        bytes(gone)
        == (FIXTURES / "api/20-error-conference-room1-kick-gone-member.txt").read_bytes()
    )
    registry.leave(a)
    empty = await client.send("api conference list")
    assert bytes(empty) == (FIXTURES / "api/21-conference-list-after-destroy.txt").read_bytes()


def _recorded_layouts(folder: str) -> dict[str, list[list[str]]]:
    out: dict[str, list[list[str]]] = {}
    for path in sorted((FIXTURES / folder).glob("*.txt")):
        event = parse_event(Frame.parse(path.read_bytes()))
        action = event["Action"]
        if action == "floor-change" and event.get("Member-ID") is None:
            action = "floor-change-none"
        out.setdefault(action, []).append([k for k, _ in event.headers])
    return out


@pytest.mark.parametrize("fmt", ["plain", "json"])
async def test_events_have_the_recorded_header_layout(server: EslServer, fmt: str) -> None:
    client = await RawClient.connect(server)
    await client.next()
    await client.send("auth ClueCon")
    ack = await client.send(f"event {fmt} CUSTOM conference::maintenance")
    recorded_ack = EslClientParser().feed(
        (FIXTURES / f"esl-events-{fmt}.from-freeswitch.raw").read_bytes()
    )[2]
    assert bytes(ack) == bytes(recorded_ack)
    registry = server.registry
    a = registry.join("room1", leg("uac-a", 5070))
    b = registry.join("room1", leg("uac-b", 5072))
    registry.talking_changed(b.key, True, 5000)
    registry.talking_changed(a.key, True, 5000)
    registry.talking_changed(a.key, False)
    registry.set_mute("room1", "1", True)
    registry.set_mute("room1", "1", False)
    registry.kick("room1", "2")
    registry.leave(a, hangup=True)
    layouts = _recorded_layouts(f"events-{fmt}")
    seen: set[str] = set()
    hung_up = False
    while True:
        frame = await client.next()
        recorded_outer = Frame.parse(
            sorted((FIXTURES / f"events-{fmt}").glob("*.txt"))[0].read_bytes()
        )
        assert [k for k, _ in frame.headers] == [k for k, _ in recorded_outer.headers]
        event = parse_event(frame)
        action = event["Action"]
        if action == "floor-change" and event.get("Member-ID") is None:
            action = "floor-change-none"
        names = [k for k, _ in event.headers]
        # Verbose channel variables (always on here) sit before `Video`; the recorded
        # non-verbose events have none, so compare without them.
        plain_names = [k for k in names if not k.startswith("variable_")]
        assert plain_names in layouts[action], action
        if "Member-ID" in names and action != "floor-change":
            variables = [k for k in names if k.startswith("variable_")]
            assert "variable_sip_call_id" in variables
            assert "variable_sip_h_X-Participant" in variables
            assert names.index("variable_direction") == names.index("Video") - len(variables)
        assert event["FreeSWITCH-IPv4"] == "192.0.2.2"
        if action == "del-member" and event["Member-ID"] == "1":
            hung_up = event["Answer-State"] == "hangup"
        seen.add(action)
        if action == "conference-destroy":
            break
    assert hung_up
    assert seen >= {
        "conference-create",
        "add-member",
        "floor-change",
        "floor-change-none",
        "start-talking",
        "stop-talking",
        "mute-member",
        "unmute-member",
        "kick-member",
        "del-member",
        "conference-destroy",
    }
