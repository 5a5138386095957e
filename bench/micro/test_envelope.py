"""Micro-benchmarks of envelope parsing (relay/envelope.py)."""

from __future__ import annotations

from pytest_benchmark.fixture import BenchmarkFixture

from bench.payloads import Delivery
from relay.envelope import parse_envelope


def test_parse_envelope(benchmark: BenchmarkFixture, delivery: Delivery) -> None:
    envelope = benchmark(parse_envelope, delivery.body)
    assert envelope.id == delivery.event_id
