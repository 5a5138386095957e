"""Sample payloads, ``--set``/``--unset`` overrides and topic patterns of the tool commands."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime

import pytest

from relay.config import parse_config
from relay.envelope import parse_envelope
from relay.tools.common import ToolError
from relay.tools.payloads import (
    EVENT_TYPES,
    Override,
    apply_overrides,
    complete_envelope,
    parse_override,
    routed_event_types,
    sample_payload,
)
from relay.tools.send import _serialize
from relay.tools.tail import topic_pattern

NOW = datetime(2026, 2, 15, 10, 30, tzinfo=UTC)
DECIMAL_ID = re.compile(r"^[1-9][0-9]{17}$")


@pytest.mark.parametrize("event", EVENT_TYPES)
def test_sample_is_valid_envelope(event):
    document = sample_payload(event, NOW, random.Random(1))

    envelope = parse_envelope(_serialize(document))

    assert envelope.event == event
    assert envelope.id.startswith("evt_")
    assert envelope.timestamp == NOW
    assert document["timestamp"] == "2026-02-15T10:30:00Z"
    assert DECIMAL_ID.match(envelope.data["leadID"])
    assert DECIMAL_ID.match(envelope.data["businessID"])


def test_lead_created_follows_documented_shape():
    data = sample_payload("lead.created", NOW, random.Random(1))["data"]

    assert set(data) == {"leadID", "businessID", "request", "customer"}
    assert set(data["request"]) == {"category", "location"}
    assert set(data["request"]["location"]) == {"city", "state", "zip"}
    assert set(data["customer"]) == {"name", "phone"}


def test_samples_get_distinct_ids():
    rng = random.Random(7)

    first = sample_payload("review.created", NOW, rng)
    second = sample_payload("review.created", NOW, rng)

    assert first["id"] != second["id"]
    assert first["data"]["leadID"] != second["data"]["leadID"]


def test_unknown_event_type_rejected():
    with pytest.raises(ToolError, match=r"unknown event type 'lead\.deleted'"):
        sample_payload("lead.deleted", NOW, random.Random(1))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("data.rating=4", 4),
        ("data.request.category=Plumbing", "Plumbing"),
        ('data.zip="95110"', "95110"),
        ("data.paid=true", True),
        ("data.note=null", None),
        ('data.customer={"name":"Ann"}', {"name": "Ann"}),
        ("data.tags=[1,2]", [1, 2]),
        ("data.amount=123456789012345678901234567890", 123456789012345678901234567890),
        ("data.empty=", ""),
        ("data.query=a=b", "a=b"),
    ],
)
def test_override_value_parsed_as_json(text, value):
    override = parse_override(text)

    assert override.value == value
    assert override.path[0] == "data"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data.rating", "expected PATH=VALUE"),
        ("=4", "expected a dotted path"),
        ("data..rating=4", "expected a dotted path"),
        ("data.rating.=4", "expected a dotted path"),
    ],
)
def test_override_syntax_errors(text, message):
    with pytest.raises(ToolError, match=message):
        parse_override(text)


def test_overrides_create_nested_objects():
    document = {"data": {"leadID": "1"}}

    result = apply_overrides(document, [parse_override("data.request.location.city=Fresno")])

    assert result["data"]["request"] == {"location": {"city": "Fresno"}}
    assert document == {"data": {"leadID": "1"}}


def test_overrides_index_into_arrays():
    document = {"data": {"items": [{"name": "a"}, {"name": "b"}]}}

    result = apply_overrides(
        document, [parse_override("data.items.1.name=c"), parse_override("data.items.0=7")]
    )

    assert result["data"]["items"] == [7, {"name": "c"}]


def test_override_through_scalar_rejected():
    document = {"data": {"request": {"category": "Painting"}}}

    with pytest.raises(ToolError, match=r"data\.request\.category is not an object or array"):
        apply_overrides(document, [parse_override("data.request.category.name=x")])


def test_override_index_out_of_range():
    document = {"data": {"items": [1]}}

    with pytest.raises(ToolError, match="expected an index below 1"):
        apply_overrides(document, [parse_override("data.items.3=x")])


def test_unset_removes_field():
    document = {"id": "evt_1", "data": {"leadID": "1", "businessID": "2"}}

    result = apply_overrides(
        document, [Override(path=("id",), remove=True), Override(("data", "leadID"), remove=True)]
    )

    assert result == {"data": {"businessID": "2"}}


def test_unset_missing_field_rejected():
    with pytest.raises(ToolError, match=r"--unset: data\.leadID does not exist"):
        apply_overrides({"data": {}}, [Override(path=("data", "leadID"), remove=True)])


def test_complete_envelope_keeps_given_fields():
    document = {"id": "evt_fixed", "timestamp": "2026-01-01T00:00:00Z", "event": "x"}

    assert complete_envelope(document, NOW, random.Random(1)) == document


def test_complete_envelope_adds_missing_fields():
    completed = complete_envelope({"event": "lead.created"}, NOW, random.Random(1))

    assert completed["id"].startswith("evt_")
    assert completed["timestamp"] == "2026-02-15T10:30:00Z"
    assert completed["event"] == "lead.created"


ROUTING_BASE = """
kafka: {bootstrap_servers: "127.0.0.1:9092"}
sources:
  - {name: tasknation, path: /webhooks/tasknation, secrets: [s]}
"""


def test_default_routing_routes_all_events():
    config = parse_config(ROUTING_BASE)
    assert routed_event_types(config, config.sources[0]) == list(EVENT_TYPES)


def test_dropped_and_unmatched_events_left_out():
    config = parse_config(
        ROUTING_BASE
        + """
routing:
  routes:
    - {events: review.*, drop: true}
    - {events: "lead.*", topics: [leads]}
    - {events: payment.received, topics: [payments]}
"""
    )
    events = routed_event_types(config, config.sources[0])
    assert events == ["lead.created", "lead.updated", "lead.expired", "payment.received"]


def test_allow_list_limits_events():
    config = parse_config(
        ROUTING_BASE.replace("secrets: [s]}", "secrets: [s], allowed_event_types: [booking.*]}")
    )
    events = routed_event_types(config, config.sources[0])
    assert events == ["booking.confirmed", "booking.cancelled"]


@pytest.mark.parametrize(
    ("topic", "matches"),
    [
        ("tasknation.lead.created", True),
        ("tasknation.lead.expired", True),
        ("tasknation.payment.received", False),
        ("other.lead.created", False),
        ("tasknation.lead.created.extra", True),
    ],
)
def test_events_glob_selects_topics(topic, matches):
    pattern, description = topic_pattern("tasknation.", [], "lead.*")

    assert bool(pattern.match(topic)) is matches
    assert description == "topics tasknation.lead.*"


def test_topic_names_match_exactly():
    pattern, _ = topic_pattern("tasknation.", ["tasknation.lead.created"], None)

    assert pattern.match("tasknation.lead.created")
    assert not pattern.match("tasknation.lead.created2")
    assert not pattern.match("tasknationXlead.created")


def test_default_pattern_reads_prefix():
    pattern, _ = topic_pattern("t1.", [], None)

    assert pattern.match("t1.deadletter")
    assert not pattern.match("t10.lead.created")


def test_override_below_scalar_names_it():
    document = {"data": {"request": "Painting"}}

    with pytest.raises(ToolError, match=r"data\.request is not an object or array"):
        apply_overrides(document, [parse_override("data.request.location.city=x")])
