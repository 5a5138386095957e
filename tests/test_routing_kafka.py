"""Routing end to end: signed deliveries over HTTP, records read back from the broker."""

from __future__ import annotations

from typing import Any

import orjson
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from relay.config import RelayConfig
from relay.signature import MAX_CANDIDATES, sign
from relay.topics import ensure_topics
from tests.conftest import TEST_SECRET, make_config
from tests.kafka_records import consume, count_records
from tests.test_webhook_kafka import PATH, signed_headers

OLD_SECRET = "old-webhook-secret"
NEW_SECRET = "new-webhook-secret"


def make_body(event: str, event_id: str = "evt_1", **data: Any) -> bytes:
    return orjson.dumps(
        {"id": event_id, "event": event, "timestamp": "2026-02-15T10:30:00Z", "data": data}
    )


def routed_config(bootstrap: str, prefix: str, routes: list[dict[str, Any]], **extra: Any):
    """Return a config with ``routes``; ``extra`` adds routing keys or replaces sections."""
    routing = {
        "routes": routes,
        "unrouted_topic": f"{prefix}unrouted",
        "dead_letter_topic": f"{prefix}deadletter",
        **extra.pop("routing", {}),
    }
    return make_config(bootstrap, prefix, routing=routing, **extra)


async def start_relay(factory: Any, config: RelayConfig) -> Any:
    """Create the config's topics, so the first record never waits for auto-creation."""
    results = await ensure_topics(config, timeout_s=60)
    assert [result.topic for result in results if result.outcome == "failed"] == []
    return await factory(config)


async def post(client: Any, body: bytes, secret: str = TEST_SECRET, path: str = PATH) -> Any:
    response = await client.post(path, data=body, headers=signed_headers(body, secret))
    return response.status, await response.json()


async def test_globs_fan_out_drop_unrouted(kafka_bootstrap, topic_prefix, relay_client_factory):
    p = topic_prefix
    routes = [
        {"events": "lead.created", "topics": [f"{p}exact"]},
        {"events": "lead.*", "topics": [f"{p}{{event}}"]},
        {"events": "payment.received", "topics": [f"{p}payments", f"{p}billing"]},
        {"events": "review.*", "drop": True},
    ]
    client = await start_relay(relay_client_factory, routed_config(kafka_bootstrap, p, routes))
    lead_created = make_body("lead.created", "evt_1", leadID="L1")
    lead_expired = make_body("lead.expired", "evt_2", leadID="L1")
    payment = make_body("payment.received", "evt_3", leadID="L1", amountCents=1200)
    review = make_body("review.created", "evt_4", leadID="L1", rating=5)
    booking = make_body("booking.confirmed", "evt_5", leadID="L1")

    assert await post(client, lead_created) == (200, {"status": "published", "id": "evt_1"})
    assert await post(client, lead_expired) == (200, {"status": "published", "id": "evt_2"})
    assert await post(client, payment) == (200, {"status": "published", "id": "evt_3"})
    assert await post(client, review) == (
        200,
        {"status": "dropped", "id": "evt_4", "reason": "dropped_by_route"},
    )
    assert await post(client, booking) == (200, {"status": "published", "id": "evt_5"})

    exact = await consume(kafka_bootstrap, [f"{p}exact"], count=1)
    expired = await consume(kafka_bootstrap, [f"{p}lead.expired"], count=1)
    payments = await consume(kafka_bootstrap, [f"{p}payments"], count=1)
    billing = await consume(kafka_bootstrap, [f"{p}billing"], count=1)
    unrouted = await consume(kafka_bootstrap, [f"{p}unrouted"], count=1)
    assert [record.value for record in exact] == [lead_created]
    assert [record.value for record in expired] == [lead_expired]
    assert [record.value for record in payments] == [payment]
    assert [record.value for record in billing] == [payment]
    assert payments[0].key == billing[0].key == b"L1"
    assert dict(payments[0].headers) == dict(billing[0].headers)
    assert [record.value for record in unrouted] == [booking]
    assert dict(unrouted[0].headers)["ce_type"] == b"booking.confirmed"
    assert unrouted[0].key == b"L1"

    every_topic = ["exact", "lead.created", "lead.expired", "payments", "billing", "unrouted"]
    total = await count_records(kafka_bootstrap, [f"{p}{name}" for name in every_topic])
    assert total == 5


