"""TimerQueue: the focus's timers on one loop handle, driven by a fake loop clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any, cast

import pytest

from app.service import timer_queue
from app.service.timer_queue import TimerQueue


class FakeHandle:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """What TimerQueue uses of a loop: time(), call_at(), the clock's resolution."""

    _clock_resolution = 1e-9

    def __init__(self) -> None:
        self.now = 0.0
        self.handles: list[FakeHandle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeHandle:
        handle = FakeHandle(when, callback)
        self.handles.append(handle)
        return handle

    def pending(self) -> list[FakeHandle]:
        return [h for h in self.handles if not h.cancelled]

    def advance(self, to: float) -> None:
        """Run the handles due by `to`, as the loop would, earliest first."""
        while True:
            due = [h for h in self.pending() if h.when <= to]
            if not due:
                break
            handle = min(due, key=lambda h: h.when)
            self.now = max(self.now, handle.when)
            handle.cancelled = True  # ran
            handle.callback()
        self.now = to


def make() -> tuple[TimerQueue, FakeLoop, list[Hashable]]:
    loop = FakeLoop()
    fired: list[Hashable] = []
    queue = TimerQueue(lambda: cast(asyncio.AbstractEventLoop, loop), fired.append)
    return queue, loop, fired


def test_timers_fire_once_in_deadline_order_on_one_loop_handle() -> None:
    queue, loop, fired = make()
    queue.set("prune", 40.0)
    queue.set("2xx", 0.5)
    queue.set("100rel", 0.5)
    queue.set("session", 10.0)
    assert len(loop.pending()) == 1 and loop.pending()[0].when == 0.5
    loop.advance(0.5)
    assert fired == ["2xx", "100rel"]
    assert [h.when for h in loop.pending()] == [10.0]
    loop.advance(100.0)
    assert fired == ["2xx", "100rel", "session", "prune"]
    assert not loop.pending() and len(queue) == 0


def test_a_later_timer_leaves_the_loop_handle_alone() -> None:
    queue, loop, _fired = make()
    queue.set(1, 0.5)
    for n in range(2, 50):
        queue.set(n, 0.5 + n / 1000)
    assert len(loop.handles) == 1  # one call_at for all of them


def test_cancelled_and_replaced_timers_do_not_fire() -> None:
    queue, loop, fired = make()
    queue.set("a", 1.0)
    queue.set("b", 2.0)
    queue.set("c", 3.0)
    assert queue.cancel("a") is True
    assert queue.cancel("a") is False
    queue.set("b", 5.0)  # moved later
    loop.advance(4.0)
    assert fired == ["c"]
    loop.advance(5.0)
    assert fired == ["c", "b"]
    assert "b" not in queue and not loop.pending()


def test_cancelling_the_last_timer_drops_the_loop_handle() -> None:
    queue, loop, fired = make()
    queue.set("a", 1.0)
    queue.cancel("a")
    assert not loop.pending()
    loop.advance(10.0)
    assert fired == []


def test_a_timer_set_while_firing_is_kept_and_woken_for() -> None:
    loop = FakeLoop()
    fired: list[Hashable] = []
    queue: TimerQueue

    def fire(key: Hashable) -> None:
        fired.append(key)
        if key == "100rel":
            queue.set("100rel", loop.now + 1.0)  # retransmit again later (RFC 3262 §3)
            queue.cancel("other")

    queue = TimerQueue(lambda: cast(asyncio.AbstractEventLoop, loop), fire)
    queue.set("100rel", 0.5)
    queue.set("other", 0.7)
    queue.set("prune", 40.0)
    loop.advance(0.5)
    assert fired == ["100rel"]
    assert [h.when for h in loop.pending()] == [1.5]
    loop.advance(1.5)
    assert fired == ["100rel", "100rel"]
    assert "other" not in queue and "prune" in queue


def test_a_failing_timer_does_not_hold_back_the_others() -> None:
    loop = FakeLoop()
    fired: list[Hashable] = []

    def fire(key: Hashable) -> None:
        if key == "bad":
            raise RuntimeError("boom")
        fired.append(key)

    queue = TimerQueue(lambda: cast(asyncio.AbstractEventLoop, loop), fire)
    queue.set("bad", 1.0)
    queue.set("good", 1.0)
    loop.advance(1.0)
    assert fired == ["good"]


def test_stale_entries_are_dropped_from_the_heap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Timers cancelled long before they are due (session timers of participants who left)
    must not pile up on the heap."""
    monkeypatch.setattr(timer_queue, "_COMPACT_ABOVE", 8)
    queue, loop, fired = make()
    queue.set("prune", 1.0)
    for n in range(1000):
        queue.set(("session", n), 1800.0 + n)
        queue.cancel(("session", n))
    heap: list[Any] = queue._heap
    assert len(heap) <= 2 * len(queue) + 8 + 1
    loop.advance(5000.0)
    assert fired == ["prune"]


def test_clear_cancels_everything() -> None:
    queue, loop, fired = make()
    queue.set("a", 1.0)
    queue.set("b", 2.0)
    queue.clear()
    assert not loop.pending() and len(queue) == 0
    loop.advance(10.0)
    assert fired == []
