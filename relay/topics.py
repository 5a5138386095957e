"""Kafka topic administration: create the relay's topics, and check that they exist.

Many clusters disable automatic topic creation, and a record for a missing
topic then waits until the request deadline. ``relay topics ensure`` creates
every topic from ``RelayConfig.writable_topics`` with the partitions,
replication factor and topic configs of ``routing.topic_defaults`` and
``routing.topic_overrides``; it never changes a topic that exists. At start
the relay runs the same lookup once and logs the topics that are missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from relay.config import KafkaConfig, RelayConfig, RoutingConfig
from relay.errors import TopicAdminError

log = logging.getLogger(__name__)

MAX_CHECK_BACKOFF_S = 30.0

TopicOutcome = Literal["created", "exists", "failed"]


@dataclass(frozen=True, slots=True)
class TopicResult:
    """Outcome of ``ensure_topics`` for one topic.

    ``partitions`` and ``replication_factor`` are the configured values for a
    created topic and the cluster's values for an existing one. ``detail``
    explains a failure or a difference from the configuration.
    """

    topic: str
    outcome: TopicOutcome
    partitions: int | None = None
    replication_factor: int | None = None
    detail: str = ""


async def ensure_topics(config: RelayConfig, timeout_s: float) -> list[TopicResult]:
    """Create each topic the relay writes to that does not exist yet.

    Raises ``TopicAdminError`` when Kafka cannot be reached or does not
    respond within ``timeout_s``. A topic that Kafka rejects is a ``failed``
    result instead.
    """
    topics = config.writable_topics()
    try:
        async with asyncio.timeout(timeout_s), _admin_client(config.kafka) as admin:
            existing = await _describe_existing(admin, topics)
            missing = [topic for topic in topics if topic not in existing]
            created = await _create(admin, config.routing, missing) if missing else {}
    except TimeoutError:
        raise TopicAdminError(
            f"Kafka at {config.kafka.bootstrap_servers} did not respond within {timeout_s} s"
        ) from None
    except KafkaError as exc:
        raise TopicAdminError(
            f"the topic request to Kafka at {config.kafka.bootstrap_servers} failed: {exc!r}"
        ) from exc

    results = []
    for topic in topics:
        if topic in existing:
            results.append(_existing_result(topic, existing[topic], config.routing))
        else:
            missing_answer = TopicResult(topic, "failed", detail="Kafka did not answer for it")
            results.append(created.get(topic, missing_answer))
    return results


async def find_missing_topics(
    kafka: KafkaConfig, topics: Sequence[str], timeout_s: float
) -> list[str]:
    """Return the topics among ``topics`` that do not exist, in the given order.

    Raises ``TopicAdminError`` when Kafka cannot be reached or does not
    respond within ``timeout_s``.
    """
    try:
        async with asyncio.timeout(timeout_s), _admin_client(kafka) as admin:
            existing = set(await admin.list_topics())
    except TimeoutError:
        raise TopicAdminError(
            f"Kafka at {kafka.bootstrap_servers} did not respond within {timeout_s} s"
        ) from None
    except KafkaError as exc:
        raise TopicAdminError(
            f"listing the topics on Kafka at {kafka.bootstrap_servers} failed: {exc!r}"
        ) from exc
    return [topic for topic in topics if topic not in existing]


def topic_check(config: RelayConfig) -> Callable[[web.Application], AsyncIterator[None]]:
    """Return a ``cleanup_ctx`` entry that logs missing topics once Kafka responds.

    The check runs in the background, so the relay serves while Kafka is
    unreachable, and it is cancelled when the application stops.
    """

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(log_missing_topics(config), name="kafka-topic-check")
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    return lifetime


async def log_missing_topics(config: RelayConfig) -> list[str]:
    """Look up the relay's topics until Kafka responds, then log and return the missing ones."""
    topics = config.writable_topics()
    timeout_s = config.kafka.request_timeout_ms / 1000
    backoff_s = config.kafka.reconnect_backoff_s
    attempt = 0
    while True:
        attempt += 1
        try:
            missing = await find_missing_topics(config.kafka, topics, timeout_s)
        except TopicAdminError as exc:
            log.warning(
                "cannot check the topics (attempt %d): %s; retrying in %.1f s",
                attempt,
                exc,
                backoff_s,
            )
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, MAX_CHECK_BACKOFF_S)
            continue
        break

    if missing:
        log.warning(
            "%d of %d topics that the relay writes to do not exist: %s; records for them "
            "wait until the deadline unless the broker creates topics automatically; "
            "create them with `relay topics ensure`",
            len(missing),
            len(topics),
            ", ".join(missing),
        )
    else:
        log.info("all %d topics that the relay writes to exist", len(topics))
    return missing


@contextlib.asynccontextmanager
async def _admin_client(kafka: KafkaConfig) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka.bootstrap_servers,
        client_id=kafka.client_id,
        request_timeout_ms=kafka.request_timeout_ms,
    )
    try:
        await admin.start()
        yield admin
    finally:
        await admin.close()


async def _describe_existing(
    admin: AIOKafkaAdminClient, topics: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Return the metadata of those ``topics`` that exist, by name."""
    names = set(await admin.list_topics())
    present = [topic for topic in topics if topic in names]
    if not present:
        return {}
    described = await admin.describe_topics(present)
    return {entry["topic"]: entry for entry in described if entry["error_code"] == 0}


async def _create(
    admin: AIOKafkaAdminClient, routing: RoutingConfig, topics: Sequence[str]
) -> dict[str, TopicResult]:
    new_topics = []
    for topic in topics:
        settings = routing.settings_for(topic)
        new_topics.append(
            NewTopic(
                topic,
                settings.partitions,
                settings.replication_factor,
                topic_configs=dict(settings.configs),
            )
        )

    response = await admin.create_topics(new_topics)
    results = {}
    for topic, error_code, error_message in response.topic_errors:
        settings = routing.settings_for(topic)
        if error_code == 0:
            outcome: TopicOutcome = "created"
            detail = ""
        elif error_code == TopicAlreadyExistsError.errno:
            # Another process created it between the lookup and this request.
            outcome, detail = "exists", "created by another client meanwhile"
        else:
            outcome = "failed"
            detail = f"{for_code(error_code).__name__}: {error_message}"
        results[topic] = TopicResult(
            topic, outcome, settings.partitions, settings.replication_factor, detail
        )
    return results


def _existing_result(topic: str, metadata: dict[str, Any], routing: RoutingConfig) -> TopicResult:
    partitions = metadata["partitions"]
    replication_factor = len(partitions[0]["replicas"]) if partitions else 0
    settings = routing.settings_for(topic)
    differences = []
    if len(partitions) != settings.partitions:
        differences.append(f"{len(partitions)} partitions, configured {settings.partitions}")
    if replication_factor != settings.replication_factor:
        differences.append(
            f"replication factor {replication_factor}, configured {settings.replication_factor}"
        )
    detail = f"left unchanged: {'; '.join(differences)}" if differences else ""
    return TopicResult(topic, "exists", len(partitions), replication_factor, detail)
