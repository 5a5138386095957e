"""Micro-benchmarks of routing (relay/routing.py) and of the pure stages in sequence."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from bench.micro.conftest import SECRET
from bench.payloads import Delivery
from relay.config import RoutingConfig
from relay.envelope import parse_envelope
from relay.routing import Record, Router, record_key, route_event
from relay.signature import verify_signature
from relay.sources import Source

ROUTING = RoutingConfig.model_validate({})
SOURCE = Source(
    name="tasknation",
    path="/webhooks/tasknation",
    signature_header="X-TaskNation-Signature",
    secrets=(SECRET,),
)
RECEIVED_AT = datetime(2026, 2, 15, 10, 30, 1, tzinfo=UTC)


def test_route_event(benchmark: BenchmarkFixture, delivery: Delivery) -> None:
    envelope = parse_envelope(delivery.body)
    routed = benchmark(route_event, envelope, delivery.body, SOURCE, ROUTING, RECEIVED_AT)
    assert routed.records[0].topic == ROUTING.topic_prefix + delivery.event


def test_router_route(benchmark: BenchmarkFixture, delivery: Delivery) -> None:
    """Routing as the handler does it, with each event type's destination kept."""
    router = Router(ROUTING)
    envelope = parse_envelope(delivery.body)
    routed = benchmark(router.route, envelope, delivery.body, SOURCE, RECEIVED_AT)
    assert routed.records[0].topic == ROUTING.topic_prefix + delivery.event


def test_verify_parse_route(benchmark: BenchmarkFixture, delivery: Delivery) -> None:
    """The stages that run before delivery, as the handler calls them for one request."""
    router = Router(ROUTING)

    def stages() -> tuple[Record, ...]:
        verify_signature(delivery.body, delivery.signature, SOURCE.secrets)
        envelope = parse_envelope(delivery.body)
        return router.route(envelope, delivery.body, SOURCE, RECEIVED_AT).records

    records = benchmark(stages)
    assert records[0].value == delivery.body


# data.leadID is the first key path; an event without it falls back to data.businessID.
KEY_CASES = {
    "leadID": (b'{"leadID":"299614694480093245","businessID":"468046965846925323"}', b"2996"),
    "businessID fallback": (b'{"businessID":"468046965846925323","rating":5}', b"4680"),
}


@pytest.mark.parametrize("case", list(KEY_CASES))
def test_record_key(benchmark: BenchmarkFixture, case: str) -> None:
    data, key_start = KEY_CASES[case]
    envelope = parse_envelope(
        b'{"id":"evt_1","event":"review.created","timestamp":"2026-02-15T10:30:00Z","data":%s}'
        % data
    )
    key = benchmark(record_key, envelope, ROUTING.key_paths)
    assert key is not None
    assert key.startswith(key_start)
