"""`relay topics`, `relay check-config` and the topic check at start.

The topic tests use a broker with automatic topic creation disabled, as many
production clusters are, so a missing topic stays missing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from relay.cli import main
from relay.config import TASKNATION_EVENT_TYPES, load_config
from relay.topics import ensure_topics
from tests.conftest import TEST_SECRET
from tests.kafka_broker import KafkaBroker, free_port
from tests.kafka_records import consume
from tests.test_routing_kafka import make_body
from tests.test_webhook_kafka import PATH, signed_headers

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "relay.yaml"


@pytest.fixture(scope="module")
def strict_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """Return a broker of this module's own that never creates topics automatically."""
    broker = KafkaBroker(
        tmp_path_factory.mktemp("strict-kafka"),
        properties={"auto.create.topics.enable": "false"},
        heap="256m",
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop(timeout_s=10)


def write_config(path: Path, bootstrap: str, prefix: str, **topic_defaults: Any) -> Path:
    """Write a config that fans payments out and sets topic settings; return its path."""
    document = {
        "server": {"deadline_s": 3},
        "kafka": {"bootstrap_servers": bootstrap, "linger_ms": 0},
        "routing": {
            "routes": [
                {
                    "events": "payment.received",
                    "topics": [f"{prefix}payment.received", f"{prefix}billing"],
                },
                {"events": "*", "topics": [f"{prefix}{{event}}"]},
            ],
            "unrouted_topic": f"{prefix}unrouted",
            "dead_letter_topic": f"{prefix}deadletter",
            "topic_defaults": {
                "partitions": 3,
                "configs": {"retention.ms": 86400000},
                **topic_defaults,
            },
            "topic_overrides": {
                f"{prefix}deadletter": {"partitions": 1, "configs": {"retention.ms": 2592000000}}
            },
        },
        "sources": [{"name": "tasknation", "path": PATH, "secrets": ["${TEST_SECRET}"]}],
    }
    path.write_text(yaml.safe_dump(document))
    return path


def run_relay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        env={**os.environ, "TEST_SECRET": TEST_SECRET},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def describe(bootstrap: str, topics: list[str]) -> dict[str, tuple[int, str]]:
    """Return the partition count and ``retention.ms`` of each topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        metadata = await admin.describe_topics(topics)
        resources = [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in topics]
        configs = await admin.describe_configs(resources)
    finally:
        await admin.close()
    retention = {}
    for response in configs:
        for resource in response.to_object()["resources"]:
            entries = {
                entry["config_names"]: entry["config_value"] for entry in resource["config_entries"]
            }
            retention[resource["resource_name"]] = entries["retention.ms"]
    return {
        entry["topic"]: (len(entry["partitions"]), retention[entry["topic"]]) for entry in metadata
    }


async def create_topic(bootstrap: str, topic: str, partitions: int, retention_ms: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        new_topic = NewTopic(topic, partitions, 1, topic_configs={"retention.ms": retention_ms})
        response = await admin.create_topics([new_topic])
    finally:
        await admin.close()
    assert response.topic_errors[0][1] == 0


async def test_ensure_creates_only_missing(strict_broker: KafkaBroker, topic_prefix, tmp_path):
    p = topic_prefix
    config = write_config(tmp_path / "relay.yaml", strict_broker.bootstrap, p)
    await create_topic(strict_broker.bootstrap, f"{p}unrouted", 1, "1000")

    before = await asyncio.to_thread(run_relay, "topics", "check", "--config", str(config))
    ensured = await asyncio.to_thread(run_relay, "topics", "ensure", "--config", str(config))
    again = await asyncio.to_thread(run_relay, "topics", "ensure", "--config", str(config))
    after = await asyncio.to_thread(run_relay, "topics", "check", "--config", str(config))

    assert before.returncode == 1
    assert f"missing {p}lead.created\n" in before.stdout
    assert f"exists  {p}unrouted\n" in before.stdout
    assert "10 of 11 topics are missing" in before.stdout
    assert ensured.returncode == 0, ensured.stderr
    assert f"created {p}lead.created (partitions 3, replication factor 1)\n" in ensured.stdout
    assert f"created {p}billing (partitions 3, replication factor 1)\n" in ensured.stdout
    assert f"created {p}deadletter (partitions 1, replication factor 1)\n" in ensured.stdout
    assert (
        f"exists  {p}unrouted (partitions 1, replication factor 1): "
        "left unchanged: 1 partitions, configured 3\n"
    ) in ensured.stdout
    assert ensured.stdout.endswith("10 created, 1 existed, 0 failed\n")
    assert again.returncode == 0
    assert again.stdout.endswith("0 created, 11 existed, 0 failed\n")
    assert after.returncode == 0
    assert after.stdout.endswith("all 11 topics exist\n")

    topics = [f"{p}{event}" for event in TASKNATION_EVENT_TYPES]
    described = await describe(
        strict_broker.bootstrap, [*topics, f"{p}billing", f"{p}unrouted", f"{p}deadletter"]
    )
    for topic in [*topics, f"{p}billing"]:
        assert described[topic] == (3, "86400000"), topic
    assert described[f"{p}deadletter"] == (1, "2592000000")
    assert described[f"{p}unrouted"] == (1, "1000")


async def test_ensure_reports_refused_topics(strict_broker: KafkaBroker, topic_prefix, tmp_path):
    config = write_config(
        tmp_path / "relay.yaml", strict_broker.bootstrap, topic_prefix, replication_factor=3
    )

    result = await asyncio.to_thread(run_relay, "topics", "ensure", "--config", str(config))

    assert result.returncode == 1
    assert f"failed  {topic_prefix}lead.created (partitions 3, replication factor 3): " in (
        result.stdout
    )
    assert "InvalidReplicationFactorError" in result.stdout
    assert result.stdout.endswith("0 created, 0 existed, 11 failed\n")


def test_topics_unreachable_kafka_exits_1(tmp_path):
    config = write_config(tmp_path / "relay.yaml", f"127.0.0.1:{free_port()}", "t.")

    result = run_relay("topics", "check", "--config", str(config), "--timeout-s", "20")

    assert result.returncode == 1
    assert "relay: listing the topics on Kafka at 127.0.0.1:" in result.stderr


async def wait_for_log(caplog: pytest.LogCaptureFixture, text: str, timeout_s: float = 60) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        for record in caplog.records:
            if text in record.getMessage():
                return record.getMessage()
        await asyncio.sleep(0.2)
    raise AssertionError(f"no log message containing {text!r} within {timeout_s} s")


async def test_missing_topics_logged_then_published(
    strict_broker: KafkaBroker, topic_prefix, tmp_path, relay_client_factory, caplog
):
    p = topic_prefix
    caplog.set_level(logging.INFO, logger="relay.topics")
    path = write_config(tmp_path / "relay.yaml", strict_broker.bootstrap, p)
    config = load_config(path, environ={"TEST_SECRET": TEST_SECRET})
    client = await relay_client_factory(config)

    missing = await wait_for_log(caplog, "do not exist")
    body = make_body("lead.created", leadID="L1")
    before = await client.post(PATH, data=body, headers=signed_headers(body))

    assert "11 of 11 topics that the relay writes to do not exist" in missing
    assert f"{p}billing" in missing
    assert before.status == 503
    assert (await before.json())["error"] == "kafka_unavailable"

    await ensure_topics(config, timeout_s=60)
    second = await relay_client_factory(config)
    for index, event in enumerate(TASKNATION_EVENT_TYPES):
        body = make_body(event, f"evt_{index}", leadID="L1")
        response = await second.post(PATH, data=body, headers=signed_headers(body))
        assert response.status == 200, event

    present = await wait_for_log(caplog, "topics that the relay writes to exist")
    assert present == "all 11 topics that the relay writes to exist"
    topics = [f"{p}{event}" for event in TASKNATION_EVENT_TYPES]
    records = await consume(strict_broker.bootstrap, [*topics, f"{p}billing"], count=9)
    assert sorted(record.topic for record in records) == sorted([*topics, f"{p}billing"])


def parse_table(output: str) -> dict[str, dict[str, str]]:
    """Return the check-config fields of each event type of the first source."""
    table: dict[str, dict[str, str]] = {}
    event = ""
    for line in output.splitlines():
        if not line and table:
            break
        if line.startswith("    "):
            name, _, value = line.strip().partition(":")
            table[event][name] = value.strip()
        elif line.startswith("  ") and not line.startswith("  allowed"):
            event = line.strip()
            if event in table:
                break
            table[event] = {}
    return table


def test_check_config_prints_every_event(capsys, monkeypatch):
    monkeypatch.setenv("TASKNATION_WEBHOOK_SECRET", "current")
    monkeypatch.setenv("TASKNATION_WEBHOOK_SECRET_PREVIOUS", "previous")

    status = main(["check-config", "--config", str(EXAMPLE)])

    output = capsys.readouterr().out
    table = parse_table(output)
    assert status == 0
    assert output.startswith(f"{EXAMPLE}: valid\n")
    assert "2 secret(s)" in output
    assert list(table) == list(TASKNATION_EVENT_TYPES)
    for event, fields in table.items():
        if event != "payment.received":
            assert fields["topics"] == f"tasknation.{event}", event
        assert fields["key"] == "data.leadID, then data.businessID, then id", event
        assert fields["headers"] == (
            "ce_specversion ce_id ce_source ce_type ce_time content-type "
            "relay_source relay_received_at"
        ), event
    assert table["payment.received"]["topics"] == "tasknation.payment.received, billing.payments"
    assert table["payment.received"]["route"] == "2 (payment.received)"
    assert "dead-letter topic: tasknation.deadletter" in output


def test_check_config_shows_drops_and_modes(capsys, tmp_path):
    document = {
        "kafka": {"bootstrap_servers": "127.0.0.1:9092"},
        "routing": {
            "routes": [
                {"events": "review.*", "topics": ["reviews"], "content_mode": "structured"},
                {"events": "booking.cancelled", "drop": True},
                {"events": "booking.*", "topics": ["bookings"], "key_paths": []},
                {"events": "invoice.*", "topics": ["invoices"]},
            ]
        },
        "sources": [
            {
                "name": "tasknation",
                "path": PATH,
                "secrets": ["s"],
                "allowed_event_types": ["review.*", "booking.*", "message.*"],
            }
        ],
    }
    config = tmp_path / "relay.yaml"
    config.write_text(yaml.safe_dump(document))

    status = main(["check-config", "--config", str(config)])

    output = capsys.readouterr().out
    table = parse_table(output)
    assert status == 0
    assert "  lead.created\n    not allowed by the source: gets 200, not published\n" in output
    assert table["review.created"]["headers"] == "content-type relay_source relay_received_at"
    assert "structured content mode" in table["review.created"]["value"]
    assert table["booking.cancelled"]["route"] == "2 (booking.cancelled)"
    assert "    dropped by the route: gets 200, not published\n" in output
    assert table["booking.confirmed"]["key"] == "none"
    assert table["message.received"]["route"] == "none matches, so the unrouted topic"
    assert table["message.received"]["topics"] == "tasknation.unrouted"
    assert "note: route 4 (invoice.*) matches none of routing.event_types" in output


def test_check_config_error_exits_2(tmp_path):
    config = tmp_path / "relay.yaml"
    config.write_text(
        "kafka: {bootstrap_servers: 'b:9092'}\n"
        "routing:\n"
        "  routes:\n"
        "    - events: 'lead.*'\n"
        "      topics: ['leads/{event}']\n"
        "sources: [{name: tn, path: /w, secrets: [s]}]\n"
    )

    result = run_relay("check-config", "--config", str(config))

    assert result.returncode == 2
    assert result.stdout == ""
    assert f"{config}: invalid configuration:" in result.stderr
    assert "routing.routes[0].topics[0]: invalid topic 'leads/{event}'" in result.stderr
