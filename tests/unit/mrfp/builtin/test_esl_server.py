"""The built-in ESL server over a real loopback socket, driven by a raw ESL client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from app.mrfp.builtin.conference import ConferenceRegistry, EventContext, Leg, Member
from app.mrfp.builtin.esl_server import EslServer, conference_api, execute_api
from app.mrfp.esl import EslClientParser, Frame, parse_event, parse_json_list, parse_list
from app.mrfp.esl.frames import DISCONNECT_NOTICE_BODY

WAIT = 10.0


class FakeMedia:
    def __init__(self) -> None:
        self.muted: dict[str, bool] = {}
        self.deaf: dict[str, bool] = {}

    def set_muted(self, member_id: str, muted: bool) -> None:
        self.muted[member_id] = muted

    def set_deaf(self, member_id: str, deaf: bool) -> None:
        self.deaf[member_id] = deaf


def make_leg(user: str, participant: str | None = None) -> Leg:
    return Leg(
        call_id=f"{user}-call@127.0.0.1",
        channel_uuid=f"uuid-{user}",
        from_user=user,
        from_host="127.0.0.1:5070",
        destination="mrfp",
        participant=participant,
        conference_header="room1",
    )


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = EslClientParser()
        self.frames: list[Frame] = []

    async def next(self) -> Frame:
        while not self.frames:
            data = await asyncio.wait_for(self.reader.read(65536), WAIT)
            if not data:
                raise ConnectionError("closed")
            self.frames += self.parser.feed(data)
        return self.frames.pop(0)

    async def send(self, line: str) -> Frame:
        self.writer.write(line.encode() + b"\n\n")
        await self.writer.drain()
        return await self.next()

    async def closed(self) -> bool:
        data = await asyncio.wait_for(self.reader.read(65536), WAIT)
        return data == b""


@pytest.fixture
async def setup() -> AsyncIterator[tuple[ConferenceRegistry, EslServer, FakeMedia]]:
    media = FakeMedia()
    registry = ConferenceRegistry(EventContext(hostname="test"), media)
    server = EslServer(registry, "127.0.0.1", 0, "ClueCon")
    await server.start()
    try:
        yield registry, server, media
    finally:
        await server.stop()


async def connect(server: EslServer, password: str = "ClueCon") -> Client:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    client = Client(reader, writer)
    first = await client.next()
    assert bytes(first) == b"Content-Type: auth/request\n\n"
    reply = await client.send(f"auth {password}")
    assert reply.content_type == "command/reply"
    return client


async def test_auth_ok_and_bad_password(
    setup: tuple[ConferenceRegistry, EslServer, FakeMedia],
) -> None:
    _, server, _ = setup
    good = await connect(server)
    assert good.writer is not None
    reader, writer = await asyncio.open_connection(server.host, server.port)
    bad = Client(reader, writer)
    await bad.next()
    reply = await bad.send("auth WrongPassword")
    # Recorded: -ERR invalid, the disconnect notice, then the socket closes.
    assert bytes(reply) == b"Content-Type: command/reply\nReply-Text: -ERR invalid\n\n"
    notice = await bad.next()
    assert notice.content_type == "text/disconnect-notice"
    assert notice.text == DISCONNECT_NOTICE_BODY
    assert await bad.closed()
    writer.close()
    good.writer.close()


async def test_api_replies_match_freeswitch_texts(
    setup: tuple[ConferenceRegistry, EslServer, FakeMedia],
) -> None:
    registry, server, media = setup
    client = await connect(server)
    empty = await client.send("api conference list")
    assert bytes(empty) == (
        b"Content-Type: api/response\nContent-Length: 27\n\n+OK No active conferences.\n"
    )
    assert (await client.send("api conference json_list")).text == "[]"
    missing = await client.send("api conference nosuchroom kick 1")
    assert missing.text == "-ERR Conference nosuchroom not found\n"
    unknown = await client.send("api nosuchcommand")
    assert unknown.text == "-ERR nosuchcommand Command not found!\n"
    status = await client.send("api status")
    assert status.text.startswith("UP 0 years, ") and "is ready\n" in status.text

    a = registry.join("room1", make_leg("uac-a"))
    b = registry.join("room1", make_leg("uac-b"))
    listing = (await client.send("api conference list")).text
    assert listing.startswith("+OK Conference room1 (2 members rate: 8000 flags: running|")
    rows = listing.splitlines()[1:]
    # Newest first, floor on the first member (it joined to an empty room).
    assert (
        rows[0]
        == f"{b.member_id};sofia/mrfp/uac-b@127.0.0.1:5070;uuid-uac-b;uac-b;uac-b;hear|speak;0;0;0"
    )
    assert rows[1].endswith("hear|speak|floor;0;0;0")
    assert (await client.send("api conference room1 list count")).text == "2"
    confs = parse_json_list((await client.send("api conference room1 json_list")).text)
    assert [m.member_id for m in confs[0].members] == [str(b.member_id), str(a.member_id)]
    assert (await client.send(f"api conference room1 mute {a.member_id}")).text == (
        f"+OK mute {a.member_id}\n"
    )
    assert media.muted["uuid-uac-a"] is True
    assert (await client.send(f"api conference room1 unmute {a.member_id}")).text == (
        f"+OK unmute {a.member_id}\n"
    )
    assert (await client.send(f"api conference room1 deaf {b.member_id}")).text == (
        f"+OK deaf {b.member_id}\n"
    )
    assert media.deaf["uuid-uac-b"] is True
    assert (await client.send("api conference room1 lock")).text == "+OK room1 locked\n"
    assert parse_list((await client.send("api conference list")).text)[0].locked
    assert (await client.send("api conference room1 unlock")).text == "+OK room1 unlocked\n"
    assert (await client.send("api conference room1 kick 99")).text == "-ERR Non-Existant ID 99\n"
    kicked = await client.send(f"api conference room1 kick {b.member_id}")
    assert kicked.text == f"+OK kicked {b.member_id}\n"
    assert [m.member_id for m in registry.conference("room1").members] == [a.member_id]
    listing = (await client.send("api conference list")).text
    assert listing.startswith("+OK Conference room1 (1 member rate: 8000")
    client.writer.close()


async def test_events_plain_and_json_in_freeswitch_order(
    setup: tuple[ConferenceRegistry, EslServer, FakeMedia],
) -> None:
    registry, server, _ = setup
    plain = await connect(server)
    ack = await plain.send("event plain CUSTOM conference::maintenance")
    assert ack.reply_text == "+OK event listener enabled plain"
    js = await connect(server)
    assert (await js.send("event json CUSTOM conference::maintenance")).reply_text == (
        "+OK event listener enabled json"
    )
    member: Member = registry.join("room1", make_leg("p1", participant="p-7f3a"))
    registry.talking_changed(member.key, True, 5000)
    registry.talking_changed(member.key, False)
    registry.set_mute("room1", str(member.member_id), True)
    registry.kick("room1", str(member.member_id))  # no SIP side: leaves at once
    expected = [
        "conference-create",
        "add-member",
        "floor-change",
        "start-talking",
        "stop-talking",
        "mute-member",
        "kick-member",
        "floor-change",
        "del-member",
        "conference-destroy",
    ]
    for client, ctype in ((plain, "text/event-plain"), (js, "text/event-json")):
        events = []
        for _ in expected:
            frame = await client.next()
            assert frame.content_type == ctype
            events.append(parse_event(frame))
        assert [e["Action"] for e in events] == expected
        add = events[1]
        assert add["Event-Subclass"] == "conference::maintenance"
        assert add["Member-ID"] == str(member.member_id)
        assert add["variable_sip_call_id"] == "p1-call@127.0.0.1"
        assert add["variable_sip_h_X-Participant"] == "p-7f3a"
        assert add["Conference-Size"] == "1"
        assert events[5]["Speak"] == "false"
        assert events[-1]["Conference-Size"] == "0"
    # noevents stops the flow; exit says bye and closes.
    assert (await plain.send("noevents")).reply_text == "+OK no longer listening for events"
    registry.join("room2", make_leg("p2"))
    bye = await plain.send("exit")
    assert bye.reply_text == "+OK bye"
    assert (await plain.next()).content_type == "text/disconnect-notice"
    assert await plain.closed()


async def test_bgapi_replies_job_uuid_and_fires_background_job(
    setup: tuple[ConferenceRegistry, EslServer, FakeMedia],
) -> None:
    _, server, _ = setup
    client = await connect(server)
    await client.send("event plain BACKGROUND_JOB")
    reply = await client.send("bgapi conference list")
    assert reply.reply_text is not None and reply.reply_text.startswith("+OK Job-UUID: ")
    job = reply.header("Job-UUID")
    event = parse_event(await client.next())
    assert event["Event-Name"] == "BACKGROUND_JOB"
    assert event["Job-UUID"] == job
    assert event["Job-Command"] == "conference"
    assert event.body == "+OK No active conferences.\n"


def test_json_list_is_cjson_formatted_like_freeswitch() -> None:
    registry = ConferenceRegistry(EventContext(hostname="t"))
    registry.join("room1", make_leg("uac-a"))
    body = execute_api(registry, "conference room1 json_list", 0.0)
    assert body.startswith('[{\n\t\t"conference_name":\t"room1",\n\t\t"member_count":\t1,')
    assert body.endswith("\t\t\t}]\n\t}]")
    data = json.loads(body)
    assert data[0]["members"][0]["flags"]["has_floor"] is True
    assert conference_api(registry, "room9 json_list") == "-ERR Conference room9 not found\n"
