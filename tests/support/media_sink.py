"""A media-processor event sink for tests: records what a node reports and waits for it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from app.focus.media import MediaEvent, NodeConnectionChanged

WAIT = 15.0  # generous: a loaded 2-core machine


class MediaSink:
    """The `EventSink` a node under test reports to, in the loop's thread."""

    def __init__(self) -> None:
        self.events: list[MediaEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: MediaEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, pred: Callable[[list[MediaEvent]], bool]) -> None:
        async def loop() -> None:
            while not pred(self.events):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), WAIT)

    def of(self, kind: type) -> list[MediaEvent]:
        return [e for e in self.events if isinstance(e, kind)]

    def media(self) -> list[MediaEvent]:
        """What was reported about conferences: every event but connection changes."""
        return [e for e in self.events if not isinstance(e, NodeConnectionChanged)]
