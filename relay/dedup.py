"""Dropping of repeated deliveries by event id, within a time window.

TaskNation sends a delivery again until it gets a 2xx response, for at most
26.6 hours. The relay remembers each event id that Kafka acknowledged for
``dedup.window_s`` and drops a later delivery of the same id. An id is
remembered only after the acknowledgement, so a delivery that failed is
published by its retry. While one delivery of an id is being published, a
second one is told to wait and ask again (``Verdict.IN_FLIGHT``).

A delivery whose envelope ``timestamp`` is older than the window is a
replay: a genuine retry never arrives that late, and its id may already be
forgotten. Only the id and the timestamp are compared, so an older event
that arrives after a newer one is published in the order it arrived.

Memory stays bounded: an id is stored as a 16-byte BLAKE2b digest of the
source name and the id, about 180 bytes per id with the dictionary entry
and the time (CPython 3.11, 64-bit). When ``dedup.max_ids`` is reached, the
oldest id is forgotten first. This module is synchronous and does no I/O;
the handler does the waiting.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict
from datetime import datetime
from enum import Enum

from relay.clock import Clock
from relay.config import DedupConfig

log = logging.getLogger(__name__)

DIGEST_BYTES = 16
EVICTION_LOG_INTERVAL_S = 60.0


class Verdict(Enum):
    """The handler's action for one delivery of an event."""

    NEW = "new"  # publish, then call acknowledged() or abandoned()
    IN_FLIGHT = "in_flight"  # another delivery of the id is being published: wait, ask again
    DUPLICATE = "duplicate"  # acknowledged within the window: respond 2xx, publish nothing
    REPLAY = "replay"  # timestamp older than the window: respond 2xx, publish nothing


class DedupWindow:
    """Event ids acknowledged by Kafka within the window, and ids being published."""

    def __init__(self, config: DedupConfig, clock: Clock) -> None:
        self._window_s = config.window_s
        self._max_ids = config.max_ids
        self._clock = clock
        # digest -> POSIX time of the acknowledgement, oldest first
        self._acknowledged: OrderedDict[bytes, float] = OrderedDict()
        self._in_flight: set[bytes] = set()
        self._evicted_early = 0
        self._last_eviction_log = -math.inf

    def __len__(self) -> int:
        return len(self._acknowledged)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def admit(self, source: str, event_id: str, event_time: datetime) -> Verdict:
        """Decide whether a delivery is published; ``NEW`` marks the id as in flight."""
        now = self._clock().timestamp()
        if event_time.timestamp() < now - self._window_s:
            return Verdict.REPLAY
        self._expire(now)

        key = _digest(source, event_id)
        if key in self._acknowledged:
            return Verdict.DUPLICATE
        if key in self._in_flight:
            return Verdict.IN_FLIGHT
        self._in_flight.add(key)
        return Verdict.NEW

    def acknowledged(self, source: str, event_id: str) -> None:
        """Remember an id admitted as ``NEW`` whose record Kafka acknowledged."""
        key = _digest(source, event_id)
        self._in_flight.discard(key)
        now = self._clock().timestamp()
        self._acknowledged.pop(key, None)
        self._acknowledged[key] = now
        self._evict_over_cap(now)

    def abandoned(self, source: str, event_id: str) -> None:
        """Release an id admitted as ``NEW`` whose record was not acknowledged."""
        self._in_flight.discard(_digest(source, event_id))

    def _expire(self, now: float) -> None:
        oldest_kept = now - self._window_s
        while self._acknowledged:
            key, acknowledged_at = next(iter(self._acknowledged.items()))
            if acknowledged_at >= oldest_kept:
                return
            del self._acknowledged[key]

    def _evict_over_cap(self, now: float) -> None:
        while len(self._acknowledged) > self._max_ids:
            _, acknowledged_at = self._acknowledged.popitem(last=False)
            if acknowledged_at >= now - self._window_s:
                self._evicted_early += 1
        if self._evicted_early and now - self._last_eviction_log >= EVICTION_LOG_INTERVAL_S:
            self._log_early_evictions(now)

    def _log_early_evictions(self, now: float) -> None:
        oldest_age_s = now - next(iter(self._acknowledged.values()))
        log.warning(
            "dedup.max_ids (%d) reached: forgot %d ids before dedup.window_s (%.0f s) ended; "
            "duplicates are now dropped for %.0f s only; raise dedup.max_ids",
            self._max_ids,
            self._evicted_early,
            self._window_s,
            oldest_age_s,
        )
        self._evicted_early = 0
        self._last_eviction_log = now


def _digest(source: str, event_id: str) -> bytes:
    data = f"{source}\0{event_id}".encode()
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()
