"""Deliveries through the spool: stalled broker, order per key, full spool."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from relay.app import DELIVERY_KEY
from tests.conftest import make_config
from tests.fault_traffic import Traffic, first_occurrences, missing_ids
from tests.kafka_broker import KafkaBroker
from tests.kafka_records import consume_event_ids, create_topics
from tests.test_webhook_kafka import PATH, signed_headers


def spool_config(bootstrap: str, topic_prefix: str, path: Path, **spool: Any) -> Any:
    return make_config(
        bootstrap,
        topic_prefix,
        server={"deadline_s": 3, "max_body_bytes": 64 * 1024},
        kafka={
            "bootstrap_servers": bootstrap,
            "linger_ms": 0,
            "reconnect_backoff_s": 0.2,
            "health_check_interval_s": 1.0,
        },
        spool={"enabled": True, "path": str(path), "write_reserve_s": 1.0, **spool},
    )


async def readiness(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with session.get(url) as response:
        return response.status, orjson.loads(await response.read())


async def wait_spool_empty(
    session: aiohttp.ClientSession, url: str, timeout_s: float = 90.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    report: dict[str, Any] = {}
    while time.monotonic() < deadline:
        _, report = await readiness(session, url)
        if report["spool"]["depth"] == 0 and report["kafka"] == "connected":
            return report
        await asyncio.sleep(0.2)
    raise AssertionError(f"the spool did not drain within {timeout_s} s: {report}")


async def test_stalled_broker_spools_in_order(
    dedicated_broker: KafkaBroker, topic_prefix, relay_client_factory, tmp_path: Path
):
    topic = f"{topic_prefix}lead.updated"
    await create_topics(dedicated_broker.bootstrap, [topic])
    config = spool_config(dedicated_broker.bootstrap, topic_prefix, tmp_path / "spool")
    client = await relay_client_factory(config)
    url, ready_url = str(client.make_url(PATH)), str(client.make_url("/readyz"))
    in_order = Traffic(url, "lead.updated", "evt-order", keys=["lead-ordered"])
    spread = Traffic(url, "lead.updated", "evt-spread", keys=["lead-1", "lead-2", "lead-3"])

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        # Ready means "can take a delivery", which the spool can before Kafka connects.
        await wait_spool_empty(session, ready_url)
        before = [await in_order.send_one(session) for _ in range(3)]
        dedicated_broker.pause()
        try:
            during = [await in_order.send_one(session) for _ in range(10)]
            during += await asyncio.gather(*(spread.send_one(session) for _ in range(40)))
            during += [await in_order.send_one(session) for _ in range(5)]
            await asyncio.sleep(2.5)
            paused_status, paused_report = await readiness(session, ready_url)
        finally:
            dedicated_broker.resume()
        drained = await wait_spool_empty(session, ready_url)
        after = [await in_order.send_one(session) for _ in range(3)]

    accepted = in_order.accepted() + spread.accepted()
    seen = await consume_event_ids(
        dedicated_broker.bootstrap, [topic], {answer.event_id for answer in accepted}
    )
    missing = missing_ids(accepted, seen)
    ordered_ids = [answer.event_id for answer in in_order.answers]
    ordered_seen = [i for i in first_occurrences(seen) if i.startswith("evt-order")]
    summary = (
        f"{len(in_order.answers) + len(spread.answers)} deliveries, {len(accepted)} answered "
        f"2xx ({sum(a.outcome == 'spooled' for a in accepted)} spooled), "
        f"{len(missing)} of the 2xx missing from Kafka, {len(seen)} records read"
    )
    print(summary)
    assert [answer.outcome for answer in before] == ["published"] * 3, summary
    assert [answer.outcome for answer in during] == ["spooled"] * len(during), summary
    assert [answer.outcome for answer in after] == ["published"] * 3, summary
    assert paused_status == 200, paused_report
    assert paused_report["kafka"] == "not connected", paused_report
    assert paused_report["spool"]["depth"] == len(during), paused_report
    assert paused_report["spool"]["oldest_age_s"] >= 2.5, paused_report
    assert drained["status"] == "ready", drained
    assert missing == [], summary
    assert ordered_seen == ordered_ids, "records of one key reached Kafka out of order"


async def test_full_spool_gets_503(
    topic_prefix, relay_client_factory, unused_tcp_port, tmp_path: Path
):
    config = spool_config(
        f"127.0.0.1:{unused_tcp_port}",
        topic_prefix,
        tmp_path / "spool",
        max_bytes=1024 * 1024,
        segment_bytes=256 * 1024,
    )
    client = await relay_client_factory(config, wait_ready=False)
    ready_before = await client.get("/readyz")
    statuses: list[int] = []
    answer: dict[str, Any] = {}
    response = None
    for number in range(40):
        body = orjson.dumps(
            {
                "id": f"evt_big_{number}",
                "event": "lead.updated",
                "timestamp": "2026-02-15T10:30:00Z",
                "data": {"leadID": "L1", "pad": "x" * 60_000},
            }
        )
        response = await client.post(PATH, data=body, headers=signed_headers(body))
        statuses.append(response.status)
        answer = await response.json()
        if response.status != 200:
            break
    ready_after = await client.get("/readyz")
    report = await ready_after.json()
    stats = client.server.app[DELIVERY_KEY].spool_stats()

    assert ready_before.status == 200
    assert statuses[:10] == [200] * 10, statuses
    assert statuses[-1] == 503, statuses
    assert answer["error"] == "spool_full", answer
    assert response is not None
    assert response.headers["Retry-After"] == "60"
    assert ready_after.status == 503
    assert report["spool"]["full"] is True
    assert stats is not None
    assert stats.depth == len(statuses) - 1
    assert stats.used_bytes <= 1024 * 1024
