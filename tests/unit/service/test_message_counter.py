"""The per-message SIP counters expose what a prometheus_client Counter would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from app.service.metrics import MessageCounter, Metrics


def test_counts_by_label_values_positional_or_named() -> None:
    registry = CollectorRegistry()
    counter = MessageCounter("x_messages", "messages", ["method", "direction"], registry)
    invite_in = counter.labels("INVITE", "in")
    for _ in range(3):
        invite_in.inc()
    counter.labels(method="BYE", direction="out").inc()
    counter.labels(direction="in", method="INVITE").inc()
    value = registry.get_sample_value
    assert value("x_messages_total", {"method": "INVITE", "direction": "in"}) == 4
    assert value("x_messages_total", {"method": "BYE", "direction": "out"}) == 1
    # A child asked for but never incremented is exposed at zero, as with prometheus_client.
    counter.labels("ACK", "in")
    assert value("x_messages_total", {"method": "ACK", "direction": "in"}) == 0


def test_wrong_label_count_is_refused() -> None:
    counter = MessageCounter("y_messages", "messages", ["method"], CollectorRegistry())
    with pytest.raises(ValueError, match="takes labels"):
        counter.labels("INVITE", "in")


def test_wrong_label_names_are_refused_as_prometheus_client_does() -> None:
    counter = MessageCounter("z_messages", "messages", ["method", "direction"], CollectorRegistry())
    with pytest.raises(ValueError, match="takes labels"):
        counter.labels(method="INVITE", direction="in", code="200")
    with pytest.raises(ValueError, match="takes labels"):
        counter.labels(method="INVITE")
    with pytest.raises(ValueError, match="takes labels"):
        counter.labels("INVITE", direction="in")


def test_exposition_of_the_service_metrics() -> None:
    metrics = Metrics()
    metrics.sip_responses.labels("INVITE", "183", "out").inc()
    text = metrics.exposition()[0].decode()
    assert "# TYPE mrfc_sip_responses_total counter" in text
    assert 'mrfc_sip_responses_total{code="183",direction="out",method="INVITE"} 1.0' in text