async def test_unsafe_event_names_unrouted(kafka_bootstrap, topic_prefix, relay_client_factory):
    routes = [{"events": "*", "topics": [f"{topic_prefix}{{event}}"]}]
    client = await start_relay(
        relay_client_factory, routed_config(kafka_bootstrap, topic_prefix, routes)
    )
    events = ["lead/created", "lead created", "..", "x" * 250, "lead.{event}", "lead.créé"]

    for index, event in enumerate(events):
        body = make_body(event, f"evt_{index}", leadID="L1")
        assert await post(client, body) == (200, {"status": "published", "id": f"evt_{index}"})

    records = await consume(kafka_bootstrap, [f"{topic_prefix}unrouted"], count=len(events))
    assert [dict(record.headers)["ce_type"].decode() for record in records] == events


async def test_lead_keys_stick_to_partition(kafka_bootstrap, topic_prefix, relay_client_factory):
    topic = f"{topic_prefix}leads"
    config = routed_config(
        kafka_bootstrap,
        topic_prefix,
        [{"events": "*", "topics": [topic]}],
        routing={"topic_defaults": {"partitions": 6}},
    )
    client = await start_relay(relay_client_factory, config)
    leads = [f"29961469448009324{digit}" for digit in range(6)]
    events = ["lead.created", "message.received", "lead.updated", "booking.confirmed"]

    for sequence, event in enumerate(events):
        for lead in leads:
            body = make_body(event, f"evt_{lead}_{sequence}", leadID=lead, sequence=sequence)
            status, _ = await post(client, body)
            assert status == 200

    records = await consume(kafka_bootstrap, [topic], count=len(leads) * len(events))
    assert len(records) == len(leads) * len(events)
    assert len({record.partition for record in records}) > 1
    for lead in leads:
        own = sorted(
            (record for record in records if record.key == lead.encode()),
            key=lambda record: record.offset,
        )
        assert len({record.partition for record in own}) == 1, lead
        # The partition the Java client picks: toPositive(murmur2(key)) % partitions.
        assert own[0].partition == (aiokafka_murmur2(lead.encode()) & 0x7FFFFFFF) % 6, lead
        sequences = [orjson.loads(record.value)["data"]["sequence"] for record in own]
        assert sequences == list(range(len(events))), lead


async def test_structured_mode_record(kafka_bootstrap, topic_prefix, relay_client_factory):
    topic = f"{topic_prefix}reviews"
    routes = [{"events": "review.*", "topics": [topic], "content_mode": "structured"}]
    client = await start_relay(
        relay_client_factory, routed_config(kafka_bootstrap, topic_prefix, routes)
    )
    body = (
        b'{"id":"evt_r1","event":"review.created","timestamp":"2026-02-15T10:30:00Z",'
        b'"data":{"leadID":"L4","rating":5,"amountCents":123456789012345678901234567890}}'
    )

    assert await post(client, body) == (200, {"status": "published", "id": "evt_r1"})

    records = await consume(kafka_bootstrap, [topic], count=1)
    record = records[0]
    assert record.key == b"L4"
    assert record.value.endswith(b',"data":' + body + b"}")
    event = orjson.loads(record.value.replace(b"123456789012345678901234567890", b"0"))
    assert event["specversion"] == "1.0"
    assert event["id"] == "evt_r1"
    assert event["source"] == "/tasknation/tasknation"
    assert event["type"] == "review.created"
    assert event["time"] == "2026-02-15T10:30:00+00:00"
    assert event["datacontenttype"] == "application/json"
    headers = dict(record.headers)
    assert headers["content-type"] == b"application/cloudevents+json; charset=UTF-8"
    assert headers["relay_source"] == b"tasknation"
    assert "relay_received_at" in headers
    assert [name for name in headers if name.startswith("ce_")] == []


