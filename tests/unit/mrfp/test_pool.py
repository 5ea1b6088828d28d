"""MrfpPool: least-loaded connected node for a new conference, sticky afterwards."""

from __future__ import annotations

import pytest

from app.focus.media import (
    ConferenceCreated,
    ConferenceDestroyed,
    MediaEvent,
    MemberInfo,
    NodeConnectionChanged,
)
from app.mrfp.pool import MrfpPool
from app.mrfp.port import EventSink, MediaNode, MrfpUnavailable


class FakeNode:
    def __init__(self, name: str, connected: bool = True) -> None:
        self.name = name
        self._connected = connected
        self.sink: EventSink | None = None
        self.stopped = False

    @property
    def connected(self) -> bool:
        return self._connected

    async def start(self, sink: EventSink) -> None:
        self.sink = sink

    async def stop(self) -> None:
        self.stopped = True

    async def list_members(self, conference: str) -> list[MemberInfo]:
        return []

    async def conference_count(self) -> int:
        return 0

    async def kick(self, conference: str, member_id: str) -> None: ...
    async def hup(self, conference: str, member_id: str) -> None: ...
    async def mute(self, conference: str, member_id: str) -> None: ...
    async def unmute(self, conference: str, member_id: str) -> None: ...
    async def deaf(self, conference: str, member_id: str) -> None: ...
    async def undeaf(self, conference: str, member_id: str) -> None: ...
    async def lock(self, conference: str) -> None: ...
    async def unlock(self, conference: str) -> None: ...
    async def play(self, conference: str, path: str, member_id: str | None = None) -> None: ...
    async def record_start(self, conference: str, path: str) -> None: ...
    async def record_stop(self, conference: str, path: str) -> None: ...


def _is_node(n: MediaNode) -> MediaNode:  # the fake satisfies the Protocol (mypy checks it)
    return n


async def test_least_loaded_then_sticky() -> None:
    a, b = FakeNode("a"), FakeNode("b")
    pool = MrfpPool([_is_node(a), _is_node(b)])
    seen: list[MediaEvent] = []
    await pool.start(seen.append)
    assert pool.place("c1") is a  # tie: first configured
    assert pool.place("c2") is b
    assert pool.place("c3") is a
    assert (pool.load("a"), pool.load("b")) == (2, 1)
    assert pool.place("c1") is a  # sticky
    b._connected = False
    assert pool.place("c2") is b  # sticky even while b is down
    assert pool.place("c4") is a  # new ones avoid b
    # destroyed conferences leave the count; events pass through
    assert a.sink is not None
    a.sink(ConferenceDestroyed("a", "c1"))
    a.sink(ConferenceDestroyed("a", "c3"))
    a.sink(NodeConnectionChanged("a", True))
    assert pool.load("a") == 1
    assert pool.node_of("c1") is None
    assert seen[-1] == NodeConnectionChanged("a", True)
    await pool.stop()
    assert a.stopped and b.stopped


async def test_no_node_connected_raises() -> None:
    pool = MrfpPool([FakeNode("a", connected=False), FakeNode("b", connected=False)])
    await pool.start(lambda e: None)
    with pytest.raises(MrfpUnavailable):
        pool.place("c1")


async def test_conference_created_elsewhere_counts_and_bind() -> None:
    a, b = FakeNode("a"), FakeNode("b")
    pool = MrfpPool([a, b])
    await pool.start(lambda e: None)
    assert a.sink is not None
    a.sink(ConferenceCreated("a", "dialin"))
    assert pool.node_of("dialin") is a
    assert pool.place("c1") is b
    pool.bind("restored", "b")
    assert pool.load("b") == 2
    with pytest.raises(KeyError):
        pool.bind("x", "nope")
    with pytest.raises(ValueError):
        MrfpPool([FakeNode("a"), FakeNode("a")])
