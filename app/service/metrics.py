"""Prometheus metrics of the MRFC-AS, on a registry of their own.

A private registry (not the process-global default) lets several app instances live in one
test process and keeps /metrics to what this service means.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

# Joins take a few hundred ms through the MRFP; 100rel/preconditions can stretch to seconds.
JOIN_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
# A collection of the youngest generation takes well under a millisecond; a full one, with
# thousands of live dialogs and transactions, can take tens: both delay every SIP message.
GC_PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)


class MessageCounter(Collector):
    """A labelled counter for the per-message path: a plain dict of counts, read when
    scraped. prometheus_client's Counter takes a lock and three calls per increment, and SIP
    counts every message in and out (about twenty per conference join), all on the event
    loop's thread, which is also where /metrics is served."""

    def __init__(
        self, name: str, documentation: str, labelnames: list[str], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.counts: dict[tuple[str, ...], int] = {}
        registry.register(self)

    def labels(self, *values: str, **by_name: str) -> _MessageCount:
        if by_name:
            # By name: exactly the label names, as prometheus_client's Counter insists.
            if values or by_name.keys() != set(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {by_name}")
            key = tuple(by_name[n] for n in self.labelnames)
        else:
            key = values
        if len(key) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {key}")
        self.counts.setdefault(key, 0)
        return _MessageCount(self.counts, key)

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, value in list(self.counts.items()):
            family.add_metric(list(key), value)
        yield family

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)


class _MessageCount:
    __slots__ = ("_counts", "_key")

    def __init__(self, counts: dict[tuple[str, ...], int], key: tuple[str, ...]) -> None:
        self._counts = counts
        self._key = key

    def inc(self) -> None:
        self._counts[self._key] += 1


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.conferences_active = Gauge(
            "mrfc_conferences_active", "Conferences currently active", registry=r
        )
        self.participants_active = Gauge(
            "mrfc_participants_active", "Participants currently connected", registry=r
        )
        self.joins = Counter("mrfc_joins", "Participants that joined a conference", registry=r)
        self.leaves = Counter(
            "mrfc_leaves",
            "Participants that left a conference, by RFC 4575 disconnection-method",
            ["method"],
            registry=r,
        )
        self.sip_requests = MessageCounter(
            "mrfc_sip_requests",
            "SIP requests, by method and direction (in = received, out = sent)",
            ["method", "direction"],
            r,
        )
        self.sip_responses = MessageCounter(
            "mrfc_sip_responses",
            "SIP responses, by CSeq method, status code and direction",
            ["method", "code", "direction"],
            r,
        )
        self.sip_untrusted = Counter(
            "mrfc_sip_untrusted_requests",
            "SIP requests from sources outside sip.trusted_peers, by action taken",
            ["action"],
            registry=r,
        )
        self.esl_connected = Gauge(
            "mrfc_esl_connected",
            "1 when the ESL control connection to the MRFP node is up",
            ["node"],
            registry=r,
        )
        self.join_latency = Histogram(
            "mrfc_join_latency_seconds",
            "From the initial INVITE to the participant joining the MRFP conference",
            buckets=JOIN_LATENCY_BUCKETS,
            registry=r,
        )

        self.gc_pause = Histogram(
            "mrfc_gc_pause_seconds",
            "Pauses of Python's cyclic garbage collector, by oldest generation collected",
            ["generation"],
            buckets=GC_PAUSE_BUCKETS,
            registry=r,
        )

        self.gc_collected = Counter(
            "mrfc_gc_collected_objects",
            "Objects the garbage collector found unreachable (reference cycles), by generation",
            ["generation"],
            registry=r,
        )

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
