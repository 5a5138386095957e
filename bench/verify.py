"""Checks that every delivery with a 2xx response from the relay is a record in Kafka.

The body of the relay's 2xx response names the event id. The check maps each
response to the delivery that was sent with that id. It then reads the
topics from the start and requires one record per such id, on the event's
topic, whose value is the body byte for byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

MAX_LISTED_IDS = 5


@dataclass(frozen=True, slots=True)
class SentDelivery:
    """One delivery sent by the benchmark: its expected topic and the SHA-256 of its body."""

    topic: str
    body_sha256: bytes


@dataclass
class Verification:
    """The outcome of comparing the 2xx responses with the records in Kafka."""

    responses_2xx: int = 0
    found: int = 0
    missing: list[str] = field(default_factory=list)
    wrong_value: list[str] = field(default_factory=list)
    unknown_ids: list[str] = field(default_factory=list)
    duplicate_ids: list[str] = field(default_factory=list)
    # Records of sent deliveries without a 2xx response, such as a send that timed
    # out and reached Kafka later. They are allowed because delivery is at least once.
    records_without_2xx: int = 0

    @property
    def passed(self) -> bool:
        problems = (self.missing, self.wrong_value, self.unknown_ids, self.duplicate_ids)
        return not any(problems) and self.found == self.responses_2xx

    def describe(self) -> str:
        if self.passed:
            return f"all {self.responses_2xx} deliveries with a 2xx response are in Kafka"
        parts = [
            f"{self.found} of {self.responses_2xx} deliveries with a 2xx response are in Kafka"
        ]
        for label, ids in (
            ("missing", self.missing),
            ("with a different value", self.wrong_value),
            ("with an id that was never sent", self.unknown_ids),
            ("with more than one 2xx response", self.duplicate_ids),
        ):
            if ids:
                listed = ", ".join(ids[:MAX_LISTED_IDS])
                parts.append(f"{len(ids)} {label} (first: {listed})")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        for key in ("missing", "wrong_value", "unknown_ids", "duplicate_ids"):
            document[key] = document[key][:MAX_LISTED_IDS]
        document["missing_count"] = len(self.missing)
        document["passed"] = self.passed
        return document


def sent_delivery(topic: str, body: bytes) -> SentDelivery:
    return SentDelivery(topic=topic, body_sha256=hashlib.sha256(body).digest())


def event_ids_of_responses(
    response_bodies: Iterable[bytes], verification: Verification
) -> list[str]:
    """Return the event ids named by the bodies of the relay's 2xx responses, in order."""
    ids = []
    for body in response_bodies:
        verification.responses_2xx += 1
        try:
            event_id = orjson.loads(body).get("id")
        except (orjson.JSONDecodeError, AttributeError):
            event_id = None
        ids.append(event_id if isinstance(event_id, str) else f"<no id in {body[:80]!r}>")
    return ids


async def verify(
    bootstrap: str,
    sent: Mapping[str, SentDelivery],
    response_bodies: Iterable[bytes],
    timeout_s: float = 120.0,
) -> Verification:
    """Compare the 2xx responses with the records on the topics of ``sent``."""
    verification = Verification()
    expected: dict[str, SentDelivery] = {}
    for event_id in event_ids_of_responses(response_bodies, verification):
        if event_id not in sent:
            verification.unknown_ids.append(event_id)
        elif event_id in expected:
            verification.duplicate_ids.append(event_id)
        else:
            expected[event_id] = sent[event_id]

    topics = sorted({delivery.topic for delivery in sent.values()})
    records = await read_records(bootstrap, topics, timeout_s)
    for event_id, delivery in expected.items():
        record = records.get((delivery.topic, event_id))
        if record is None:
            verification.missing.append(event_id)
        elif record != delivery.body_sha256:
            verification.wrong_value.append(event_id)
        else:
            verification.found += 1
    responded = set(expected)
    verification.records_without_2xx = sum(
        1 for (_, event_id) in records if event_id in sent and event_id not in responded
    )
    return verification


async def read_records(
    bootstrap: str, topics: list[str], timeout_s: float
) -> dict[tuple[str, str], bytes]:
    """Read ``topics`` up to their end offsets and map (topic, ce_id header) to the value's hash."""
    # Without a group id, the consumer is assigned every partition of the topics it names.
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 2**20,
    )
    await consumer.start()
    records: dict[tuple[str, str], bytes] = {}
    try:
        deadline = time.monotonic() + timeout_s
        partitions = await _assignment(consumer, set(topics), deadline)
        end_offsets = await consumer.end_offsets(partitions)
        while time.monotonic() < deadline and await _behind(consumer, end_offsets):
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for batch in batches.values():
                for record in batch:
                    event_id = dict(record.headers).get("ce_id", b"").decode()
                    records[(record.topic, event_id)] = hashlib.sha256(record.value).digest()
    finally:
        await consumer.stop()
    return records


async def _assignment(
    consumer: AIOKafkaConsumer, topics: set[str], deadline: float
) -> list[TopicPartition]:
    """Wait until the consumer is assigned partitions of every topic and return them."""
    while time.monotonic() < deadline:
        assigned = consumer.assignment()
        if {partition.topic for partition in assigned} >= topics:
            return sorted(assigned)
        await asyncio.sleep(0.1)
    raise TimeoutError(f"the consumer was not assigned partitions of all of {sorted(topics)}")


async def _behind(consumer: AIOKafkaConsumer, end_offsets: dict[TopicPartition, int]) -> bool:
    for partition, end in end_offsets.items():
        if await consumer.position(partition) < end:
            return True
    return False
