"""Delivery of records to Kafka, with the spool as fallback: the one stage that waits on I/O.

``Publisher`` owns one idempotent aiokafka producer with ``acks=all``. A
supervisor task connects in the background, so the relay starts and responds with
503 while the broker is unreachable and publishes once it comes up. The same
task checks that the broker still responds and replaces the producer when it
reaches a state that aiokafka does not recover from.

``Delivery`` is what the handler calls. Without a spool it publishes and the
handler's deadline bounds the wait. With a spool, Kafka gets the deadline
minus ``spool.write_reserve_s``; a delivery that is not acknowledged by then
is appended to the spool, and while the spool contains entries every new
delivery goes there too, so records of one key keep their order of arrival.
``Forwarder`` drains the spool to Kafka in order.

Delivery is at least once. A send that timed out stays queued in the producer
and may still reach Kafka, next to its spooled or retried copy; the
``ce_id`` header lets consumers drop the copy.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    InvalidTimestampError,
    InvalidTopicError,
    InvalidTxnState,
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    ProducerFenced,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnknownProducerId,
)

from relay.config import KafkaConfig, SpoolConfig
from relay.errors import DeliveryUnavailable
from relay.kafka_security import kafka_client_kwargs
from relay.metrics import RelayMetrics
from relay.partitioner import partition_for
from relay.routing import Record
from relay.spool import Spool, SpoolEntry, SpoolStats

log = logging.getLogger(__name__)

MAX_RECONNECT_BACKOFF_S = 30.0
MAX_FORWARD_BACKOFF_S = 5.0

# Errors after which aiokafka 0.14 keeps failing every later send on the same
# producer: it never resets sequence numbers or requests a new producer id.
FATAL_PRODUCER_ERRORS: tuple[type[KafkaError], ...] = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    ProducerFenced,
    InvalidProducerIdMapping,
    InvalidTxnState,
    ProducerClosed,
)


# Errors about the record or topic itself: sending the same record again, from
# the spool or another producer, fails the same way.
RECORD_REJECTED_ERRORS: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
    TopicAuthorizationFailedError,
    CorruptRecordException,
    InvalidTimestampError,
)


def is_fatal_producer_error(exc: BaseException) -> bool:
    """Tell whether ``exc`` leaves the producer unable to send anything again."""
    return isinstance(exc, FATAL_PRODUCER_ERRORS)


def is_record_rejected(exc: BaseException) -> bool:
    """Tell whether Kafka rejected the record itself, so that a later attempt cannot help."""
    cause = exc.__cause__ if isinstance(exc, DeliveryUnavailable) else exc
    return isinstance(cause, RECORD_REJECTED_ERRORS)


def sender_failure(producer: AIOKafkaProducer) -> BaseException | None:
    """Return why the producer's sender task ended, or None while it runs.

    Once that task ends, aiokafka fails every pending and later send with its
    error. NOTE: aiokafka 0.14 exposes the task only as ``_sender.sender_task``.
    """
    task = getattr(getattr(producer, "_sender", None), "sender_task", None)
    if not isinstance(task, asyncio.Task) or not task.done():
        return None
    if task.cancelled():
        return asyncio.CancelledError("the sender task was cancelled")
    return task.exception() or KafkaError("the sender task ended")


class Publisher:
    """Publishes records and waits for the broker's acknowledgement."""

    def __init__(self, config: KafkaConfig, metrics: RelayMetrics | None = None) -> None:
        self._config = config
        self._metrics = metrics or RelayMetrics()
        # Built once: the SSL context loads its files here, and every reconnect reuses it.
        self._client_kwargs = kafka_client_kwargs(config)
        self._producer: AIOKafkaProducer | None = None
        self._healthy = False
        self._ready = asyncio.Event()
        self._replace_requested = asyncio.Event()
        self._replace_reason = ""
        self._last_ack = 0.0
        self._supervisor: asyncio.Task[None] | None = None
        self.replacements = 0

    @property
    def connected(self) -> bool:
        """True while a working producer exists and the broker responded recently."""
        return self._producer is not None and self._healthy

    async def wait_connected(self) -> None:
        await self._ready.wait()

    async def start(self) -> None:
        """Start connecting in the background; returns at once."""
        self._supervisor = asyncio.create_task(self._supervise(), name="kafka-supervisor")

    async def stop(self, timeout_s: float) -> None:
        """Flush pending records for at most ``timeout_s`` and close the producer."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        producer, self._producer = self._producer, None
        self._set_healthy(False)
        if producer is not None:
            await self._close(producer, timeout_s)

    async def publish(self, records: Sequence[Record]) -> list[Any]:
        """Send ``records`` and return their metadata once the broker acknowledged all of them.

        Raises ``DeliveryUnavailable`` when the producer is not connected or
        the broker returns an error. The caller bounds the wait with its
        deadline; a cancelled wait leaves queued records to reach Kafka later.
        """
        producer = self._producer
        if producer is None:
            raise DeliveryUnavailable("not connected to Kafka")
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            futures = [
                await producer.send(
                    record.topic, value=record.value, key=record.key, headers=list(record.headers)
                )
                for record in records
            ]
            # Most deliveries are one record: awaiting its future needs no gather task.
            if len(futures) == 1:
                metadata = [await futures[0]]
            else:
                metadata = list(await asyncio.gather(*futures))
        except KafkaError as exc:
            self._metrics.kafka_errors.labels(type(exc).__name__).inc()
            self._check_producer(producer, exc)
            raise DeliveryUnavailable(f"Kafka did not acknowledge: {exc!r}") from exc

        self._last_ack = loop.time()
        self._metrics.publish_seconds.observe(self._last_ack - started)
        self._set_healthy(True)
        if log.isEnabledFor(logging.DEBUG):
            for item in metadata:
                log.debug(
                    "published to %s[%d] at offset %d",
                    item.topic,
                    item.partition,
                    item.offset,
                    extra={"topic": item.topic, "partition": item.partition, "offset": item.offset},
                )
        return metadata

    def _check_producer(self, producer: AIOKafkaProducer, exc: KafkaError) -> None:
        failure = sender_failure(producer)
        if failure is not None:
            self._request_replacement(producer, f"its sender task ended with {failure!r}")
        elif is_fatal_producer_error(exc):
            self._request_replacement(producer, f"the broker answered {exc!r}")

    def _request_replacement(self, producer: AIOKafkaProducer, reason: str) -> None:
        # The producer is taken away at once, so no later request gets a 2xx from it.
        # Sends already in flight end with an error or at their deadline.
        if self._producer is not producer:
            return
        self._producer = None
        self._set_healthy(False)
        self._replace_reason = reason
        self._replace_requested.set()

    def _set_healthy(self, healthy: bool) -> None:
        self._healthy = healthy
        if self.connected:
            self._ready.set()
        else:
            self._ready.clear()

    async def _supervise(self) -> None:
        while True:
            producer = await self._connect()
            self._replace_requested.clear()
            self._producer = producer
            self._last_ack = asyncio.get_running_loop().time()
            self._set_healthy(True)
            log.info("connected to Kafka at %s", self._config.bootstrap_servers)

            reason = await self._watch(producer)
            self._request_replacement(producer, reason)
            self.replacements += 1
            log.warning("replacing the Kafka producer because %s", reason)
            await self._close(producer, self._config.close_timeout_s)

    async def _connect(self) -> AIOKafkaProducer:
        backoff = self._config.reconnect_backoff_s
        attempt = 0
        while True:
            attempt += 1
            producer = self._new_producer()
            try:
                # A stalled broker accepts the connection and never responds.
                async with asyncio.timeout(self._config.request_timeout_ms / 1000):
                    await producer.start()
                return producer
            except asyncio.CancelledError:
                await self._close(producer, self._config.close_timeout_s)
                raise
            except (KafkaError, TimeoutError) as exc:
                self._metrics.kafka_errors.labels(type(exc).__name__).inc()
                await self._close(producer, self._config.close_timeout_s)
                log.warning(
                    "cannot connect to Kafka at %s (attempt %d): %r; retrying in %.1f s",
                    self._config.bootstrap_servers,
                    attempt,
                    exc,
                    backoff,
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_RECONNECT_BACKOFF_S)

    async def _watch(self, producer: AIOKafkaProducer) -> str:
        """Check the producer until it must be replaced; return the reason."""
        interval = self._config.health_check_interval_s
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout(interval):
                    await self._replace_requested.wait()
                return self._replace_reason
            except TimeoutError:
                pass
            failure = sender_failure(producer)
            if failure is not None:
                return f"its sender task ended with {failure!r}"
            if loop.time() - self._last_ack >= interval:
                await self._probe(producer, interval)

    async def _probe(self, producer: AIOKafkaProducer, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                answered = bool(await producer.client.force_metadata_update())
        except TimeoutError:
            answered = False
        if answered != self._healthy and self._producer is producer:
            if answered:
                log.info("Kafka at %s responds again", self._config.bootstrap_servers)
            else:
                log.warning(
                    "Kafka at %s did not respond to a metadata request within %.1f s; not ready",
                    self._config.bootstrap_servers,
                    timeout_s,
                )
            self._set_healthy(answered)

    async def _close(self, producer: AIOKafkaProducer, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await producer.stop()
            return
        except TimeoutError:
            log.warning(
                "the Kafka producer did not flush within %.1f s; records still queued in it "
                "are dropped and were not acknowledged",
                timeout_s,
            )
        except KafkaError as exc:
            log.warning("closing the Kafka producer failed: %r", exc)
        # stop() was cut short: end the sender task and the connections it keeps.
        sender = getattr(producer, "_sender", None)
        if sender is not None:
            await asyncio.gather(sender.close(), return_exceptions=True)
        await producer.client.close()

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(**self._client_kwargs, **producer_settings(self._config))


def producer_settings(config: KafkaConfig) -> dict[str, Any]:
    """Return the producer's delivery and batching arguments, with acks=all and idempotence."""
    return {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": config.linger_ms,
        "max_request_size": config.max_request_size,
        "request_timeout_ms": config.request_timeout_ms,
        "metadata_max_age_ms": config.metadata_max_age_ms,
        "partitioner": partition_for,
    }


