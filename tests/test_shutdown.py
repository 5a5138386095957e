"""`relay serve` on SIGTERM: drain, finish requests in flight, flush, exit 0."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from relay.signature import sign
from tests.conftest import TEST_SECRET
from tests.kafka_broker import free_port
from tests.kafka_records import consume
from tests.raw_http import RawResponse, build_request, read_response, send_raw
from tests.test_cli_serve import fresh_sample
from tests.test_webhook_kafka import PATH

EVENT = "lead.created"


def write_config(path: Path, bootstrap: str, topic_prefix: str, **server: object) -> Path:
    document = {
        "server": {"deadline_s": 5, "shutdown_grace_s": 8, **server},
        "kafka": {"bootstrap_servers": bootstrap, "linger_ms": 0},
        "routing": {"topic_prefix": topic_prefix},
        "sources": [
            {"name": "tasknation", "path": PATH, "secrets": [TEST_SECRET]},
        ],
    }
    path.write_text(yaml.safe_dump(document))
    return path


def serve(config: Path, port: int, log_file: Path) -> subprocess.Popen[bytes]:
    with open(log_file, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "relay", "serve", "--config", str(config),
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def unique_sample(number: int) -> bytes:
    return fresh_sample().replace(b"evt_abc123", b"evt_shutdown_%d" % number)


def delivery(body: bytes) -> bytes:
    return build_request(
        PATH, body, [("X-TaskNation-Signature", sign(body, TEST_SECRET.encode()).encode())]
    )


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


async def wait_ready(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            answer = await send_raw(port, [get("/readyz")])
        except ConnectionError:
            answer = None
        if answer is not None and answer.status == 200:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"relay serve did not become ready within {timeout_s} s")


async def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 40.0) -> int:
    """Wait for the process to exit; kill it when it does not, and return its exit code."""
    try:
        return await asyncio.to_thread(process.wait, timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"relay serve did not exit within {timeout_s} s of SIGTERM") from None


@pytest.fixture
def relay_process(tmp_path):
    """Return a function that starts `relay serve`; every process it started is stopped."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(config: Path, port: int) -> subprocess.Popen[bytes]:
        process = serve(config, port, tmp_path / f"relay-{len(processes)}.log")
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


async def wait_refused(port: int, timeout_s: float = 15.0) -> None:
    """Return once connections to ``port`` are refused."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            await send_raw(port, [get("/healthz")])
        except ConnectionRefusedError:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"relay serve still accepted connections after {timeout_s} s")


async def test_sigterm_finishes_requests_in_flight(
    kafka_bootstrap, topic_prefix, tmp_path, relay_process
):
    config = write_config(tmp_path / "relay.yaml", kafka_bootstrap, topic_prefix,
                          deadline_s=10, shutdown_grace_s=12, shutdown_drain_s=2)  # fmt: skip
    port = free_port()
    process = relay_process(config, port)
    await wait_ready(port)
    bodies = [unique_sample(number) for number in range(6)]

    # Five deliveries whose bodies are still arriving when the relay stops listening.
    release = asyncio.Event()
    in_flight = []
    for body in bodies[:5]:
        request = delivery(body)
        in_flight.append(asyncio.create_task(send_after(port, request, release)))
    await asyncio.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    process.send_signal(signal.SIGTERM)  # a repeated signal does not cut the shutdown short

    # While draining, the relay reports not ready but still serves.
    ready = await send_raw(port, [get("/readyz")])
    during_drain = await send_raw(port, [delivery(bodies[5])])
    await wait_refused(port)
    release.set()
    answers = await asyncio.gather(*in_flight)
    exit_code = await stop_process(process)

    assert isinstance(ready, RawResponse)
    assert ready.status == 503
    assert ready.json() == {"status": "shutting_down"}
    assert isinstance(during_drain, RawResponse)
    assert during_drain.status == 200
    assert during_drain.headers["connection"] == "close"
    for answer in answers:
        assert isinstance(answer, RawResponse)
        assert answer.status == 200
        assert answer.json()["status"] == "published"
        assert answer.headers["connection"] == "close"
    assert exit_code == 0
    log = (tmp_path / "relay-0.log").read_text()
    assert "received SIGTERM" in log
    assert "relay stopped" in log
    assert "Traceback" not in log
    records = await consume(kafka_bootstrap, [topic_prefix + EVENT], count=6)
    assert sorted(record.value for record in records) == sorted(bodies)


async def send_after(port: int, request: bytes, release: asyncio.Event) -> RawResponse | None:
    """Send ``request`` but its last 20 bytes, and those once ``release`` is set."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request[:-20])
        await writer.drain()
        await release.wait()
        writer.write(request[-20:])
        await writer.drain()
        return await read_response(reader)
    finally:
        writer.close()


async def test_sigterm_when_idle_exits_promptly(
    kafka_bootstrap, topic_prefix, tmp_path, relay_process
):
    config = write_config(tmp_path / "relay.yaml", kafka_bootstrap, topic_prefix)
    port = free_port()
    process = relay_process(config, port)
    await wait_ready(port)
    body = unique_sample(0)
    assert (await send_raw(port, [delivery(body)])).status == 200  # type: ignore[union-attr]

    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    exit_code = await stop_process(process)

    assert exit_code == 0
    assert time.monotonic() - started < 8.0


async def test_slow_headers_closed_after_keepalive(
    kafka_bootstrap, topic_prefix, tmp_path, relay_process
):
    config = write_config(tmp_path / "relay.yaml", kafka_bootstrap, topic_prefix,
                          keepalive_timeout_s=1)  # fmt: skip
    port = free_port()
    relay_process(config, port)
    await wait_ready(port)

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"POST /webhooks/tasknation HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    async with asyncio.timeout(20):
        remainder = await reader.read()
    writer.close()

    assert remainder == b""
    assert time.monotonic() - started < 15.0
    body = unique_sample(1)
    assert (await send_raw(port, [delivery(body)])).status == 200  # type: ignore[union-attr]
