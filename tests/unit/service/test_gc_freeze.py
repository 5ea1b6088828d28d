"""Long-lived objects are frozen out of the collector's walks; cycles among them are still
taken back by the periodic full sweep."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

import app.service.focus_service as focus_service
from app.mrfp.pool import MrfpPool
from app.net.endpoint import SipEndpoint
from app.service.focus_service import FocusService
from tests.support.focus_service import NoTransport, focus_config


class _Node:
    """Two objects referring to each other: garbage only the cyclic collector finds."""

    def __init__(self) -> None:
        self.other: _Node | None = None


async def test_old_objects_are_frozen_and_frozen_cycles_still_collected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(focus_service, "GC_FREEZE_INTERVAL", 0.05)
    monkeypatch.setattr(focus_service, "GC_FULL_SWEEP_INTERVAL", 0.5)
    endpoint = SipEndpoint(NoTransport(), "127.0.0.1", 5070)
    service = FocusService(focus_config(), endpoint, MrfpPool([]))
    thresholds = gc.get_threshold()
    await service.start()
    try:
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        frozen_before = gc.get_freeze_count()
        await asyncio.sleep(0.15)  # a freeze tick or more
        assert gc.get_freeze_count() > frozen_before  # the pair (and more) left the walks
        del a, b
        gc.collect()
        assert gone() is not None, "a frozen cycle is not walked by an ordinary collection"
        for _ in range(60):  # the full sweep comes within 0.5 s
            await asyncio.sleep(0.05)
            if gone() is None:
                break
        assert gone() is None, "the full sweep takes frozen cycles back"
    finally:
        await service.stop()
        gc.set_threshold(*thresholds)
    assert gc.get_freeze_count() == 0  # stopping gives the frozen objects back
    await asyncio.sleep(0.15)
    assert gc.get_freeze_count() == 0  # and no more ticks come
