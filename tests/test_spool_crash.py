"""`relay serve` killed with SIGKILL while it spools: no delivery answered 2xx is lost."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import yaml

from tests.conftest import TEST_SECRET
from tests.fault_traffic import Traffic, missing_ids
from tests.kafka_broker import KafkaBroker, free_port
from tests.kafka_records import consume_event_ids, create_topics
from tests.test_cli_serve import wait_ready
from tests.test_spool_delivery import readiness, wait_spool_empty
from tests.test_webhook_kafka import PATH


def start_relay(config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    # Output goes to a file: a full pipe would block the relay's logging.
    with open(log, "ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "relay", "serve", "--config", str(config),
             "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, "TASKNATION_WEBHOOK_SECRET": TEST_SECRET},
            stdout=output,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def write_config(path: Path, bootstrap: str, topic_prefix: str, spool: Path) -> None:
    document = {
        "server": {"deadline_s": 2, "shutdown_grace_s": 5},
        "kafka": {
            "bootstrap_servers": bootstrap,
            "linger_ms": 0,
            "reconnect_backoff_s": 0.2,
            "health_check_interval_s": 1.0,
        },
        "routing": {"topic_prefix": topic_prefix},
        "spool": {"enabled": True, "path": str(spool), "write_reserve_s": 1.0},
        "sources": [
            {"name": "tasknation", "path": PATH, "secrets": ["${TASKNATION_WEBHOOK_SECRET}"]}
        ],
    }
    path.write_text(yaml.safe_dump(document))


async def wait_spooled(traffic: Traffic, count: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while sum(answer.outcome == "spooled" for answer in traffic.answers) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} deliveries were spooled in {timeout_s} s")
        await asyncio.sleep(0.05)


async def test_killed_relay_loses_no_spooled_event(
    dedicated_broker: KafkaBroker, topic_prefix, tmp_path: Path
):
    topic = f"{topic_prefix}lead.updated"
    await create_topics(dedicated_broker.bootstrap, [topic])
    config = tmp_path / "relay.yaml"
    write_config(config, dedicated_broker.bootstrap, topic_prefix, tmp_path / "spool")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "relay.log"
    first = Traffic(base + PATH, "lead.updated", "evt-crash", workers=6, pause_s=0.02)
    second = Traffic(base + PATH, "lead.updated", "evt-restart")
    process = start_relay(config, port, log)
    restarted: subprocess.Popen[bytes] | None = None

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            await wait_ready(session, base)
            await wait_spool_empty(session, base + "/readyz")
            await first.start(session)
            try:
                await first.wait_accepted_since(0)
                await asyncio.to_thread(dedicated_broker.stop, 10)
                await wait_spooled(first, 100)
                # SIGKILL while senders are mid-request, so some writes are cut short.
                process.kill()
            finally:
                await first.stop()
            await asyncio.to_thread(process.wait, 30)

            restarted = start_relay(config, port, log)
            await wait_ready(session, base)
            _, recovered = await readiness(session, base + "/readyz")
            for _ in range(20):
                await second.send_one(session)
            await asyncio.to_thread(dedicated_broker.start)
            drained = await wait_spool_empty(session, base + "/readyz")
    finally:
        for relay in (process, restarted):
            if relay is not None and relay.poll() is None:
                relay.send_signal(signal.SIGTERM)
                await asyncio.to_thread(relay.wait, 30)

    accepted = first.accepted() + second.accepted()
    seen = await consume_event_ids(
        dedicated_broker.bootstrap, [topic], {answer.event_id for answer in accepted}
    )
    missing = missing_ids(accepted, seen)
    spooled = sum(answer.outcome == "spooled" for answer in accepted)
    cut = first.count(0)
    summary = (
        f"{len(first.answers) + len(second.answers)} deliveries: {len(accepted)} answered 2xx "
        f"({spooled} spooled, {len(accepted) - spooled} published), {cut} cut by the kill, "
        f"{recovered['spool']['depth']} recovered from the spool after the restart, "
        f"{len(missing)} of the 2xx missing from Kafka"
    )
    print(summary)
    assert spooled >= 100, summary
    assert recovered["spool"]["depth"] > 0, summary
    assert [answer.outcome for answer in second.answers] == ["spooled"] * 20, summary
    assert drained["spool"]["depth"] == 0, drained
    assert missing == [], summary
