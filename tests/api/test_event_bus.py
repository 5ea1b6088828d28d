"""The in-process event bus behind GET /events."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app.service.events import ChangeEvent, EventBus, Subscriber


async def test_fan_out_in_order() -> None:
    bus = EventBus()
    a, b = bus.subscribe("a"), bus.subscribe("b")
    for i in range(3):
        bus.publish(ChangeEvent("participant.joined", "c1", f"p{i}"))
    for sub in (a, b):
        got = [await asyncio.wait_for(sub.get(), 5) for _ in range(3)]
        assert [e.participant_id for e in got if e is not None] == ["p0", "p1", "p2"]


async def test_slow_consumer_is_dropped_and_others_keep_going(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    slow = bus.subscribe("slow", maxsize=2)
    fast = bus.subscribe("fast", maxsize=100)
    with caplog.at_level(logging.WARNING, logger="app.service.events"):
        for i in range(5):
            bus.publish(ChangeEvent("k", "c", str(i)))
    assert slow.dropped and not fast.dropped
    assert bus.subscriber_count == 1
    assert "slow" in caplog.text
    # The dropped consumer gets what was queued, then its stream ends instead of hanging.
    assert [await _next_id(slow) for _ in range(3)] == ["0", "1", None]
    assert [await _next_id(fast) for _ in range(5)] == ["0", "1", "2", "3", "4"]


async def _next_id(sub: Subscriber) -> str | None:
    event = await asyncio.wait_for(sub.get(), 5)
    return None if event is None else event.participant_id


async def test_close_ends_every_stream_and_unsubscribe() -> None:
    bus = EventBus()
    a = bus.subscribe()
    b = bus.subscribe()
    b.close()
    assert bus.subscriber_count == 1
    bus.close()
    assert await asyncio.wait_for(a.get(), 5) is None
    late = bus.subscribe()
    assert await asyncio.wait_for(late.get(), 5) is None


def test_event_json() -> None:
    event = ChangeEvent("conference.ended", "c1", None, {"actor": "api:ops"})
    data = event.to_json()
    assert data["kind"] == "conference.ended" and data["participant_id"] is None
    assert data["at"].endswith("+00:00")
