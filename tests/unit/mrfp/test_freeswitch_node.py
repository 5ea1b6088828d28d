"""FreeSwitchNode against a server replaying a real FreeSWITCH 1.10.12's recorded bytes."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator

import pytest

from app.focus.media import (
    ConferenceCreated,
    ConferenceDestroyed,
    MemberAdded,
    MemberMuteChanged,
    MemberRemovalCause,
    MemberRemoved,
    MemberTalkingChanged,
    NodeConnectionChanged,
)
from app.mrfp.esl import parse_event, render_event_plain
from app.mrfp.esl.frames import Frame
from app.mrfp.freeswitch import FreeSwitchNode, backoff_delays
from app.mrfp.port import CommandFailed, ConferenceNotFound, MemberNotFound, MrfpUnavailable
from tests.support.esl_replay import FIXTURES, EslReplayServer, recorded_event
from tests.support.media_sink import MediaSink

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="../shared fixtures missing")

WAIT = 15.0  # generous: a loaded 2-core machine

# What events-plain/02-add-member-room1.txt (uac-a joining room1) reports.
UAC_A_ADDED = MemberAdded(
    "fs1",
    "room1",
    "1",
    None,
    channel_uuid="665ad1a9-546f-46fe-aa9a-0da28112bc82",
    caller_id_number="uac-a",
)


@pytest.fixture
async def server() -> AsyncIterator[EslReplayServer]:
    srv = EslReplayServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


def make_node(server: EslReplayServer, password: str = "ClueCon", **kw: float) -> FreeSwitchNode:
    opts: dict[str, float] = {
        "command_timeout": 5.0,
        "connect_timeout": 5.0,
        "backoff_initial": 0.1,
        "backoff_max": 0.4,
        "backoff_jitter": 0.0,
    }
    opts.update(kw)
    return FreeSwitchNode("fs1", "127.0.0.1", server.port, password, **opts)  # type: ignore[arg-type]


@pytest.fixture
async def node(server: EslReplayServer) -> AsyncIterator[tuple[FreeSwitchNode, MediaSink]]:
    sink = MediaSink()
    n = make_node(server)
    await n.start(sink)
    try:
        assert await n.wait_connected(WAIT)
        await server.wait_for(lambda: server.subscribed == 1, WAIT)
        yield n, sink
    finally:
        await n.stop()


async def test_auth_and_subscription(
    server: EslReplayServer, node: tuple[FreeSwitchNode, MediaSink]
) -> None:
    n, sink = node
    assert n.connected
    assert server.commands[:2] == ["auth ClueCon", "event plain CUSTOM conference::maintenance"]
    assert sink.events[0] == NodeConnectionChanged("fs1", True)


async def test_json_list_gives_members(node: tuple[FreeSwitchNode, MediaSink]) -> None:
    n, _ = node
    members = await n.list_members("room1")
    assert [m.member_id for m in members] == ["2", "1"]
    assert members[0].channel_uuid == "c99ee637-5ae2-49d0-9a88-86cfedd27bee"
    assert members[1].caller_id_number == "uac-a"
    assert all(m.talking and not m.muted and not m.deaf for m in members)
    assert members[1].flags["has_floor"] is True


async def test_commands_and_typed_errors(
    server: EslReplayServer, node: tuple[FreeSwitchNode, MediaSink]
) -> None:
    n, _ = node
    await n.mute("room1", "1")
    await n.unmute("room1", "1")
    await n.kick("room1", "2")  # recorded `+OK kicked 2`
    with pytest.raises(MemberNotFound):
        await n.kick("room1", "2")  # recorded `-ERR Non-Existant ID 2`
    with pytest.raises(ConferenceNotFound):
        await n.list_members("nosuchroom")
    with pytest.raises(ConferenceNotFound):
        await n.kick("nosuchroom", "1")
    with pytest.raises(CommandFailed):
        await n.api("nosuchcommand")
    with pytest.raises(CommandFailed):
        await n.kick("room1", "2\n\nexit")  # never sent: it would inject a command
    assert "api conference room1 mute 1" in server.commands
    assert not any("exit" in c for c in server.commands)


async def test_command_timeout_raises_unavailable(server: EslReplayServer) -> None:
    sink = MediaSink()
    n = make_node(server, command_timeout=0.3)
    await n.start(sink)
    try:
        assert await n.wait_connected(WAIT)
        server.set_reply("api conference slow list")  # no reply at all
        with pytest.raises(MrfpUnavailable):
            await n.api("conference slow list")
    finally:
        await n.stop()


async def test_recorded_events_become_media_events(
    server: EslReplayServer, node: tuple[FreeSwitchNode, MediaSink]
) -> None:
    _, sink = node
    for name in (
        "01-conference-create-room1",
        "02-add-member-room1",
        "03-add-member-room1",
        "04-floor-change-room1",
        "05-start-talking-room1",
        "09-stop-talking-room1",
        "11-mute-member-room1",
        "12-unmute-member-room1",
        "14-kick-member-room1",
        "16-del-member-room1",
        "19-del-member-room1",
        "20-conference-destroy-room1",
    ):
        await server.push_event(recorded_event(f"events-plain/{name}.txt"))
    await sink.wait_for(lambda ev: any(isinstance(e, ConferenceDestroyed) for e in ev))
    got = sink.media()
    assert got == [
        ConferenceCreated("fs1", "room1"),
        UAC_A_ADDED,
        MemberAdded(
            "fs1",
            "room1",
            "2",
            None,
            channel_uuid="c99ee637-5ae2-49d0-9a88-86cfedd27bee",
            caller_id_number="uac-b",
        ),
        MemberTalkingChanged("fs1", "room1", "1", True),
        MemberTalkingChanged("fs1", "room1", "1", False),
        MemberMuteChanged("fs1", "room1", "1", True),
        MemberMuteChanged("fs1", "room1", "1", False),
        MemberRemoved("fs1", "room1", "2", None, MemberRemovalCause.KICKED),
        MemberRemoved("fs1", "room1", "1", None, MemberRemovalCause.HANGUP),
        ConferenceDestroyed("fs1", "room1"),
    ]


async def test_verbose_events_tie_member_to_sip_leg(
    server: EslReplayServer, node: tuple[FreeSwitchNode, MediaSink]
) -> None:
    _, sink = node
    for name in ("plain-01-conference-create", "plain-02-add-member", "plain-05-del-member"):
        await server.push_event(recorded_event(f"events-verbose/{name}.txt"))
    await sink.wait_for(lambda ev: any(isinstance(e, MemberRemoved) for e in ev))
    added = sink.of(MemberAdded)
    assert len(added) == 1
    assert isinstance(added[0], MemberAdded)
    assert added[0].call_id == "828774679bd1492c86135a5cf719f87b@acc"
    assert added[0].participant == "p-7f3a"
    removed = sink.of(MemberRemoved)
    assert isinstance(removed[0], MemberRemoved)
    assert removed[0].call_id == "828774679bd1492c86135a5cf719f87b@acc"


def _event_with_member(name: str, member_id: str) -> bytes:
    """A recorded add-member event with another Member-ID (a member not in the recordings)."""
    ev = parse_event(Frame.parse(recorded_event(name)))
    headers = [(k, member_id if k == "Member-ID" else v) for k, v in ev.headers]
    return render_event_plain(headers, ev.body)


async def test_reconnect_with_backoff_then_reconcile(server: EslReplayServer) -> None:
    sink = MediaSink()
    n = make_node(server)
    await n.start(sink)
    try:
        assert await n.wait_connected(WAIT)
        await server.wait_for(lambda: server.subscribed == 1, WAIT)
        # room1 with members 1, 2 and 9 (9 will vanish); room2 with member 3 (room2 vanishes)
        for name in ("01-conference-create-room1", "02-add-member-room1", "03-add-member-room1"):
            await server.push_event(recorded_event(f"events-plain/{name}.txt"))
        await server.push_event(_event_with_member("events-plain/02-add-member-room1.txt", "9"))
        for name in ("21-conference-create-room2", "22-add-member-room2"):
            await server.push_event(recorded_event(f"events-plain/{name}.txt"))
        await sink.wait_for(lambda ev: len([e for e in ev if isinstance(e, MemberAdded)]) == 4)

        # FreeSWITCH goes away; the next 3 connection attempts are refused.
        server.refuse_connections = 3
        server.set_api_body("api conference room2 json_list", "-ERR Conference room2 not found\n")
        accepted_before = len(server.accept_times)
        await server.drop_all()
        await sink.wait_for(lambda ev: NodeConnectionChanged("fs1", False) in ev)
        with pytest.raises(MrfpUnavailable):
            await n.kick("room1", "1")
        await sink.wait_for(lambda ev: ev.count(NodeConnectionChanged("fs1", True)) == 2)
        await sink.wait_for(lambda ev: any(isinstance(e, ConferenceDestroyed) for e in ev))

        # Backoff after the drop: 0.1 s, then 0.2, 0.4, 0.4 (capped) between the attempts.
        times = server.accept_times[accepted_before:]
        assert len(times) >= 4
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert gaps[0] >= 0.2 * 0.9
        assert gaps[1] >= 0.4 * 0.9
        assert gaps[2] >= 0.4 * 0.9  # capped
        assert n.reconnects == 1

        removed = sink.of(MemberRemoved)
        assert MemberRemoved("fs1", "room1", "9", None, MemberRemovalCause.UNKNOWN) in removed
        assert MemberRemoved("fs1", "room2", "3", None, MemberRemovalCause.UNKNOWN) in removed
        assert len(removed) == 2  # members 1 and 2 are still in room1's recorded json_list
        assert sink.of(ConferenceDestroyed) == [ConferenceDestroyed("fs1", "room2")]
        # and the node works again
        await n.mute("room1", "1")
    finally:
        await n.stop()


async def test_bad_password_not_connected_and_logged_without_password(
    server: EslReplayServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "Sup3rSecretPw"
    sink = MediaSink()
    n = make_node(server, password=secret, backoff_initial=5.0, backoff_max=5.0)
    await n.start(sink)
    try:
        await server.wait_for(lambda: f"auth {secret}" in server.commands, WAIT)

        async def logged() -> None:
            while not any(r.levelno >= logging.ERROR for r in caplog.records):
                await asyncio.sleep(0.05)

        await asyncio.wait_for(logged(), WAIT)
        assert not n.connected
        assert not sink.of(NodeConnectionChanged)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert "password" in errors[0].getMessage()
        assert all(secret not in r.getMessage() for r in caplog.records)
        assert secret not in repr(n)
        with pytest.raises(MrfpUnavailable):
            await n.list_members("room1")
    finally:
        await n.stop()


def test_backoff_delays_double_and_cap() -> None:
    gen = backoff_delays(0.5, 4.0)
    assert [next(gen) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    jittered = backoff_delays(1.0, 8.0, jitter=0.5)
    for expected in (1.0, 2.0, 4.0, 8.0, 8.0):
        assert expected * 0.5 <= next(jittered) <= expected


async def test_commands_before_start_raise_unavailable() -> None:
    n = FreeSwitchNode("fs9", "127.0.0.1", 1, "x")
    with pytest.raises(MrfpUnavailable):
        await n.kick("room1", "1")


async def test_events_in_one_write_and_cut_across_writes(
    server: EslReplayServer, node: tuple[FreeSwitchNode, MediaSink]
) -> None:
    _, sink = node
    names = ("01-conference-create-room1", "02-add-member-room1", "04-floor-change-room1")
    together = b"".join(recorded_event(f"events-plain/{n}.txt") for n in names)
    await server.push_event(together)  # several events in one read
    removal = recorded_event("events-plain/19-del-member-room1.txt")
    for i in range(0, len(removal), 97):  # one event over many reads
        await server.push_event(removal[i : i + 97])
    await sink.wait_for(lambda ev: any(isinstance(e, MemberRemoved) for e in ev))
    got = sink.media()
    assert got == [
        ConferenceCreated("fs1", "room1"),
        UAC_A_ADDED,
        MemberRemoved("fs1", "room1", "1", None, MemberRemovalCause.HANGUP),
    ]


async def test_connection_closed_inside_a_frame_is_a_disconnect(
    server: EslReplayServer, node: tuple[FreeSwitchNode, MediaSink]
) -> None:
    n, sink = node
    frame = recorded_event("events-plain/02-add-member-room1.txt")
    await server.push_event(frame[: len(frame) // 2])
    await server.drop_all()
    await sink.wait_for(lambda ev: NodeConnectionChanged("fs1", False) in ev)
    await sink.wait_for(lambda ev: ev.count(NodeConnectionChanged("fs1", True)) == 2)
    assert not sink.of(MemberAdded)
    await n.mute("room1", "1")  # commands work on the new connection


async def test_a_frame_that_is_not_esl_is_reported_not_only_debug_logged(
    server: EslReplayServer,
    node: tuple[FreeSwitchNode, MediaSink],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A connection closed by the peer is routine; a stream the reader cannot frame (or a
    # fault in the reader itself) ends the connection too, and must be visible in the log.
    caplog.set_level(logging.DEBUG, logger="app.mrfp.freeswitch")
    _, sink = node
    await server.push_event(b"Content-Type: text/event-plain\nContent-Length: many\n\n")
    await sink.wait_for(lambda ev: NodeConnectionChanged("fs1", False) in ev)
    causes = [r.exc_info[1] for r in caplog.records if r.levelno >= logging.WARNING and r.exc_info]
    assert any("Content-Length" in str(cause) for cause in causes)
