"""The test broker itself: aiokafka produces, consumes and runs idempotently against it."""

import uuid

from aiokafka import AIOKafkaProducer

from tests.kafka_records import consume


async def test_idempotent_producer_round_trip(kafka_bootstrap: str) -> None:
    topic = f"broker-check-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        metadata = await producer.send_and_wait(
            topic, b"value-1", key=b"key-1", headers=[("h", b"v")]
        )
        await producer.send_and_wait(topic, b"value-2", key=b"key-1")
    finally:
        await producer.stop()
    assert metadata.offset == 0

    records = await consume(kafka_bootstrap, [topic], count=2)
    assert [record.value for record in records] == [b"value-1", b"value-2"]
    assert records[0].key == b"key-1"
    assert list(records[0].headers) == [("h", b"v")]
