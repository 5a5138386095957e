"""Reading records back from the broker in tests."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def consume(
    bootstrap: str, topics: Iterable[str], count: int, timeout_s: float = 20.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read ``count`` records from the start of ``topics``; fewer if the timeout passes first."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        metadata_max_age_ms=1000,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(records) < count and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def count_records(bootstrap: str, topics: Iterable[str], settle_s: float = 3.0) -> int:
    """Return how many records ``topics`` hold, reading until none arrive for ``settle_s``."""
    records = await consume(bootstrap, topics, count=10**9, timeout_s=settle_s)
    return len(records)


async def create_topics(bootstrap: str, names: Iterable[str], timeout_s: float = 60.0) -> None:
    """Create single-partition topics and wait until their leader is known.

    A fresh broker takes seconds to create a topic on the first send; tests
    with a short request deadline create their topics first.
    """
    names = list(names)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        async with asyncio.timeout(timeout_s):
            await admin.create_topics(
                [NewTopic(name, num_partitions=1, replication_factor=1) for name in names]
            )
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for name in names:
            async with asyncio.timeout(timeout_s):
                await producer.partitions_for(name)
    finally:
        await producer.stop()


async def consume_event_ids(
    bootstrap: str, topics: Iterable[str], wanted: Collection[str], timeout_s: float = 60.0
) -> list[str]:
    """Return the ``ce_id`` header of every record in ``topics``, in offset order.

    Reads until every id in ``wanted`` was seen or ``timeout_s`` passed.
    """
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        metadata_max_age_ms=1000,
    )
    await consumer.start()
    seen: list[str] = []
    missing = set(wanted)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while missing and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                for record in batch:
                    event_id = dict(record.headers).get("ce_id", b"").decode()
                    seen.append(event_id)
                    missing.discard(event_id)
    finally:
        await consumer.stop()
    return seen
