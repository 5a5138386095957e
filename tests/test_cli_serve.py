"""`relay serve` as a process, configured from YAML and the environment."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from tests.conftest import TEST_SECRET
from tests.kafka_broker import free_port
from tests.kafka_records import consume
from tests.test_webhook_kafka import DOC_SAMPLE, PATH, signed_headers

REPO = Path(__file__).resolve().parent.parent


def fresh_sample() -> bytes:
    """Return the documented sample with the current time, which `relay serve` does not drop."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    return DOC_SAMPLE.replace(b"2026-02-15T10:30:00Z", now)


def start_relay(config: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "relay", "serve", "--config", str(config),
         "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip


async def wait_ready(session: aiohttp.ClientSession, base: str, timeout_s: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        try:
            async with session.get(f"{base}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError("relay serve did not become ready")


async def test_serve_publishes_and_stops_on_sigterm(kafka_bootstrap, topic_prefix, tmp_path):
    config = tmp_path / "relay.yaml"
    example = (REPO / "config" / "relay.yaml").read_text()
    # Every topic name in the example starts with "tasknation." or "billing.".
    config.write_text(
        example.replace("tasknation.", topic_prefix).replace("billing.", f"{topic_prefix}billing.")
    )
    port = free_port()
    process = start_relay(
        config,
        port,
        {"TASKNATION_WEBHOOK_SECRET": TEST_SECRET, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
    )
    base = f"http://127.0.0.1:{port}"
    body = fresh_sample()
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, base)
            async with session.post(
                base + PATH, data=body, headers=signed_headers(body)
            ) as response:
                assert response.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(process.communicate, timeout=30)

    assert process.returncode == 0
    log = output.decode()
    assert f"Kafka at {kafka_bootstrap}" in log
    assert TEST_SECRET not in log
    records = await consume(kafka_bootstrap, [f"{topic_prefix}lead.created"], count=1)
    assert records[0].value == body


def test_invalid_config_stops_at_start(tmp_path):
    config = tmp_path / "relay.yaml"
    config.write_text("kafka:\n  bootstrap_servers: b:9092\nsources: []\nserver:\n  port: -1\n")

    result = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 2
    assert "server.port: Input should be greater than or equal to 0" in result.stderr
    assert "sources: Tuple should have at least 1 item" in result.stderr
