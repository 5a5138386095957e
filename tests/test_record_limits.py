"""Records larger than Kafka accepts: refused before sending, or rejected by the topic."""

from __future__ import annotations

import hashlib
import logging

import orjson
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from relay.record_size import TRUNCATED_VALUE_BYTES
from tests.conftest import make_config
from tests.kafka_records import consume
from tests.test_webhook_kafka import PATH, event_body, signed_headers

EVENT = "message.received"


def large_event(event_id: str, lead_bytes: int, padding_bytes: int) -> bytes:
    return orjson.dumps(
        {
            "id": event_id,
            "event": EVENT,
            "timestamp": "2026-02-15T10:30:00Z",
            "data": {"leadID": "L" * lead_bytes, "text": "x" * padding_bytes},
        }
    )


async def test_oversized_record_dead_lettered(
    kafka_bootstrap, topic_prefix, relay_client_factory, caplog
):
    caplog.set_level(logging.WARNING, logger="relay.handler")
    config = make_config(
        kafka_bootstrap,
        topic_prefix,
        kafka={"bootstrap_servers": kafka_bootstrap, "linger_ms": 0, "max_request_size": 81920},
    )
    client = await relay_client_factory(config)
    # A long lead id becomes the record key, so key and value together exceed the limit.
    body = large_event("evt_large", lead_bytes=30_000, padding_bytes=30_000)
    assert len(body) <= config.server.max_body_bytes

    first = await client.post(PATH, data=body, headers=signed_headers(body))
    again = await client.post(PATH, data=body, headers=signed_headers(body))

    assert first.status == 200
    assert await first.json() == {"status": "dead_lettered", "id": "evt_large"}
    assert (await again.json())["status"] == "duplicate"
    assert "refusing a record of" in caplog.text
    assert "kafka.max_request_size (81920)" in caplog.text
    records = await consume(kafka_bootstrap, [f"{topic_prefix}deadletter"], count=1)
    assert len(records) == 1
    record = records[0]
    assert record.value == body[:TRUNCATED_VALUE_BYTES]
    headers = dict(record.headers)
    assert headers["relay_dead_letter_reason"] == b"record_too_large"
    assert headers["ce_id"] == b"evt_large"
    assert headers["relay_original_bytes"] == str(len(body)).encode()
    assert headers["relay_original_sha256"] == hashlib.sha256(body).hexdigest().encode()
    sentinel = event_body(EVENT, leadID="L2")
    assert (await client.post(PATH, data=sentinel, headers=signed_headers(sentinel))).status == 200
    published = await consume(kafka_bootstrap, [topic_prefix + EVENT], count=1)
    assert [record.value for record in published] == [sentinel]


async def test_topic_limit_below_producer_gets_503(
    kafka_bootstrap, topic_prefix, relay_client_factory
):
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        topic = NewTopic(topic_prefix + EVENT, 1, 1, topic_configs={"max.message.bytes": "20000"})
        await admin.create_topics([topic])
    finally:
        await admin.close()
    client = await relay_client_factory(make_config(kafka_bootstrap, topic_prefix))
    body = large_event("evt_topic_limit", lead_bytes=10, padding_bytes=30_000)

    response = await client.post(PATH, data=body, headers=signed_headers(body))

    assert response.status == 503
    assert "Retry-After" in response.headers
    assert "MessageSizeTooLarge" in (await response.json())["message"]
