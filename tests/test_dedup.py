"""The dedup window: duplicates, replays, expiry and the memory cap."""

from __future__ import annotations

import logging
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest

from relay.config import RETRY_SCHEDULE_S, DedupConfig
from relay.dedup import DedupWindow, Verdict

START = datetime(2026, 2, 15, 10, 30, tzinfo=UTC)
WINDOW = timedelta(hours=27)


class FakeClock:
    """A wall clock that tests move by hand."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def make_window(clock: FakeClock, max_ids: int = 1000) -> DedupWindow:
    return DedupWindow(DedupConfig(window_s=WINDOW.total_seconds(), max_ids=max_ids), clock)


def publish(window: DedupWindow, event_id: str, event_time: datetime = START) -> Verdict:
    """Admit an event and, when it is new, acknowledge it as Kafka would."""
    verdict = window.admit("tasknation", event_id, event_time)
    if verdict is Verdict.NEW:
        window.acknowledged("tasknation", event_id)
    return verdict


def test_first_delivery_is_new() -> None:
    window = make_window(FakeClock())
    assert window.admit("tasknation", "evt_1", START) is Verdict.NEW
    assert window.in_flight == 1
    assert len(window) == 0


def test_acknowledged_id_is_duplicate() -> None:
    window = make_window(FakeClock())
    assert publish(window, "evt_1") is Verdict.NEW
    assert window.admit("tasknation", "evt_1", START) is Verdict.DUPLICATE
    assert window.in_flight == 0


def test_second_delivery_in_flight_waits() -> None:
    window = make_window(FakeClock())
    assert window.admit("tasknation", "evt_1", START) is Verdict.NEW
    assert window.admit("tasknation", "evt_1", START) is Verdict.IN_FLIGHT


def test_abandoned_id_admitted_again() -> None:
    window = make_window(FakeClock())
    assert window.admit("tasknation", "evt_1", START) is Verdict.NEW
    window.abandoned("tasknation", "evt_1")
    assert window.admit("tasknation", "evt_1", START) is Verdict.NEW


def test_sources_have_separate_ids() -> None:
    window = make_window(FakeClock())
    publish(window, "evt_1")
    assert window.admit("other", "evt_1", START) is Verdict.NEW


def test_last_retry_still_a_duplicate() -> None:
    clock = FakeClock()
    window = make_window(clock)
    publish(window, "evt_1")
    clock.advance(timedelta(seconds=RETRY_SCHEDULE_S))
    assert window.admit("tasknation", "evt_1", START) is Verdict.DUPLICATE


def test_id_forgotten_after_window() -> None:
    clock = FakeClock()
    window = make_window(clock)
    publish(window, "evt_1", event_time=START + WINDOW)
    clock.advance(WINDOW + timedelta(seconds=1))
    assert window.admit("tasknation", "evt_1", START + WINDOW) is Verdict.NEW
    assert len(window) == 0


def test_old_timestamp_is_replay() -> None:
    clock = FakeClock(START + WINDOW + timedelta(seconds=1))
    window = make_window(clock)
    assert window.admit("tasknation", "evt_1", START) is Verdict.REPLAY
    assert window.in_flight == 0


def test_timestamp_at_window_edge_admitted() -> None:
    clock = FakeClock(START + WINDOW)
    window = make_window(clock)
    assert window.admit("tasknation", "evt_1", START) is Verdict.NEW


def test_older_event_after_newer_admitted() -> None:
    window = make_window(FakeClock(START + timedelta(hours=1)))
    assert publish(window, "evt_newer", START + timedelta(minutes=30)) is Verdict.NEW
    assert publish(window, "evt_older", START) is Verdict.NEW


def test_cap_evicts_oldest_first(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    window = make_window(clock, max_ids=3)
    for number in range(4):
        publish(window, f"evt_{number}")
        clock.advance(timedelta(seconds=1))

    assert len(window) == 3
    assert window.admit("tasknation", "evt_0", START) is Verdict.NEW
    assert window.admit("tasknation", "evt_3", START) is Verdict.DUPLICATE
    assert "raise dedup.max_ids" in caplog.text


def test_eviction_warning_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    window = make_window(clock, max_ids=1)
    with caplog.at_level(logging.WARNING, logger="relay.dedup"):
        for number in range(10):
            publish(window, f"evt_{number}")
            clock.advance(timedelta(seconds=1))
    assert len(caplog.records) == 1


def test_window_shorter_than_retries_rejected() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 95760"):
        DedupConfig(window_s=RETRY_SCHEDULE_S - 1)


def test_memory_per_id_bounded() -> None:
    """The documented cost of about 180 bytes per id, with margin for other builds."""
    clock = FakeClock()
    window = make_window(clock, max_ids=50_000)
    for number in range(1000):  # let the dictionaries reach their steady layout first
        publish(window, f"evt_warmup_{number}")

    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for number in range(40_000):
            publish(window, f"evt_{number:032d}")
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (after - before) / 40_000 < 260
