"""Delivery of records to Kafka: the one stage that waits on I/O.

``Publisher`` owns one idempotent aiokafka producer with ``acks=all``. It
connects in the background and keeps trying, so the relay starts and answers
503 while the broker is unreachable, and publishes once it comes up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from relay.config import KafkaConfig
from relay.errors import DeliveryUnavailable
from relay.kafka_security import kafka_client_kwargs
from relay.routing import Record

log = logging.getLogger(__name__)

MAX_RECONNECT_BACKOFF_S = 30.0


class Publisher:
    """Publishes records and waits for the broker's acknowledgement."""

    def __init__(self, config: KafkaConfig) -> None:
        self._config = config
        # Built once: the SSL context loads its files here, and every reconnect reuses it.
        self._client_kwargs = kafka_client_kwargs(config)
        self._producer: AIOKafkaProducer | None = None
        self._connect_task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        """Start connecting in the background; returns at once."""
        self._connect_task = asyncio.create_task(self._connect_loop(), name="kafka-connect")

    async def stop(self, timeout_s: float) -> None:
        """Flush pending records for at most ``timeout_s`` and close the producer."""
        if self._connect_task is not None:
            self._connect_task.cancel()
            await asyncio.gather(self._connect_task, return_exceptions=True)
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await producer.stop()
        except TimeoutError:
            log.warning(
                "the Kafka producer did not stop within %.1f s; records may be lost", timeout_s
            )

    async def publish(self, records: Sequence[Record]) -> list[Any]:
        """Send ``records`` and return their metadata once the broker acknowledged all of them.

        Raises ``DeliveryUnavailable`` when the producer is not connected or
        the broker answers with an error. The caller bounds the wait with its
        deadline; a cancelled send may still reach Kafka later, which is
        at-least-once delivery.
        """
        producer = self._producer
        if producer is None:
            raise DeliveryUnavailable("not connected to Kafka")
        try:
            futures = [
                await producer.send(
                    record.topic, value=record.value, key=record.key, headers=list(record.headers)
                )
                for record in records
            ]
            return list(await asyncio.gather(*futures))
        except KafkaError as exc:
            raise DeliveryUnavailable(f"Kafka did not acknowledge: {exc!r}") from exc

    async def _connect_loop(self) -> None:
        backoff = self._config.reconnect_backoff_s
        attempt = 0
        while True:
            attempt += 1
            producer = self._new_producer()
            try:
                await producer.start()
            except KafkaError as exc:
                await producer.stop()
                log.warning(
                    "cannot connect to Kafka at %s (attempt %d): %r; retrying in %.1f s",
                    self._config.bootstrap_servers,
                    attempt,
                    exc,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_RECONNECT_BACKOFF_S)
                continue
            self._producer = producer
            log.info("connected to Kafka at %s", self._config.bootstrap_servers)
            return

    def _new_producer(self) -> AIOKafkaProducer:
        config = self._config
        return AIOKafkaProducer(
            **self._client_kwargs,
            acks="all",
            enable_idempotence=True,
            linger_ms=config.linger_ms,
            max_request_size=config.max_request_size,
            request_timeout_ms=config.request_timeout_ms,
            metadata_max_age_ms=config.metadata_max_age_ms,
        )
