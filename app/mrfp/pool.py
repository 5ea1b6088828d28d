"""Several MRFP nodes: a new conference goes to the least-loaded connected node and stays
there (issue 5 §3). Load is the number of conferences the pool has placed on (or seen created
by) each node; a conference leaves the count when its node reports it destroyed.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.focus.media import ConferenceCreated, ConferenceDestroyed, MediaEvent
from app.mrfp.port import EventSink, MediaNode, MrfpUnavailable


class MrfpPool:
    """Places conferences on nodes. `start` starts every node with the pool's own sink, which
    keeps the counts and passes every event on."""

    def __init__(self, nodes: Sequence[MediaNode]) -> None:
        names = [n.name for n in nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"node names must be unique: {names}")
        self._nodes: dict[str, MediaNode] = {n.name: n for n in nodes}
        self._placed: dict[str, str] = {}  # conference -> node name
        self._sink: EventSink | None = None

    @property
    def nodes(self) -> list[MediaNode]:
        return list(self._nodes.values())

    async def start(self, sink: EventSink) -> None:
        self._sink = sink
        for node in self._nodes.values():
            await node.start(self._on_event)

    async def stop(self) -> None:
        for node in self._nodes.values():
            await node.stop()

    def load(self, node_name: str) -> int:
        """Conferences placed on a node."""
        return sum(1 for n in self._placed.values() if n == node_name)

    def node_of(self, conference: str) -> MediaNode | None:
        """The node holding `conference`, if placed."""
        name = self._placed.get(conference)
        return self._nodes[name] if name is not None else None

    def place(self, conference: str) -> MediaNode:
        """The node for `conference`: where it already is (sticky, even while that node is
        disconnected: its members' media are there), else the least-loaded connected node
        (ties go to the first configured). `MrfpUnavailable` when none is connected."""
        placed = self.node_of(conference)
        if placed is not None:
            return placed
        candidates = [n for n in self._nodes.values() if n.connected]
        if not candidates:
            raise MrfpUnavailable("no media processor node is connected")
        node = min(candidates, key=lambda n: self.load(n.name))
        self._placed[conference] = node.name
        return node

    def bind(self, conference: str, node_name: str) -> None:
        """Record where a conference already is (e.g. reloaded from the database)."""
        if node_name not in self._nodes:
            raise KeyError(node_name)
        self._placed[conference] = node_name

    def release(self, conference: str) -> None:
        self._placed.pop(conference, None)

    def _on_event(self, event: MediaEvent) -> None:
        if isinstance(event, ConferenceCreated):
            # A conference created on a node without `place` (dial-in straight to the MRFP)
            # still counts toward that node's load.
            self._placed.setdefault(event.conference, event.node)
        elif (
            isinstance(event, ConferenceDestroyed)
            and self._placed.get(event.conference) == event.node
        ):
            del self._placed[event.conference]
        if self._sink is not None:
            self._sink(event)
