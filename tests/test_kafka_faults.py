"""Delivery under Kafka faults: unreachable, restarted and stalled brokers, broken producers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    RequestTimedOutError,
    UnknownProducerId,
)
from aiokafka.structs import TopicPartition

from relay.app import PUBLISHER_KEY
from relay.delivery import Publisher, is_fatal_producer_error, is_record_rejected
from relay.errors import DeliveryUnavailable
from relay.routing import Record
from tests.conftest import make_config, wait_until_ready
from tests.fault_traffic import Traffic, missing_ids
from tests.kafka_broker import KafkaBroker
from tests.kafka_records import consume_event_ids, create_topics
from tests.test_webhook_kafka import PATH, event_body, signed_headers

DEADLINE_S = 2.0
# Responses may come a little after the deadline on a loaded machine; a hang would take 30 s.
ANSWER_MARGIN_S = 3.0


@pytest.mark.parametrize(
    "error",
    [OutOfOrderSequenceNumber(), UnknownProducerId(), ProducerFenced()],
)
def test_fatal_producer_errors_detected(error: Exception) -> None:
    assert is_fatal_producer_error(error)


@pytest.mark.parametrize(
    "error",
    [
        KafkaTimeoutError(),
        KafkaConnectionError(),
        NotLeaderForPartitionError(),
        RequestTimedOutError(),
    ],
)
def test_retriable_errors_not_fatal(error: Exception) -> None:
    assert not is_fatal_producer_error(error)


def test_oversize_record_counts_as_rejected() -> None:
    error = DeliveryUnavailable("Kafka did not acknowledge")
    error.__cause__ = MessageSizeTooLargeError()
    timeout = DeliveryUnavailable("Kafka did not acknowledge")
    timeout.__cause__ = KafkaTimeoutError()

    assert is_record_rejected(error)
    assert not is_record_rejected(timeout)


async def test_unstarted_publisher_rejects_publish() -> None:
    config = make_config("127.0.0.1:9", "t.").kafka
    publisher = Publisher(config)

    with pytest.raises(DeliveryUnavailable, match="not connected to Kafka"):
        await publisher.publish([Record("t.x", None, b"{}", ())])
    assert not publisher.connected


async def _post(client: Any, body: bytes) -> tuple[int, dict[str, Any]]:
    response = await client.post(PATH, data=body, headers=signed_headers(body))
    return response.status, await response.json()


async def test_out_of_order_sequence_replaces_producer(
    kafka_bootstrap, topic_prefix, relay_client_factory
):
    client = await relay_client_factory(make_config(kafka_bootstrap, topic_prefix))
    publisher = client.server.app[PUBLISHER_KEY]
    topic = f"{topic_prefix}lead.created"
    first = event_body("lead.created", event_id="evt_first", leadID="L1")
    assert (await _post(client, first))[0] == 200

    # A producer is left with a sequence gap when the broker lost its producer
    # state. The broker then returns OUT_OF_ORDER_SEQUENCE_NUMBER to every later batch.
    publisher._producer._txn_manager.increment_sequence_number(TopicPartition(topic, 0), 5)
    broken = event_body("lead.created", event_id="evt_broken", leadID="L1")
    status, answer = await _post(client, broken)
    assert status == 503
    assert answer["error"] == "kafka_unavailable"
    assert "OutOfOrderSequenceNumber" in answer["message"]

    await wait_until_ready(client)
    after = event_body("lead.created", event_id="evt_after", leadID="L1")
    assert (await _post(client, after))[0] == 200
    assert publisher.replacements == 1
    seen = await consume_event_ids(kafka_bootstrap, [topic], {"evt_first", "evt_after"})
    assert "evt_first" in seen
    assert "evt_after" in seen


async def test_dead_sender_task_replaces_producer(
    kafka_bootstrap, topic_prefix, relay_client_factory
):
    client = await relay_client_factory(make_config(kafka_bootstrap, topic_prefix))
    publisher = client.server.app[PUBLISHER_KEY]
    topic = f"{topic_prefix}lead.created"
    assert (await _post(client, event_body("lead.created", leadID="L1")))[0] == 200

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected sender crash")

    # Any unexpected error ends aiokafka's sender task and fails every later send.
    publisher._producer._message_accumulator.drain_by_nodes = crash
    status, answer = await _post(client, event_body("lead.created", leadID="L2"))
    assert status == 503
    assert answer["error"] == "kafka_unavailable"

    await wait_until_ready(client)
    after = event_body("lead.created", event_id="evt_after", leadID="L3")
    assert (await _post(client, after))[0] == 200
    assert publisher.replacements == 1
    assert "evt_after" in await consume_event_ids(kafka_bootstrap, [topic], {"evt_after"})


async def _wait_ready_status(
    session: aiohttp.ClientSession, url: str, status: int, timeout_s: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with session.get(url) as response:
            if response.status == status:
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"/readyz did not answer {status} within {timeout_s} s")


async def test_broker_faults_lose_no_accepted_event(
    tmp_path: Path, topic_prefix, relay_client_factory
):
    broker = KafkaBroker(tmp_path / "kafka", heap="256m")
    config = make_config(
        broker.bootstrap,
        topic_prefix,
        server={"deadline_s": DEADLINE_S, "retry_after_s": 30},
        kafka={
            "bootstrap_servers": broker.bootstrap,
            "linger_ms": 0,
            "reconnect_backoff_s": 0.2,
            "health_check_interval_s": 1.0,
        },
    )
    client = await relay_client_factory(config, wait_ready=False)
    topic = f"{topic_prefix}lead.updated"
    traffic = Traffic(str(client.make_url(PATH)), "lead.updated", "evt-fault", pause_s=0.1)
    ready_url = str(client.make_url("/readyz"))
    timeout = aiohttp.ClientTimeout(total=30)

    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            # Unreachable at start: not ready, 503, then publishing without a restart.
            before_start = await traffic.send_one(session)
            await _wait_ready_status(session, ready_url, 503)
            await asyncio.to_thread(broker.start)
            await create_topics(broker.bootstrap, [topic])
            await wait_until_ready(client, timeout_s=60)
            await traffic.start(session)
            await traffic.wait_accepted_since(0)

            mark = len(traffic.answers)
            await asyncio.to_thread(broker.stop)
            await _wait_ready_status(session, ready_url, 503)
            await asyncio.to_thread(broker.start)
            await traffic.wait_accepted_since(mark)

            await asyncio.sleep(1.0)
            broker.pause()
            await _wait_ready_status(session, ready_url, 503)
            await asyncio.sleep(2 * DEADLINE_S)
            stalled = len(traffic.answers)
            broker.resume()
            await traffic.wait_accepted_since(stalled)
            await asyncio.sleep(1.0)
            await traffic.stop()
            await _wait_ready_status(session, ready_url, 200)

        accepted = traffic.accepted()
        seen = await consume_event_ids(broker.bootstrap, [topic], {a.event_id for a in accepted})
    finally:
        await asyncio.to_thread(broker.stop, 10)

    slowest = max(answer.elapsed_s for answer in traffic.answers)
    missing = missing_ids(accepted, seen)
    summary = (
        f"{len(traffic.answers)} deliveries: {len(accepted)} answered 2xx, "
        f"{traffic.count(503)} answered 503, {len(missing)} of the 2xx missing from Kafka"
    )
    print(summary)
    assert before_start.status == 503, summary
    assert {answer.status for answer in traffic.answers} <= {200, 503}, summary
    assert traffic.count(503) > 0, summary
    assert traffic.accepted_since(stalled) > 0, summary
    assert slowest < DEADLINE_S + ANSWER_MARGIN_S, f"slowest answer {slowest:.1f} s; {summary}"
    assert missing == [], summary
