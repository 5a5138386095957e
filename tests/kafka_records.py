"""Reading records back from the broker in tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRecord


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