class DeliveryOutcome(enum.Enum):
    """The place where an accepted delivery became durable: Kafka or the spool."""

    PUBLISHED = "published"
    SPOOLED = "spooled"


class Delivery:
    """Publishes to Kafka, or appends to the spool when Kafka cannot take a delivery in time."""

    def __init__(
        self,
        publisher: Publisher,
        spool: Spool | None = None,
        spool_config: SpoolConfig | None = None,
    ) -> None:
        self.publisher = publisher
        self.spool = spool
        self._spool_config = spool_config or SpoolConfig()
        self._forwarder: Forwarder | None = None
        self._forwarder_task: asyncio.Task[None] | None = None

    @classmethod
    def from_config(
        cls,
        kafka: KafkaConfig,
        spool_config: SpoolConfig,
        reserve_bytes: int,
        metrics: RelayMetrics | None = None,
    ) -> Delivery:
        spool = None
        if spool_config.enabled:
            assert spool_config.path is not None
            spool = Spool(
                spool_config.path,
                max_bytes=spool_config.max_bytes,
                segment_bytes=spool_config.segment_bytes,
                reserve_bytes=reserve_bytes,
            )
        return cls(Publisher(kafka, metrics), spool, spool_config)

    async def start_spool(self) -> None:
        """Open the spool and start forwarding what it holds."""
        if self.spool is None:
            return
        await self.spool.open()
        self._forwarder = Forwarder(self.spool, self.publisher, self._spool_config)
        self._forwarder_task = asyncio.create_task(self._forwarder.run(), name="spool-forwarder")
        self._forwarder_task.add_done_callback(_log_forwarder_end)

    async def stop_spool(self) -> None:
        """Stop forwarding and close the spool; unforwarded entries stay on disk."""
        if self._forwarder_task is not None:
            self._forwarder_task.cancel()
            await asyncio.gather(self._forwarder_task, return_exceptions=True)
        if self.spool is not None:
            await self.spool.close()

    @property
    def ready(self) -> bool:
        """True when a delivery arriving now can be made durable."""
        if self.spool is None:
            return self.publisher.connected
        forwarding = self._forwarder_task is not None and not self._forwarder_task.done()
        return forwarding and not self.spool.stats().full

    def spool_stats(self) -> SpoolStats | None:
        """Return the spool's depth, oldest age and disk use, or None without a spool."""
        return None if self.spool is None else self.spool.stats()

    async def deliver(self, records: Sequence[Record], deadline: float) -> DeliveryOutcome:
        """Make ``records`` durable in Kafka or in the spool before ``deadline`` (loop time).

        Raises ``DeliveryUnavailable`` (no spool), ``SpoolFull`` or
        ``SpoolUnavailable``; the caller's timeout bounds the whole wait.
        """
        spool = self.spool
        if spool is None:
            await self.publisher.publish(records)
            return DeliveryOutcome.PUBLISHED

        if spool.depth == 0:
            try:
                async with asyncio.timeout_at(deadline - self._spool_config.write_reserve_s):
                    await self.publisher.publish(records)
                return DeliveryOutcome.PUBLISHED
            except (TimeoutError, DeliveryUnavailable) as exc:
                if is_record_rejected(exc):
                    # Spooled, it would block every later entry in the forwarder.
                    raise
                log.warning("spooling deliveries until Kafka takes them again: %s", _describe(exc))

        await spool.append(records)
        return DeliveryOutcome.SPOOLED


