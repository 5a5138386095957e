"""Shared inputs of the micro-benchmarks: realistic bodies of three sizes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bench.payloads import Delivery, make_delivery

SECRET = b"bench-webhook-secret"
# Body sizes in bytes: the smallest, middle and largest that the load generator sends.
SIZES = {"512B": 512, "2KB": 2048, "4KB": 4096}
_CANDIDATES = 2000


def delivery_of_size(size: int) -> Delivery:
    """Return the generated delivery whose body is closest to ``size`` bytes."""
    now = datetime(2026, 2, 15, 10, 30, tzinfo=UTC)
    candidates = (make_delivery("micro", index, 1, SECRET, now) for index in range(_CANDIDATES))
    return min(candidates, key=lambda delivery: abs(len(delivery.body) - size))


@pytest.fixture(scope="session", params=list(SIZES), ids=list(SIZES))
def delivery(request: pytest.FixtureRequest) -> Delivery:
    return delivery_of_size(SIZES[request.param])
