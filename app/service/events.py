"""In-process change events: the focus publishes, `GET /events` (SSE) and others consume.

Publishing never blocks the focus: each consumer has a bounded queue, and a consumer that
falls that far behind is dropped (its stream ends; the client reconnects and re-reads state).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 1000


def _now() -> datetime:
    return datetime.now(UTC)


class ChangeKind(StrEnum):
    """The kinds of change published here and recorded in the event log (same names)."""

    CONFERENCE_CREATED = "conference.created"
    CONFERENCE_LOCKED = "conference.locked"
    CONFERENCE_UNLOCKED = "conference.unlocked"
    CONFERENCE_ENDED = "conference.ended"
    PARTICIPANT_DIALING = "participant.dialing"
    PARTICIPANT_JOINED = "participant.joined"
    PARTICIPANT_STATUS = "participant.status"
    PARTICIPANT_MUTED = "participant.muted"
    PARTICIPANT_UNMUTED = "participant.unmuted"
    PARTICIPANT_LEFT = "participant.left"
    PARTICIPANT_KICKED = "participant.kicked"
    SUBSCRIPTION_ADDED = "subscription.added"
    SUBSCRIPTION_ENDED = "subscription.ended"


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One change: `kind` is a ChangeKind value (a plain string is accepted too)."""

    kind: str
    conference_id: str | None = None
    participant_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=_now)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "conference_id": self.conference_id,
            "participant_id": self.participant_id,
            "data": self.data,
            "at": self.at.isoformat(),
        }


class Subscriber:
    """One consumer's queue. `None` in the queue means the stream is over."""

    def __init__(self, bus: EventBus, maxsize: int, name: str) -> None:
        self._bus = bus
        self.name = name
        self.queue: asyncio.Queue[ChangeEvent | None] = asyncio.Queue(maxsize + 1)
        self.maxsize = maxsize
        self.dropped = False

    async def get(self) -> ChangeEvent | None:
        """The next event, or None once the bus closed or dropped this consumer."""
        return await self.queue.get()

    async def __aiter__(self) -> AsyncIterator[ChangeEvent]:
        while (event := await self.queue.get()) is not None:
            yield event

    def close(self) -> None:
        self._bus.unsubscribe(self)

    def _end(self) -> None:
        # The queue has one slot beyond maxsize reserved for this end marker.
        if self.queue.full():
            while not self.queue.empty():
                self.queue.get_nowait()
        self.queue.put_nowait(None)


class EventBus:
    """Fan-out of ChangeEvents to any number of asyncio consumers, on one event loop."""

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._subscribers: set[Subscriber] = set()
        self._closed = False

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def subscribe(self, name: str = "consumer", maxsize: int | None = None) -> Subscriber:
        sub = Subscriber(self, maxsize or self.queue_size, name)
        if self._closed:
            sub._end()
        else:
            self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)

    def publish(self, event: ChangeEvent) -> None:
        """Deliver to every consumer now; never blocks, never raises."""
        for sub in list(self._subscribers):
            if sub.queue.qsize() >= sub.maxsize:
                # A slow consumer must not hold up the focus or grow memory without bound.
                log.warning("event consumer %s is %d events behind; dropped", sub.name, sub.maxsize)
                sub.dropped = True
                self._subscribers.discard(sub)
                sub._end()
                continue
            sub.queue.put_nowait(event)

    def close(self) -> None:
        """End every stream (server shutdown)."""
        self._closed = True
        for sub in list(self._subscribers):
            sub._end()
        self._subscribers.clear()