class Forwarder:
    """Publishes the spool's entries to Kafka in order and acknowledges them."""

    def __init__(self, spool: Spool, publisher: Publisher, config: SpoolConfig) -> None:
        self._spool = spool
        self._publisher = publisher
        self._config = config
        self.forwarded = 0

    async def run(self) -> None:
        entries: list[SpoolEntry] = []
        failures = 0
        while True:
            if not entries:
                entries = await self._spool.read(self._config.forward_batch_records)
            await self._publisher.wait_connected()
            try:
                await self._publish(entries)
            except (TimeoutError, DeliveryUnavailable) as exc:
                # NOTE: an entry that Kafka rejects for good (is_record_rejected)
                # is retried forever and holds back every later entry; deliver()
                # never spools such a record, but a topic's limits can change.
                failures += 1
                delay = min(0.5 * 2 ** min(failures, 10), MAX_FORWARD_BACKOFF_S)
                if failures == 1 or failures % 20 == 0:
                    log.log(
                        logging.ERROR if is_record_rejected(exc) else logging.WARNING,
                        "forwarding %d spooled deliveries failed (%d attempts so far): %s",
                        len(entries),
                        failures,
                        _describe(exc),
                    )
                await asyncio.sleep(delay)
                continue

            await self._acknowledge(entries)
            self.forwarded += len(entries)
            if failures:
                log.info("forwarding from the spool resumed after %d failed attempts", failures)
            failures = 0
            entries = []
            if self._spool.depth == 0:
                log.info("the spool is empty; %d deliveries forwarded so far", self.forwarded)

    async def _publish(self, entries: Sequence[SpoolEntry]) -> None:
        records = [record for entry in entries for record in entry.records]
        async with asyncio.timeout(self._config.forward_timeout_s):
            await self._publisher.publish(records)

    async def _acknowledge(self, entries: Sequence[SpoolEntry]) -> None:
        while True:
            try:
                await self._spool.acknowledge(entries)
                return
            except OSError as exc:
                # The records are in Kafka; until this succeeds they would be sent again.
                log.error("cannot record forwarded spool entries: %s; retrying", exc)
                await asyncio.sleep(MAX_FORWARD_BACKOFF_S)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no acknowledgement in time"
    return str(exc)


def _log_forwarder_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "the spool forwarder stopped; spooled deliveries are not forwarded until restart",
            exc_info=task.exception(),
        )
