"""The focus's timers by key, on one event-loop timer.

The focus sets a few timers per join (RFC 3262 §3 reliable 183, RFC 3261 §13.3.1.4 2xx
retransmission, the prune after 64*T1) and cancels most of them within milliseconds (the PRACK
and ACK come). A `loop.call_at` per timer is a handle, a copied context and a push onto the
loop's heap, and each cancelled handle is popped again later. Here a timer is a tuple on a heap
of our own and a dict entry; the loop holds one handle, for the earliest deadline. At a steady
rate of joins a new deadline is rarely the earliest (those set before it are due sooner), so
that handle seldom moves.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable, Hashable

log = logging.getLogger(__name__)

# Cancelled or replaced entries stay on the heap until due; once they are more than half of it
# (and more than this many), the heap is rebuilt without them, so it stays within twice the
# live timers whatever their lengths (a session timer may run for half an hour).
_COMPACT_ABOVE = 64


class TimerQueue:
    """`set(key, at)` (replacing the key's timer, if any), `cancel(key)`; when `at` comes,
    `fire(key)` is called once from the loop. Times are the loop's clock (`loop.time()`)."""

    def __init__(
        self, loop: Callable[[], asyncio.AbstractEventLoop], fire: Callable[[Hashable], None]
    ) -> None:
        self._loop = loop
        self._fire = fire
        self._heap: list[tuple[float, int, Hashable]] = []
        self._live: dict[Hashable, int] = {}  # key -> the sequence number of its entry
        self._seq = itertools.count()
        self._stale = 0  # heap entries no longer live
        self._handle: asyncio.TimerHandle | None = None
        self._handle_at: float | None = None
        self._firing = False  # inside _on_timer: it sets the handle (and compacts) at its end

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._live

    def set(self, key: Hashable, at: float) -> None:
        seq = next(self._seq)
        if self._live.get(key) is not None:
            self._stale += 1  # the old entry is replaced
        self._live[key] = seq
        heapq.heappush(self._heap, (at, seq, key))
        if self._firing:
            return
        if self._handle_at is None or at < self._handle_at:
            self._arm(at)
        elif self._stale > _COMPACT_ABOVE and 2 * self._stale > len(self._heap):
            self._compact()

    def cancel(self, key: Hashable) -> bool:
        """Whether the key had a timer (now cancelled)."""
        if self._live.pop(key, None) is None:
            return False
        self._stale += 1
        if self._firing:
            return True
        if not self._live:
            self.clear()  # nothing left to wake up for
        elif self._stale > _COMPACT_ABOVE and 2 * self._stale > len(self._heap):
            self._compact()
        return True

    def clear(self) -> None:
        self._live.clear()
        self._heap.clear()  # in place: _on_timer may be walking it
        self._stale = 0
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._handle_at = None

    def _compact(self) -> None:
        live = self._live
        self._heap = [entry for entry in self._heap if live.get(entry[2]) == entry[1]]
        heapq.heapify(self._heap)
        self._stale = 0

    def _arm(self, at: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle_at = at
        self._handle = self._loop().call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._handle = self._handle_at = None
        loop = self._loop()
        # The loop runs a handle once its time is within the clock's resolution; so do we,
        # or a deadline a hair ahead would set the handle again and again.
        due = loop.time() + getattr(loop, "_clock_resolution", 0.0)
        heap, live = self._heap, self._live
        self._firing = True
        try:
            while heap and heap[0][0] <= due:
                _at, seq, key = heapq.heappop(heap)
                if live.get(key) != seq:
                    self._stale -= 1
                    continue
                del live[key]
                try:
                    self._fire(key)  # may set or cancel timers, this one's key included
                except Exception:  # one failing timer must not hold back the others
                    log.exception("timer %r failed", key)
        finally:
            self._firing = False
            # Stale entries left on top would only wake the loop for nothing.
            while heap and live.get(heap[0][2]) != heap[0][1]:
                heapq.heappop(heap)
                self._stale -= 1
            if not live:
                self.clear()
            else:
                if self._stale > _COMPACT_ABOVE and 2 * self._stale > len(heap):
                    self._compact()
                self._arm(self._heap[0][0])
