"""Duplicates, replays and arrival order, counted in records read back from Kafka."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from tests.conftest import SAMPLE_TIME, make_config
from tests.kafka_broker import KafkaBroker
from tests.kafka_records import consume
from tests.test_webhook_kafka import PATH, event_body, signed_headers

EVENT = "booking.confirmed"


async def post(client, body: bytes) -> tuple[int, dict[str, object]]:
    response = await client.post(PATH, data=body, headers=signed_headers(body))
    return response.status, await response.json()


async def read_topic(bootstrap: str, topic: str, count: int) -> list[bytes]:
    """Return the first ``count`` values on ``topic``.

    The events of a test share the key L1 and so one partition. Each test
    sends a sentinel event last, so a record published twice shows up
    before the sentinel and changes the list.
    """
    records = await consume(bootstrap, [topic], count=count)
    return [record.value for record in records]


async def test_repeated_id_published_once(kafka_bootstrap, topic_prefix, relay_client_factory):
    client = await relay_client_factory(make_config(kafka_bootstrap, topic_prefix))
    body = event_body(EVENT, event_id="evt_repeat", leadID="L1")

    answers = [await post(client, body) for _ in range(20)]

    assert answers[0] == (200, {"status": "published", "id": "evt_repeat"})
    assert answers[1:] == [(200, {"status": "duplicate", "id": "evt_repeat"})] * 19
    sentinel = event_body(EVENT, leadID="L1")
    assert (await post(client, sentinel))[0] == 200
    values = await read_topic(kafka_bootstrap, topic_prefix + EVENT, count=2)
    assert values == [body, sentinel]


async def test_concurrent_id_published_once(kafka_bootstrap, topic_prefix, relay_client_factory):
    client = await relay_client_factory(make_config(kafka_bootstrap, topic_prefix))
    body = event_body(EVENT, event_id="evt_concurrent", leadID="L1")

    answers = await asyncio.gather(*(post(client, body) for _ in range(30)))

    assert {status for status, _ in answers} == {200}
    statuses = sorted(str(answer["status"]) for _, answer in answers)
    assert statuses == ["duplicate"] * 29 + ["published"]
    sentinel = event_body(EVENT, leadID="L1")
    assert (await post(client, sentinel))[0] == 200
    values = await read_topic(kafka_bootstrap, topic_prefix + EVENT, count=2)
    assert values == [body, sentinel]


async def test_different_ids_all_published(kafka_bootstrap, topic_prefix, relay_client_factory):
    client = await relay_client_factory(make_config(kafka_bootstrap, topic_prefix))
    bodies = [event_body(EVENT, event_id=f"evt_{number}", leadID="L1") for number in range(10)]

    answers = await asyncio.gather(*(post(client, body) for body in bodies))

    assert [answer["status"] for _, answer in answers] == ["published"] * 10
    records = await consume(kafka_bootstrap, [topic_prefix + EVENT], count=10)
    assert sorted(record.value for record in records) == sorted(bodies)


async def test_older_event_after_newer_kept(kafka_bootstrap, topic_prefix, relay_client_factory):
    client = await relay_client_factory(make_config(kafka_bootstrap, topic_prefix))
    newer = event_body(EVENT, event_id="evt_b", timestamp="2026-02-15T10:30:00Z", leadID="L1")
    older = event_body(EVENT, event_id="evt_a", timestamp="2026-02-15T09:00:00Z", leadID="L1")

    assert await post(client, newer) == (200, {"status": "published", "id": "evt_b"})
    assert await post(client, older) == (200, {"status": "published", "id": "evt_a"})

    records = await consume(kafka_bootstrap, [topic_prefix + EVENT], count=2)
    assert [record.value for record in records] == [newer, older]
    assert records[0].key == records[1].key == b"L1"


async def test_replay_answered_not_published(
    kafka_bootstrap, topic_prefix, relay_client_factory, caplog
):
    caplog.set_level(logging.INFO, logger="relay.handler")
    config = make_config(kafka_bootstrap, topic_prefix)
    now = SAMPLE_TIME + timedelta(seconds=config.dedup.window_s + 60)
    client = await relay_client_factory(config, clock=lambda: now)
    replay = event_body(EVENT, event_id="evt_old", leadID="L1")
    fresh_time = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    sentinel = event_body(EVENT, event_id="evt_fresh", timestamp=fresh_time, leadID="L1")

    assert await post(client, replay) == (200, {"status": "replay", "id": "evt_old"})
    assert await post(client, sentinel) == (200, {"status": "published", "id": "evt_fresh"})

    records = await consume(kafka_bootstrap, [topic_prefix + EVENT], count=1)
    assert [record.value for record in records] == [sentinel]
    assert "dropping a replay" in caplog.text
    assert "event_id='evt_old'" in caplog.text


async def test_waiter_publishes_when_first_fails(
    dedicated_broker: KafkaBroker, topic_prefix, relay_client_factory
):
    config = make_config(dedicated_broker.bootstrap, topic_prefix, server={"deadline_s": 5})
    client = await relay_client_factory(config)
    warm_up = event_body(EVENT, leadID="L1")
    assert (await post(client, warm_up))[0] == 200
    body = event_body(EVENT, event_id="evt_retry", leadID="L1")

    dedicated_broker.pause()
    try:
        first = asyncio.create_task(post(client, body))
        await asyncio.sleep(2.5)
        second = asyncio.create_task(post(client, body))
        first_status, first_answer = await first
    finally:
        dedicated_broker.resume()
    second_status, second_answer = await second

    assert first_status == 503
    assert first_answer["error"] == "kafka_unavailable"
    assert (second_status, second_answer["status"]) == (200, "published")
    records = await consume(dedicated_broker.bootstrap, [topic_prefix + EVENT], count=2)
    assert body in [record.value for record in records]
