"""A deterministic id source for driving the sans-IO focus in tests and benchmarks."""

from __future__ import annotations

import itertools


class CountingIds:
    """Satisfies `app.focus.core.IdSource` with predictable, unique values."""

    def __init__(self) -> None:
        self._n = itertools.count(1)

    def conference_id(self) -> str:
        return f"c{next(self._n)}"

    def participant_id(self) -> str:
        return f"p{next(self._n)}"

    def tag(self) -> str:
        return f"t{next(self._n)}"

    def call_id(self) -> str:
        return f"call{next(self._n)}@focus"

    def via(self, transport: str) -> str:
        return f"SIP/2.0/{transport} 127.0.0.1:5070;rport;branch=z9hG4bK-{next(self._n)}"