async def test_two_sources_own_secrets(kafka_bootstrap, topic_prefix, relay_client_factory):
    sources = [
        {"name": "alpha", "path": "/webhooks/alpha", "secrets": ["alpha-secret"]},
        {
            "name": "beta",
            "path": "/webhooks/beta",
            "signature_header": "X-Partner-Signature",
            "secrets": ["beta-secret"],
        },
    ]
    routes = [{"events": "*", "topics": [f"{topic_prefix}{{source}}.{{event}}"]}]
    config = routed_config(kafka_bootstrap, topic_prefix, routes, sources=sources)
    client = await start_relay(relay_client_factory, config)
    body = make_body("lead.created", leadID="L1")
    beta_headers = {"X-Partner-Signature": sign(body, b"beta-secret")}

    alpha = await post(client, body, "alpha-secret", "/webhooks/alpha")
    beta = await client.post("/webhooks/beta", data=body, headers=beta_headers)
    alpha_secret_on_beta = await client.post(
        "/webhooks/beta", data=body, headers={"X-Partner-Signature": sign(body, b"alpha-secret")}
    )
    beta_secret_on_alpha = await post(client, body, "beta-secret", "/webhooks/alpha")
    beta_header_on_alpha = await client.post("/webhooks/alpha", data=body, headers=beta_headers)

    assert alpha[0] == 200
    assert beta.status == 200
    assert alpha_secret_on_beta.status == 401
    assert (await alpha_secret_on_beta.json())["error"] == "signature_mismatch"
    assert beta_secret_on_alpha[0] == 401
    assert beta_secret_on_alpha[1]["error"] == "signature_mismatch"
    assert beta_header_on_alpha.status == 401
    assert (await beta_header_on_alpha.json())["error"] == "missing_signature"
    alpha_records = await consume(kafka_bootstrap, [f"{topic_prefix}alpha.lead.created"], 1)
    beta_records = await consume(kafka_bootstrap, [f"{topic_prefix}beta.lead.created"], 1)
    assert dict(alpha_records[0].headers)["ce_source"] == b"/tasknation/alpha"
    assert dict(beta_records[0].headers)["ce_source"] == b"/tasknation/beta"
    total = await count_records(
        kafka_bootstrap,
        [f"{topic_prefix}alpha.lead.created", f"{topic_prefix}beta.lead.created"],
    )
    assert total == 2


async def test_rotation_accepts_old_and_new(kafka_bootstrap, topic_prefix, relay_client_factory):
    topic = f"{topic_prefix}leads"
    routes = [{"events": "*", "topics": [topic]}]
    source = {"name": "tasknation", "path": PATH}
    during = routed_config(
        kafka_bootstrap,
        topic_prefix,
        routes,
        sources=[{**source, "secrets": [NEW_SECRET, OLD_SECRET]}],
    )
    after = routed_config(
        kafka_bootstrap, topic_prefix, routes, sources=[{**source, "secrets": [NEW_SECRET]}]
    )
    rotating = await start_relay(relay_client_factory, during)
    rotated = await relay_client_factory(after)

    old_during = await post(rotating, make_body("lead.created", "evt_1"), OLD_SECRET)
    new_during = await post(rotating, make_body("lead.created", "evt_2"), NEW_SECRET)
    other_during = await post(rotating, make_body("lead.created", "evt_3"), "other-secret")
    old_after = await post(rotated, make_body("lead.created", "evt_4"), OLD_SECRET)
    new_after = await post(rotated, make_body("lead.created", "evt_5"), NEW_SECRET)

    assert old_during[0] == 200
    assert new_during[0] == 200
    assert other_during[0] == 401
    assert old_after[0] == 401
    assert new_after[0] == 200
    records = await consume(kafka_bootstrap, [topic], count=3)
    assert [dict(record.headers)["ce_id"] for record in records] == [b"evt_1", b"evt_2", b"evt_5"]
    assert await count_records(kafka_bootstrap, [topic]) == 3


def accepted_shapes(body: bytes) -> dict[str, str]:
    good = sign(body, TEST_SECRET.encode())
    old = sign(body, OLD_SECRET.encode())
    wrong = sign(body, b"wrong-secret")
    return {
        "lowercase hex": good,
        "uppercase hex": good.upper(),
        "sha256= prefix": f"sha256={good}",
        "SHA256= prefix": f"SHA256={good.upper()}",
        "surrounding spaces": f"  {good}  ",
        "wrong then right": f"{wrong},{good}",
        "list with spaces": f"sha256={wrong} , sha256={good}",
        "old secret": old,
        "maximum candidates": ",".join([wrong] * (MAX_CANDIDATES - 1) + [good]),
    }


