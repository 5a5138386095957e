"""Shared fixtures: one Kafka broker per test session, relays on free ports."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from relay.app import create_app
from relay.clock import Clock
from relay.config import RelayConfig, parse_config
from tests.kafka_broker import KafkaBroker

log = logging.getLogger(__name__)

CONFLUENT_KAFKA_IMAGE = "confluentinc/cp-kafka:8.1.0"  # Apache Kafka 4.1
TEST_SECRET = "test-webhook-secret"
# The `timestamp` of the sample events. The relay drops an event older than its
# dedup window as a replay, so relays in tests run on a clock that starts one
# minute after it.
SAMPLE_TIME = datetime(2026, 2, 15, 10, 30, tzinfo=UTC)
_CLOCK_ORIGIN = time.monotonic()


def sample_clock() -> datetime:
    """Return a time that starts one minute after ``SAMPLE_TIME`` and advances in real time."""
    elapsed = timedelta(seconds=time.monotonic() - _CLOCK_ORIGIN)
    return SAMPLE_TIME + timedelta(minutes=1) + elapsed


def _docker_engine_answers() -> bool:
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=3)
    except DockerException:
        return False
    try:
        return bool(client.ping())
    except DockerException:
        return False
    finally:
        client.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Return the bootstrap address of a running broker shared by the whole session.

    Found in this order: ``RELAY_TEST_KAFKA``; testcontainers when a Docker
    engine answers; a broker started from the official Kafka jars.
    """
    address = os.environ.get("RELAY_TEST_KAFKA")
    if address:
        yield address
        return

    if _docker_engine_answers():
        # NOTE: this branch runs only where a Docker engine exists; the jar
        # broker below is the one exercised on machines without Docker.
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer(CONFLUENT_KAFKA_IMAGE).with_kraft() as container:
            yield container.get_bootstrap_server()
        return

    with KafkaBroker(tmp_path_factory.mktemp("kafka")) as broker:
        yield broker.bootstrap


@pytest.fixture
def dedicated_broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    """Return a broker of this test's own, for tests that stop, kill or pause it."""
    broker = KafkaBroker(tmp_path / "kafka", heap="256m")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop(timeout_s=10)


@pytest.fixture
def topic_prefix() -> str:
    """Return a topic prefix unique to this test, so tests sharing a broker never mix records."""
    return f"t{uuid.uuid4().hex[:10]}."


async def wait_until_ready(client: TestClient[Any, Any], timeout_s: float = 30.0) -> None:
    """Poll ``/readyz`` until the relay's producer is connected."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        response = await client.get("/readyz")
        if response.status == 200:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the relay did not become ready within {timeout_s} s")


def make_config(bootstrap: str, topic_prefix: str, **overrides: Any) -> RelayConfig:
    """Return a relay configuration for tests; ``overrides`` replace top-level sections."""
    document: dict[str, Any] = {
        "server": {"deadline_s": 5, "max_body_bytes": 64 * 1024},
        "kafka": {"bootstrap_servers": bootstrap, "linger_ms": 0},
        "routing": {
            "topic_prefix": topic_prefix,
            "unrouted_topic": f"{topic_prefix}unrouted",
            "dead_letter_topic": f"{topic_prefix}deadletter",
        },
        "sources": [
            {"name": "tasknation", "path": "/webhooks/tasknation", "secrets": [TEST_SECRET]}
        ],
    }
    document.update(overrides)
    return parse_config(yaml.safe_dump(document))


@pytest.fixture
async def relay_client_factory() -> AsyncIterator[Callable[[RelayConfig], Any]]:
    """Return a factory that serves a relay on a free loopback port and yields its client."""
    clients: list[TestClient[Any, Any]] = []

    async def start(
        config: RelayConfig, wait_ready: bool = True, clock: Clock = sample_clock
    ) -> TestClient[Any, Any]:
        client = TestClient(TestServer(create_app(config, clock), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        if wait_ready:
            await wait_until_ready(client)
        return client

    yield start
    for client in clients:
        await client.close()
