"""The garbage collector's pauses are timed into mrfc_gc_pause_seconds while the service runs."""

from __future__ import annotations

import gc

from app.mrfp.pool import MrfpPool
from app.net.endpoint import SipEndpoint
from app.service.focus_service import FocusService
from app.service.metrics import Metrics
from tests.support.focus_service import NoTransport, focus_config


def _collections(metrics: Metrics, generation: int) -> float:
    value = metrics.registry.get_sample_value(
        "mrfc_gc_pause_seconds_count", {"generation": str(generation)}
    )
    return value or 0.0


async def test_collections_are_timed_between_start_and_stop() -> None:
    metrics = Metrics()
    endpoint = SipEndpoint(NoTransport(), "127.0.0.1", 5070)
    service = FocusService(focus_config(), endpoint, MrfpPool([]), metrics=metrics)
    gc.collect()
    assert _collections(metrics, 2) == 0
    thresholds = gc.get_threshold()
    await service.start()
    try:
        gc.collect()
        gc.collect(0)
        assert _collections(metrics, 2) >= 1
        assert _collections(metrics, 0) >= 1
        total = metrics.registry.get_sample_value("mrfc_gc_pause_seconds_sum", {"generation": "2"})
        assert total is not None and total > 0
    finally:
        await service.stop()
        gc.set_threshold(*thresholds)
    before = _collections(metrics, 2)
    gc.collect()
    assert _collections(metrics, 2) == before  # the hook is gone with the service
