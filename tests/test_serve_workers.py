"""`relay serve --workers N`: worker processes sharing one port, stopped together."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from relay.config import parse_config
from relay.spool import Spool
from relay.workers import worker_config
from tests.conftest import TEST_SECRET
from tests.kafka_broker import free_port
from tests.kafka_records import consume
from tests.test_cli_serve import fresh_sample
from tests.test_webhook_kafka import PATH, signed_headers

REQUESTS = 30


def write_config(path: Path, bootstrap: str, topic_prefix: str, **sections: Any) -> Path:
    document: dict[str, Any] = {
        "server": {"deadline_s": 5, "shutdown_grace_s": 10},
        "kafka": {"bootstrap_servers": bootstrap, "linger_ms": 0, "reconnect_backoff_s": 0.2},
        "routing": {
            "topic_prefix": topic_prefix,
            "unrouted_topic": f"{topic_prefix}unrouted",
            "dead_letter_topic": f"{topic_prefix}deadletter",
        },
        "sources": [
            {"name": "tasknation", "path": PATH, "secrets": ["${TASKNATION_WEBHOOK_SECRET}"]}
        ],
        **sections,
    }
    path.write_text(yaml.safe_dump(document))
    return path


def start_workers(config: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "relay", "serve", "--config", str(config),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "2", *extra],
        env={**os.environ, "TASKNATION_WEBHOOK_SECRET": TEST_SECRET},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip


def listening_sockets(port: int) -> int:
    """Return how many IPv4 sockets listen on ``port``: one per worker with SO_REUSEPORT."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    # Fields: sl, local address as HEXIP:HEXPORT, remote address, state (0A is LISTEN).
    return sum(
        1
        for fields in (line.split() for line in lines)
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port
    )


async def wait_all_ready(base: str, port: int, timeout_s: float = 60) -> None:
    """Wait until both workers listen, then for 20 ready responses in a row on new connections."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while listening_sockets(port) < 2:
        assert loop.time() < deadline, f"{listening_sockets(port)} workers listen, expected 2"
        await asyncio.sleep(0.2)
    in_a_row = 0
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        while in_a_row < 20:
            assert loop.time() < deadline, "the workers did not become ready"
            try:
                async with session.get(f"{base}/readyz") as response:
                    in_a_row = in_a_row + 1 if response.status == 200 else 0
            except aiohttp.ClientConnectionError:
                in_a_row = 0
            if in_a_row == 0:
                await asyncio.sleep(0.2)


def numbered_body(index: int) -> bytes:
    return fresh_sample().replace(b'"evt_', f'"evt_w{index}_'.encode(), 1)


async def post_each_on_new_connection(base: str, bodies: list[bytes]) -> list[dict[str, Any]]:
    """POST every body on a connection of its own, so the kernel picks a worker for each."""
    answers = []
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        for body in bodies:
            async with session.post(base + PATH, data=body, headers=signed_headers(body)) as reply:
                assert reply.status == 200, await reply.text()
                answers.append(orjson.loads(await reply.read()))
    return answers


async def stop(process: subprocess.Popen[bytes]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = await asyncio.to_thread(process.communicate, timeout=60)
    return output.decode()


async def test_two_workers_publish_and_stop(kafka_bootstrap, topic_prefix, tmp_path):
    config = write_config(tmp_path / "relay.yaml", kafka_bootstrap, topic_prefix)
    port = free_port()
    process = start_workers(config, port)
    bodies = [numbered_body(index) for index in range(REQUESTS)]
    try:
        await wait_all_ready(f"http://127.0.0.1:{port}", port)
        answers = await post_each_on_new_connection(f"http://127.0.0.1:{port}", bodies)
    finally:
        log = await stop(process)

    assert process.returncode == 0, log
    assert {answer["status"] for answer in answers} == {"published"}
    assert "started 2 workers" in log
    assert log.count("relay stopped") == 2
    records = await consume(kafka_bootstrap, [f"{topic_prefix}lead.created"], count=REQUESTS)
    assert sorted(record.value for record in records) == sorted(bodies)


async def test_each_worker_spools_to_its_folder(topic_prefix, tmp_path):
    # Kafka is unreachable, so each worker appends what it accepts to its own spool folder.
    unreachable = f"127.0.0.1:{free_port()}"
    spool_path = tmp_path / "spool"
    spool = {"enabled": True, "path": str(spool_path), "max_bytes": 64 * 1024 * 1024}
    config = write_config(tmp_path / "relay.yaml", unreachable, topic_prefix, spool=spool)
    port = free_port()
    process = start_workers(config, port, "--loop", "asyncio")
    try:
        await wait_all_ready(f"http://127.0.0.1:{port}", port)
        bodies = [numbered_body(index) for index in range(REQUESTS)]
        answers = await post_each_on_new_connection(f"http://127.0.0.1:{port}", bodies)
    finally:
        log = await stop(process)

    assert process.returncode == 0, log
    assert {answer["status"] for answer in answers} == {"spooled"}
    depths = [await spooled_count(spool_path / f"worker-{index}") for index in (0, 1)]
    # Both workers responded: 2 ** -29 is the chance that one of them gets every connection.
    assert sum(depths) == REQUESTS
    assert min(depths) > 0, depths


async def spooled_count(path: Path) -> int:
    spool = Spool(path, max_bytes=64 * 1024 * 1024, segment_bytes=1024 * 1024, reserve_bytes=0)
    await spool.open()
    try:
        return spool.depth
    finally:
        await spool.close()


def test_worker_config_own_spool_folder():
    document = {
        "kafka": {"bootstrap_servers": "127.0.0.1:9092"},
        "sources": [{"name": "tasknation", "path": PATH, "secrets": [TEST_SECRET]}],
        "spool": {"enabled": True, "path": "/var/spool/relay"},
    }
    config = parse_config(yaml.safe_dump(document))

    assert worker_config(config, 1).spool.path == Path("/var/spool/relay/worker-1")
    assert worker_config(config, 0).kafka == config.kafka


def test_zero_workers_is_a_usage_error(tmp_path):
    config = write_config(tmp_path / "relay.yaml", "127.0.0.1:9092", "t.")

    result = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--config", str(config), "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 2
    assert "--workers: must be 1 or more, not 0" in result.stderr


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_loop_choice_is_accepted(loop):
    from relay.event_loop import event_loop_factory

    factory = event_loop_factory(loop)
    if loop == "asyncio":
        assert factory is None
    else:
        event_loop = factory()
        try:
            assert type(event_loop).__module__.startswith("uvloop")
        finally:
            event_loop.close()


def test_sigterm_during_start_exits_zero(tmp_path):
    config = write_config(tmp_path / "relay.yaml", f"127.0.0.1:{free_port()}", "t.")
    process = start_workers(config, free_port())
    assert process.stdout is not None
    lines = []
    # The parent logs this line right after starting the workers, before they can serve.
    for line in iter(process.stdout.readline, b""):
        lines.append(line.decode())
        if "started 2 workers" in lines[-1]:
            process.send_signal(signal.SIGTERM)
            break
    output, _ = process.communicate(timeout=60)
    log = "".join(lines) + output.decode()

    assert process.returncode == 0, log
    stopped = log.count("relay stopped") + log.count("stopped before it started serving")
    assert stopped == 2, log
