"""Prometheus metrics of the relay.

Each application gets its own ``CollectorRegistry``, so several relays in one
process (as in the tests) never share counters. Label values come from
closed sets: an event type outside the eight TaskNation types is counted as
``other`` and a missing one as ``unknown``, so no input creates new series.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from relay.config import TASKNATION_EVENT_TYPES

KNOWN_EVENT_TYPES = frozenset(TASKNATION_EVENT_TYPES)
UNKNOWN_EVENT_TYPE = "unknown"
OTHER_EVENT_TYPE = "other"

# Publish latency buckets in seconds, from a local broker's ~1 ms to the deadline.
PUBLISH_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


def event_type_label(event: str | None) -> str:
    """Return ``event`` if it is a known TaskNation type, else a fixed placeholder."""
    if event is None:
        return UNKNOWN_EVENT_TYPE
    return event if event in KNOWN_EVENT_TYPES else OTHER_EVENT_TYPE


class RelayMetrics:
    """The relay's counters, gauges and histograms in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.deliveries = Counter(
            "relay_deliveries",
            "Webhook deliveries answered, by source, event type and HTTP status.",
            ["source", "event_type", "status"],
            registry=self.registry,
        )
        self.rejections = Counter(
            "relay_rejections",
            "Deliveries not published as events, by source and reason "
            "(signature, size, dead letter, duplicate, replay, ...).",
            ["source", "reason"],
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "relay_publish_seconds",
            "Time from handing records to the producer to the broker's acknowledgement.",
            buckets=PUBLISH_BUCKETS_S,
            registry=self.registry,
        )
        self.kafka_errors = Counter(
            "relay_kafka_errors",
            "Errors from the Kafka client, by exception class.",
            ["error"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "relay_requests_in_flight",
            "Webhook requests being handled.",
            registry=self.registry,
        )
        self.spool_depth = Gauge(
            "relay_spool_depth_records",
            "Deliveries in the disk spool that Kafka has not acknowledged yet.",
            registry=self.registry,
        )
        self.spool_oldest_age = Gauge(
            "relay_spool_oldest_age_seconds",
            "Age of the oldest delivery in the disk spool; 0 when it is empty.",
            registry=self.registry,
        )

    def watch_requests(self, in_flight: Callable[[], float]) -> None:
        """Read the number of webhook requests being handled at each scrape."""
        self.in_flight.set_function(in_flight)

    def watch_spool(self, depth: Callable[[], float], oldest_age_s: Callable[[], float]) -> None:
        """Read the spool's depth and oldest age at each scrape."""
        self.spool_depth.set_function(depth)
        self.spool_oldest_age.set_function(oldest_age_s)

    def render(self) -> bytes:
        """Return the registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)
