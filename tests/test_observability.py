"""Metrics, the admin port and log lines, checked against a real broker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families

from relay.signature import sign
from tests.conftest import TEST_SECRET, make_config
from tests.kafka_broker import free_port
from tests.test_cli_serve import fresh_sample, wait_ready
from tests.test_webhook_kafka import PATH, event_body, signed_headers

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_samples(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def delivered(event_type: str, status: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    labels = (("event_type", event_type), ("source", "tasknation"), ("status", status))
    return ("relay_deliveries_total", labels)


def rejected(reason: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("relay_rejections_total", (("reason", reason), ("source", "tasknation")))


async def wait_for_in_flight(client: Any, expected: float) -> None:
    """Scrape /metrics until ``relay_requests_in_flight`` is ``expected``, for at most 30 s."""
    for _ in range(600):
        response = await client.get("/metrics")
        samples = parse_samples(await response.text())
        if samples[("relay_requests_in_flight", ())] == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"relay_requests_in_flight never reached {expected}")


async def test_in_flight_gauge_counts_waiting_request(
    kafka_bootstrap, topic_prefix, relay_client_factory
):
    client = await relay_client_factory(make_config(kafka_bootstrap, topic_prefix))
    body = event_body("lead.created", leadID="L1")
    _, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    head = f"POST {PATH} HTTP/1.1\r\nHost: relay\r\nContent-Length: {len(body)}\r\n\r\n"
    # Half of the body: the handler waits for the rest.
    writer.write(head.encode() + body[: len(body) // 2])
    await writer.drain()
    try:
        await wait_for_in_flight(client, 1)
    finally:
        writer.close()
        await writer.wait_closed()
    await wait_for_in_flight(client, 0)


async def test_metrics_count_known_sequence(kafka_bootstrap, topic_prefix, relay_client_factory):
    client = await relay_client_factory(make_config(kafka_bootstrap, topic_prefix))
    lead = event_body("lead.created", leadID="L1")
    other_lead = event_body("lead.created", leadID="L2")
    unknown_type = event_body("lead.exploded", leadID="L3")
    not_an_event = b'{"event": "lead.created"}'

    for body in (lead, other_lead, lead, unknown_type, not_an_event):
        response = await client.post(PATH, data=body, headers=signed_headers(body))
        assert response.status == 200
    forged = await client.post(PATH, data=lead, headers=signed_headers(lead, "wrong-secret"))
    assert forged.status == 401

    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = parse_samples(await response.text())

    assert samples[delivered("lead.created", "200")] == 3
    assert samples[delivered("other", "200")] == 1
    assert samples[delivered("unknown", "200")] == 1
    assert samples[delivered("unknown", "401")] == 1
    assert samples[rejected("duplicate")] == 1
    assert samples[rejected("dead_lettered")] == 1
    assert samples[rejected("signature_mismatch")] == 1
    assert rejected("published") not in samples
    assert samples[("relay_publish_seconds_count", ())] == 4
    assert samples[("relay_requests_in_flight", ())] == 0
    assert samples[("relay_spool_depth_records", ())] == 0


async def test_event_type_label_stays_bounded(kafka_bootstrap, topic_prefix, relay_client_factory):
    client = await relay_client_factory(make_config(kafka_bootstrap, topic_prefix))
    for number in range(5):
        body = event_body(f"custom.type{number}", leadID="L1")
        response = await client.post(PATH, data=body, headers=signed_headers(body))
        assert response.status == 200

    samples = parse_samples(await (await client.get("/metrics")).text())

    event_types = {
        dict(labels)["event_type"] for name, labels in samples if name == "relay_deliveries_total"
    }
    assert event_types == {"other"}
    assert samples[delivered("other", "200")] == 5


def write_config(path: Path, bootstrap: str, topic_prefix: str, **top: Any) -> Path:
    document = {
        "server": {"deadline_s": 5},
        "kafka": {"bootstrap_servers": bootstrap, "linger_ms": 0},
        "routing": {"topic_prefix": topic_prefix},
        "sources": [{"name": "tasknation", "path": PATH, "secrets": [TEST_SECRET]}],
        **top,
    }
    path.write_text(yaml.safe_dump(document))
    return path


def start_relay(config: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "relay", "serve", "--config", str(config),
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip


async def stop_relay(process: subprocess.Popen[bytes]) -> str:
    process.terminate()
    output, _ = await asyncio.to_thread(process.communicate, timeout=30)
    assert process.returncode == 0
    return output.decode()


async def test_admin_port_separates_probes(kafka_bootstrap, topic_prefix, tmp_path):
    port, admin_port = free_port(), free_port()
    config = write_config(
        tmp_path / "relay.yaml",
        kafka_bootstrap,
        topic_prefix,
        server={"deadline_s": 5, "admin_port": admin_port},
    )
    process = start_relay(config, port)
    base, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, admin)
            body = fresh_sample()
            async with session.post(base + PATH, data=body, headers=signed_headers(body)) as answer:
                assert answer.status == 200
            for path in ("/healthz", "/readyz", "/metrics"):
                async with session.get(base + path) as response:
                    assert response.status == 404, path
                async with session.get(admin + path) as response:
                    assert response.status == 200, path
            async with session.post(admin + PATH, data=body) as response:
                assert response.status == 404
            async with session.get(admin + "/metrics") as response:
                samples = parse_samples(await response.text())
    finally:
        await stop_relay(process)

    assert samples[delivered("lead.created", "200")] == 1


async def test_json_logs_hide_secrets_and_bodies(kafka_bootstrap, topic_prefix, tmp_path):
    port = free_port()
    config = write_config(
        tmp_path / "relay.yaml", kafka_bootstrap, topic_prefix, log_format="json", log_level="DEBUG"
    )
    process = start_relay(config, port)
    base = f"http://127.0.0.1:{port}"
    body = fresh_sample()
    forged_signature = sign(body, b"wrong-secret")
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, base)
            headers = {"X-TaskNation-Signature": forged_signature}
            async with session.post(base + PATH, data=body, headers=headers) as response:
                assert response.status == 401
            async with session.post(base + PATH, data=body, headers=signed_headers(body)) as answer:
                assert answer.status == 200
    finally:
        output = await stop_relay(process)

    lines = [orjson.loads(line) for line in output.splitlines() if line.strip()]
    assert lines, "the relay wrote no log lines"
    assert TEST_SECRET not in output
    assert forged_signature not in output
    assert sign(body, TEST_SECRET.encode()) not in output
    assert "John Doe" not in output
    assert "+14155550199" not in output
    rejections = [line for line in lines if line.get("reason") == "signature_mismatch"]
    assert len(rejections) == 1
    assert rejections[0]["source"] == "tasknation"
    assert rejections[0]["level"] == "INFO"
    published = [line for line in lines if line.get("topic") == f"{topic_prefix}lead.created"]
    assert len(published) == 1
    assert published[0]["partition"] == 0
    assert published[0]["offset"] >= 0