def rejected_shapes(body: bytes) -> dict[str, tuple[str, str]]:
    good = sign(body, TEST_SECRET.encode())
    return {
        "absent": ("", "missing_signature"),
        "blank": ("   ", "missing_signature"),
        "wrong secret": (sign(body, b"wrong-secret"), "signature_mismatch"),
        "other body": (sign(body + b" ", TEST_SECRET.encode()), "signature_mismatch"),
        "63 digits": (good[:-1], "malformed_signature"),
        "65 digits": (good + "0", "malformed_signature"),
        "not hex": ("g" * 64, "malformed_signature"),
        "base64": ("q83vEjRWeJA=", "malformed_signature"),
        "sha1= prefix": (f"sha1={good}", "malformed_signature"),
        "sha256: prefix": (f"sha256:{good}", "malformed_signature"),
        "0x prefix": (f"0x{good}", "malformed_signature"),
        "trailing comma": (f"{good},", "malformed_signature"),
        "too many candidates": (",".join([good] * (MAX_CANDIDATES + 1)), "malformed_signature"),
        "very long": ("a" * 5000, "malformed_signature"),
        "latin-1 letters": ("é" * 64, "malformed_signature"),
        "t= v1= pairs": (f"t=1700000000,v1={good}", "malformed_signature"),
    }


async def test_signature_header_shapes(kafka_bootstrap, topic_prefix, relay_client_factory):
    topic = f"{topic_prefix}shapes"
    config = routed_config(
        kafka_bootstrap,
        topic_prefix,
        [{"events": "*", "topics": [topic]}],
        sources=[{"name": "tasknation", "path": PATH, "secrets": [TEST_SECRET, OLD_SECRET]}],
    )
    client = await start_relay(relay_client_factory, config)
    accepted = 0

    for index, name in enumerate(accepted_shapes(b"")):
        body = make_body("lead.created", f"evt_ok_{index}", leadID="L1")
        header = accepted_shapes(body)[name]
        response = await client.post(PATH, data=body, headers={"X-TaskNation-Signature": header})
        assert response.status == 200, name
        accepted += 1

    for index, name in enumerate(rejected_shapes(b"")):
        body = make_body("lead.created", f"evt_bad_{index}", leadID="L1")
        header, reason = rejected_shapes(body)[name]
        headers = {"X-TaskNation-Signature": header} if header else {}
        response = await client.post(PATH, data=body, headers=headers)
        assert response.status == 401, name
        assert (await response.json())["error"] == reason, name

    assert await count_records(kafka_bootstrap, [topic]) == accepted


async def test_allow_lists_answer_200_unpublished(
    kafka_bootstrap, topic_prefix, relay_client_factory
):
    topic = f"{topic_prefix}events"
    source = {
        "name": "tasknation",
        "path": PATH,
        "secrets": [TEST_SECRET],
        "allowed_event_types": ["lead.*", "payment.received"],
        "allowed_business_ids": [468046965846925323],
    }
    config = routed_config(
        kafka_bootstrap, topic_prefix, [{"events": "*", "topics": [topic]}], sources=[source]
    )
    client = await start_relay(relay_client_factory, config)
    business = "468046965846925323"
    allowed = make_body("lead.created", "evt_1", leadID="L1", businessID=business)
    other_type = make_body("review.created", "evt_2", leadID="L1", businessID=business)
    other_business = make_body("lead.created", "evt_3", leadID="L2", businessID="1")
    no_business = make_body("payment.received", "evt_4", leadID="L3")

    assert await post(client, allowed) == (200, {"status": "published", "id": "evt_1"})
    assert await post(client, other_type) == (
        200,
        {"status": "dropped", "id": "evt_2", "reason": "event_type_not_allowed"},
    )
    assert await post(client, other_business) == (
        200,
        {"status": "dropped", "id": "evt_3", "reason": "business_id_not_allowed"},
    )
    assert await post(client, no_business) == (
        200,
        {"status": "dropped", "id": "evt_4", "reason": "business_id_not_allowed"},
    )

    records = await consume(kafka_bootstrap, [topic], count=1)
    assert [record.value for record in records] == [allowed]
    assert await count_records(kafka_bootstrap, [topic, f"{topic_prefix}unrouted"]) == 1
