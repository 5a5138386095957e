"""End to end: signed deliveries over HTTP, records read back from the broker."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from relay.signature import sign
from tests.conftest import TEST_SECRET, make_config
from tests.kafka_records import consume

# The sample payload from TaskNation's webhook documentation, byte for byte as printed there.
DOC_SAMPLE = b"""{
"id": "evt_abc123",
"event": "lead.created",
"timestamp": "2026-02-15T10:30:00Z",
"data": {
"leadID": "299614694480093245",
"businessID": "468046965846925323",
"request": {
"category": "Interior Painting",
"location": { "city": "San Jose", "state": "CA", "zip": "95110" }
},
"customer": {
"name": "John Doe",
"phone": "+14155550199"
}
}
}"""

PATH = "/webhooks/tasknation"


def signed_headers(body: bytes, secret: str = TEST_SECRET) -> dict[str, str]:
    return {"X-TaskNation-Signature": sign(body, secret.encode())}


def event_body(
    event: str = "message.received",
    event_id: str | None = None,
    timestamp: str = "2026-02-15T10:30:00Z",
    **data: Any,
) -> bytes:
    """Return an event body; each call gets a new event id unless ``event_id`` is given."""
    if event_id is None:
        event_id = f"evt_{uuid.uuid4().hex[:16]}"
    return orjson.dumps({"id": event_id, "event": event, "timestamp": timestamp, "data": data})


async def test_doc_sample_published_unchanged(kafka_bootstrap, topic_prefix, relay_client_factory):
    client = await relay_client_factory(make_config(kafka_bootstrap, topic_prefix))

    response = await client.post(PATH, data=DOC_SAMPLE, headers=signed_headers(DOC_SAMPLE))

    assert response.status == 200
    assert await response.json() == {"status": "published", "id": "evt_abc123"}
    records = await consume(kafka_bootstrap, [f"{topic_prefix}lead.created"], count=1)
    assert len(records) == 1
    record = records[0]
    assert record.value == DOC_SAMPLE
    assert record.key == b"299614694480093245"
    headers = dict(record.headers)
    assert headers["ce_id"] == b"evt_abc123"
    assert headers["ce_type"] == b"lead.created"
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_source"] == b"/tasknation/tasknation"
    assert headers["ce_time"] == b"2026-02-15T10:30:00+00:00"
    assert headers["content-type"] == b"application/json"
    assert headers["relay_source"] == b"tasknation"
    assert b"relay_received_at" in {name.encode() for name in headers}


async def test_key_falls_back_to_business_id(kafka_bootstrap, topic_prefix, relay_client_factory):
    client = await relay_client_factory(make_config(kafka_bootstrap, topic_prefix))
    body = event_body("review.created", businessID="468046965846925323", rating=5)

    response = await client.post(PATH, data=body, headers=signed_headers(body))

    assert response.status == 200
    records = await consume(kafka_bootstrap, [f"{topic_prefix}review.created"], count=1)
    assert records[0].key == b"468046965846925323"
    assert records[0].value == body


async def test_wide_integer_reaches_kafka_unchanged(
    kafka_bootstrap, topic_prefix, relay_client_factory
):
    client = await relay_client_factory(make_config(kafka_bootstrap, topic_prefix))
    body = (
        b'{"id":"evt_wide","event":"payment.received","timestamp":"2026-02-15T10:30:00Z",'
        b'"data":{"amountCents":123456789012345678901234567890,"leadID":"L1"}}'
    )

    response = await client.post(PATH, data=body, headers=signed_headers(body))

    assert response.status == 200
    records = await consume(kafka_bootstrap, [f"{topic_prefix}payment.received"], count=1)
    assert records[0].value == body


async def test_invalid_envelope_dead_lettered(kafka_bootstrap, topic_prefix, relay_client_factory):
    client = await relay_client_factory(make_config(kafka_bootstrap, topic_prefix))
    body = b'{"event": "lead.created"}'

    response = await client.post(PATH, data=body, headers=signed_headers(body))

    assert response.status == 200
    assert (await response.json())["status"] == "dead_lettered"
    records = await consume(kafka_bootstrap, [f"{topic_prefix}deadletter"], count=1)
    assert records[0].value == body
    headers = dict(records[0].headers)
    assert headers["relay_dead_letter_reason"] == b"invalid_envelope"
    assert b"'id'" in headers["relay_dead_letter_detail"]


# "$" in a Python regex also matches before a final newline, so the second case checks the anchor.
@pytest.mark.parametrize("event", ["lead/created?x=1", "lead.created\n"])
async def test_unsafe_event_name_goes_to_unrouted(
    kafka_bootstrap, topic_prefix, relay_client_factory, event
):
    client = await relay_client_factory(make_config(kafka_bootstrap, topic_prefix))
    body = event_body(event, leadID="L9")

    response = await client.post(PATH, data=body, headers=signed_headers(body))

    assert response.status == 200
    records = await consume(kafka_bootstrap, [f"{topic_prefix}unrouted"], count=1)
    assert records[0].value == body
