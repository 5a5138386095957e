"""Routing rules, record keys, headers and values, without a broker."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import yaml

from relay import routing as routing_module
from relay.config import TASKNATION_EVENT_TYPES, RelayConfig, event_matches, parse_config
from relay.envelope import Envelope, parse_envelope
from relay.routing import DROPPED_BY_ROUTE, Router, header_names, route_event
from relay.sources import NOT_ALLOWED_BUSINESS_ID, NOT_ALLOWED_EVENT_TYPE, Source, SourceTable

RECEIVED_AT = datetime(2026, 2, 15, 10, 30, 5, tzinfo=UTC)


def make_routing_config(routing: dict[str, Any], **source: Any) -> RelayConfig:
    document = {
        "kafka": {"bootstrap_servers": "127.0.0.1:9092"},
        "routing": routing,
        "sources": [{"name": "tasknation", "path": "/webhooks/tasknation", "secrets": ["s"]}],
    }
    document["sources"][0].update(source)
    return parse_config(yaml.safe_dump(document))


def make_body(event: str, **data: Any) -> bytes:
    return orjson.dumps(
        {"id": "evt_1", "event": event, "timestamp": "2026-02-15T10:30:00Z", "data": data}
    )


def route(config: RelayConfig, body: bytes, source_index: int = 0):
    source = list(SourceTable(config.sources))[source_index]
    return route_event(parse_envelope(body), body, source, config.routing, RECEIVED_AT)


def topics_of(config: RelayConfig, event: str) -> list[str]:
    routed = route(config, make_body(event, leadID="L1"))
    return [record.topic for record in routed.records]


ROUTES = {
    "routes": [
        {"events": "lead.created", "topics": ["exact.lead.created"]},
        {"events": ["lead.*", "message.received"], "topics": ["t.{event}"]},
        {"events": "payment.received", "topics": ["t.{event}", "billing.payments"]},
        {"events": "review.*", "drop": True},
        {"events": "booking.?onfirmed", "topics": ["t.{source}.bookings"]},
    ],
    "unrouted_topic": "t.unrouted",
}


@pytest.mark.parametrize(
    ("pattern", "event", "expected"),
    [
        ("lead.created", "lead.created", True),
        ("lead.created", "lead.created2", False),
        ("lead.*", "lead.created", True),
        ("lead.*", "lead.", True),
        ("lead.*", "leads.created", False),
        ("*", "anything/at.all", True),
        ("*.created", "review.created", True),
        ("lead.?pdated", "lead.updated", True),
        ("lead.?pdated", "lead.pdated", False),
        ("Lead.*", "lead.created", False),
        ("lead.[cu]*", "lead.created", False),
    ],
)
def test_event_glob_matching(pattern: str, event: str, expected: bool) -> None:
    assert event_matches(pattern, event) is expected


def test_exact_route_wins_when_first() -> None:
    config = make_routing_config(ROUTES)
    assert topics_of(config, "lead.created") == ["exact.lead.created"]


def test_glob_route_renders_event() -> None:
    config = make_routing_config(ROUTES)
    assert topics_of(config, "lead.updated") == ["t.lead.updated"]
    assert topics_of(config, "lead.expired") == ["t.lead.expired"]
    assert topics_of(config, "message.received") == ["t.message.received"]


def test_fan_out_writes_identical_records() -> None:
    config = make_routing_config(ROUTES)
    body = make_body("payment.received", leadID="L7", amountCents=1200)

    records = route(config, body).records

    assert [record.topic for record in records] == ["t.payment.received", "billing.payments"]
    assert records[0].value == records[1].value == body
    assert records[0].key == records[1].key == b"L7"
    assert records[0].headers == records[1].headers


def test_source_field_rendered() -> None:
    config = make_routing_config(ROUTES)
    assert topics_of(config, "booking.confirmed") == ["t.tasknation.bookings"]


def test_drop_route_returns_reason() -> None:
    config = make_routing_config(ROUTES)

    routed = route(config, make_body("review.created", leadID="L1"))

    assert routed.records == ()
    assert routed.drop_reason == DROPPED_BY_ROUTE


def test_unmatched_event_goes_unrouted() -> None:
    config = make_routing_config(ROUTES)

    routed = route(config, make_body("booking.cancelled", leadID="L1"))

    assert [record.topic for record in routed.records] == ["t.unrouted"]
    assert routed.drop_reason is None
    assert dict(routed.records[0].headers)["ce_type"] == b"booking.cancelled"


@pytest.mark.parametrize(
    "event",
    ["lead/created", "lead created", "lead.créé", ".", "..", "lead.{event}", "x" * 250, "a\nb"],
)
def test_unsafe_event_name_goes_unrouted(event: str) -> None:
    config = make_routing_config({"routes": [{"events": "*", "topics": ["t.{event}"]}]})
    assert topics_of(config, event) == ["tasknation.unrouted"]


def test_unsafe_name_ignores_drop_route() -> None:
    config = make_routing_config({"routes": [{"events": "*", "drop": True}]})
    assert topics_of(config, "lead/created") == ["tasknation.unrouted"]


def test_overlong_rendered_topic_goes_unrouted() -> None:
    config = make_routing_config({"topic_prefix": "p" * 10})
    event = "e" * 245
    assert topics_of(config, event) == ["tasknation.unrouted"]
    assert topics_of(config, "lead.created") == ["pppppppppplead.created"]


def test_repeated_topics_written_once() -> None:
    config = make_routing_config(
        {"routes": [{"events": "*", "topics": ["t.{event}", "t.lead.created", "t.{event}"]}]}
    )
    assert topics_of(config, "lead.created") == ["t.lead.created"]
    assert topics_of(config, "lead.updated") == ["t.lead.updated", "t.lead.created"]


def test_default_route_uses_prefix() -> None:
    config = make_routing_config({"topic_prefix": "acme."})
    for event in TASKNATION_EVENT_TYPES:
        assert topics_of(config, event) == [f"acme.{event}"]


def test_key_falls_back_in_order() -> None:
    config = make_routing_config({})
    cases = [
        ({"leadID": "L1", "businessID": "B1"}, b"L1"),
        ({"leadID": "", "businessID": "B1"}, b"B1"),
        ({"leadID": 299614694480093245}, b"299614694480093245"),
        ({"leadID": 1.5, "businessID": True}, b"evt_1"),
        ({"leadID": {"nested": 1}}, b"evt_1"),
    ]
    for data, expected in cases:
        routed = route(config, make_body("lead.created", **data))
        assert routed.records[0].key == expected, data


def test_route_key_paths_override_default() -> None:
    config = make_routing_config(
        {
            "routes": [
                {"events": "message.*", "topics": ["t.msg"], "key_paths": "data.threadID"},
                {"events": "review.*", "topics": ["t.review"], "key_paths": []},
                {"events": "*", "topics": ["t.other"]},
            ],
            "key_paths": ["data.customer.id", "id"],
        }
    )
    message = make_body("message.received", leadID="L1", threadID="T9")
    review = make_body("review.created", leadID="L1")
    lead = make_body("lead.created", leadID="L1", customer={"id": "C3"})

    assert route(config, message).records[0].key == b"T9"
    assert route(config, review).records[0].key is None
    assert route(config, lead).records[0].key == b"C3"


def test_binary_mode_headers() -> None:
    config = make_routing_config({})
    body = make_body("lead.created", leadID="L1")

    record = route(config, body).records[0]

    assert record.value == body
    assert [name for name, _ in record.headers] == list(header_names("binary"))
    assert dict(record.headers) == {
        "ce_specversion": b"1.0",
        "ce_id": b"evt_1",
        "ce_source": b"/tasknation/tasknation",
        "ce_type": b"lead.created",
        "ce_time": b"2026-02-15T10:30:00+00:00",
        "content-type": b"application/json",
        "relay_source": b"tasknation",
        "relay_received_at": b"2026-02-15T10:30:05+00:00",
    }


def test_structured_mode_value_and_headers() -> None:
    config = make_routing_config({"content_mode": "structured"})
    body = (
        b' {"id":"evt_1","event":"lead.created","timestamp":"2026-02-15T10:30:00Z",\n'
        b'"data":{"leadID":"L1","amount":123456789012345678901234567890}} '
    )

    record = route(config, body).records[0]

    assert body in record.value
    event = orjson.loads(record.value.replace(b"123456789012345678901234567890", b"0"))
    assert event["specversion"] == "1.0"
    assert event["id"] == "evt_1"
    assert event["source"] == "/tasknation/tasknation"
    assert event["type"] == "lead.created"
    assert event["time"] == "2026-02-15T10:30:00+00:00"
    assert event["datacontenttype"] == "application/json"
    assert event["data"]["data"]["leadID"] == "L1"
    assert record.key == b"L1"
    assert [name for name, _ in record.headers] == list(header_names("structured"))
    assert dict(record.headers)["content-type"] == b"application/cloudevents+json; charset=UTF-8"


def test_route_content_mode_overrides_default() -> None:
    config = make_routing_config(
        {
            "routes": [
                {"events": "review.*", "topics": ["t.review"], "content_mode": "structured"},
                {"events": "*", "topics": ["t.{event}"]},
            ]
        }
    )
    review = make_body("review.created", leadID="L1")
    lead = make_body("lead.created", leadID="L1")

    assert route(config, review).records[0].value != review
    assert route(config, lead).records[0].value == lead


def test_event_type_allow_list() -> None:
    config = make_routing_config({}, allowed_event_types=["lead.*", "payment.received"])

    allowed = route(config, make_body("lead.expired", leadID="L1"))
    excluded = route(config, make_body("review.created", leadID="L1"))

    assert [record.topic for record in allowed.records] == ["tasknation.lead.expired"]
    assert excluded.records == ()
    assert excluded.drop_reason == NOT_ALLOWED_EVENT_TYPE


def test_business_id_allow_list() -> None:
    config = make_routing_config({}, allowed_business_ids=[468046965846925323, "B2"])
    cases = [
        ({"businessID": "468046965846925323"}, None),
        ({"businessID": 468046965846925323}, None),
        ({"businessID": "B2"}, None),
        ({"businessID": "B3"}, NOT_ALLOWED_BUSINESS_ID),
        ({"businessID": None}, NOT_ALLOWED_BUSINESS_ID),
        ({"leadID": "L1"}, NOT_ALLOWED_BUSINESS_ID),
        ({"businessID": True}, NOT_ALLOWED_BUSINESS_ID),
    ]
    for data, reason in cases:
        routed = route(config, make_body("lead.created", **data))
        assert routed.drop_reason == reason, data
        assert bool(routed.records) is (reason is None), data


def test_source_repr_hides_secrets() -> None:
    source = Source(name="a", path="/a", signature_header="X-Sig", secrets=(b"hidden-value",))
    assert "hidden-value" not in repr(source)


def test_writable_topics_cover_routes() -> None:
    config = make_routing_config(ROUTES)

    topics = config.writable_topics()

    assert topics == (
        "exact.lead.created",
        "t.lead.updated",
        "t.lead.expired",
        "t.message.received",
        "t.tasknation.bookings",
        "t.unrouted",
        "t.payment.received",
        "billing.payments",
        "tasknation.deadletter",
    )


def test_writable_topics_respect_allow_list() -> None:
    config = make_routing_config({"topic_prefix": "p."}, allowed_event_types="lead.created")
    assert config.writable_topics() == (
        "p.lead.created",
        "tasknation.unrouted",
        "tasknation.deadletter",
    )


def test_ce_source_names_source() -> None:
    envelope = Envelope(id="e", event="lead.created", timestamp=RECEIVED_AT, data={})
    source = Source(name="s", path="/s", signature_header="X", secrets=(b"k",))
    config = make_routing_config({})

    routed = route_event(envelope, b"{}", source, config.routing, RECEIVED_AT)

    assert dict(routed.records[0].headers)["ce_source"] == b"/tasknation/s"


def test_trailing_newline_never_safe_topic() -> None:
    from relay.config import is_safe_event_name, is_valid_topic_name

    assert not is_safe_event_name("lead.created\n")
    assert not is_valid_topic_name("tasknation.lead.created\n")
    assert is_valid_topic_name("tasknation.lead.created")


def test_router_matches_route_event() -> None:
    config = make_routing_config(
        {
            "routes": [
                {"events": "lead.*", "topics": ["leads", "audit.{source}"]},
                {"events": "review.created", "drop": True},
                {"events": "payment.*", "topics": ["payments"], "content_mode": "structured"},
            ]
        }
    )
    router = Router(config.routing)
    source = next(iter(SourceTable(config.sources)))
    events = ["lead.created", "review.created", "payment.received", "job.started", "a/b"] * 2

    for event in events:
        body = make_body(event, leadID="L1")
        envelope = parse_envelope(body)
        expected = route_event(envelope, body, source, config.routing, RECEIVED_AT)
        assert router.route(envelope, body, source, RECEIVED_AT) == expected, event


def test_router_cache_starts_over_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routing_module, "MAX_CACHED_DESTINATIONS", 3)
    config = make_routing_config({"routes": [{"events": "*", "topics": ["all.{event}"]}]})
    router = Router(config.routing)
    source = next(iter(SourceTable(config.sources)))

    for index in range(10):
        body = make_body(f"custom.type{index}")
        routed = router.route(parse_envelope(body), body, source, RECEIVED_AT)
        assert [record.topic for record in routed.records] == [f"all.custom.type{index}"]
        assert len(router._destinations) <= 3
