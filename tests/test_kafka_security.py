"""TLS, client certificates and SASL against a real broker with secured listeners.

One broker serves the whole module: it is never stopped by a test, and each
test uses its own topic prefix.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from relay.config import RelayConfig
from relay.kafka_security import kafka_client_kwargs
from tests.conftest import make_config
from tests.kafka_broker import BrokerSecurity, KafkaBroker
from tests.kafka_tls import TestPki, make_test_pki
from tests.test_webhook_kafka import PATH, event_body, signed_headers

USER = "relay"
PASSWORD = "scram-password-of-relay"
WRONG_PASSWORD = "not-the-password-of-relay"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory, pki: TestPki) -> Iterator[KafkaBroker]:
    security = BrokerSecurity(
        keystore=pki.broker_keystore, truststore=pki.ca_file, users={USER: PASSWORD}
    )
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"), heap="256m", security=security)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop(timeout_s=10)


def sasl_kafka(bootstrap: str, ca_file: Path, mechanism: str, password: str) -> dict[str, Any]:
    return {
        "bootstrap_servers": bootstrap,
        "linger_ms": 0,
        "security_protocol": "SASL_SSL",
        "ssl": {"ca_file": str(ca_file)},
        "sasl": {"mechanism": mechanism, "username": USER, "password": password},
    }


async def consume_secure(
    config: RelayConfig, topic: str, count: int
) -> list[ConsumerRecord[Any, Any]]:
    """Read ``count`` records from the start of ``topic`` with the relay's connection settings."""
    consumer = AIOKafkaConsumer(
        topic,
        **kafka_client_kwargs(config.kafka),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        metadata_max_age_ms=1000,
    )
    await consumer.start()
    records: list[ConsumerRecord[Any, Any]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len(records) < count and loop.time() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def wait_for_log(caplog: pytest.LogCaptureFixture, text: str, timeout_s: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if text in caplog.text:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"no log line contains {text!r} within {timeout_s} s:\n{caplog.text}")


SECURE_EVENT_ID = "evt_secure_1"


async def publish_one(client: Any, topic_event: str) -> Any:
    body = event_body(topic_event, event_id=SECURE_EVENT_ID, leadID="L1")
    return await client.post(PATH, data=body, headers=signed_headers(body))


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
async def test_sasl_ssl_publishes_end_to_end(
    secure_broker, pki, topic_prefix, relay_client_factory, mechanism
):
    kafka = sasl_kafka(secure_broker.sasl_ssl_bootstrap, pki.ca_file, mechanism, PASSWORD)
    config = make_config(secure_broker.sasl_ssl_bootstrap, topic_prefix, kafka=kafka)
    client = await relay_client_factory(config)

    response = await publish_one(client, "lead.created")

    assert response.status == 200
    assert (await response.json())["status"] == "published"
    records = await consume_secure(config, f"{topic_prefix}lead.created", count=1)
    expected = event_body("lead.created", event_id=SECURE_EVENT_ID, leadID="L1")
    assert [record.value for record in records] == [expected]


async def test_client_certificate_publishes(secure_broker, pki, topic_prefix, relay_client_factory):
    kafka = {
        "bootstrap_servers": secure_broker.ssl_bootstrap,
        "linger_ms": 0,
        "security_protocol": "SSL",
        "ssl": {
            "ca_file": str(pki.ca_file),
            "cert_file": str(pki.client_cert_file),
            "key_file": str(pki.client_key_file),
            "key_password": pki.client_key_password,
        },
    }
    config = make_config(secure_broker.ssl_bootstrap, topic_prefix, kafka=kafka)
    client = await relay_client_factory(config)

    response = await publish_one(client, "booking.confirmed")

    assert response.status == 200
    records = await consume_secure(config, f"{topic_prefix}booking.confirmed", count=1)
    assert len(records) == 1


async def test_wrong_password_logged_not_ready(
    secure_broker, pki, topic_prefix, relay_client_factory, caplog
):
    caplog.set_level(logging.DEBUG)
    kafka = sasl_kafka(
        secure_broker.sasl_ssl_bootstrap, pki.ca_file, "SCRAM-SHA-256", WRONG_PASSWORD
    )
    config = make_config(secure_broker.sasl_ssl_bootstrap, topic_prefix, kafka=kafka)
    client = await relay_client_factory(config, wait_ready=False)

    await wait_for_log(caplog, "cannot connect to Kafka")
    readiness = await client.get("/readyz")
    response = await publish_one(client, "lead.created")

    assert "Authentication failed during authentication due to invalid credentials" in caplog.text
    assert readiness.status == 503
    assert response.status == 503
    assert response.headers["Retry-After"] == str(config.server.retry_after_s)
    assert WRONG_PASSWORD not in caplog.text
    assert WRONG_PASSWORD not in await response.text()


async def test_untrusted_certificate_logged_not_ready(
    secure_broker, pki, topic_prefix, relay_client_factory, caplog
):
    kafka = sasl_kafka(
        secure_broker.sasl_ssl_bootstrap, pki.untrusted_ca_file, "SCRAM-SHA-256", PASSWORD
    )
    config = make_config(secure_broker.sasl_ssl_bootstrap, topic_prefix, kafka=kafka)
    client = await relay_client_factory(config, wait_ready=False)

    await wait_for_log(caplog, "cannot connect to Kafka")
    readiness = await client.get("/readyz")
    response = await publish_one(client, "lead.created")

    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
    assert readiness.status == 503
    assert response.status == 503


async def test_hostname_mismatch_logged_not_ready(
    secure_broker, pki, topic_prefix, relay_client_factory, caplog
):
    # The broker certificate names 127.0.0.1 only, so "localhost" does not match it.
    bootstrap = f"localhost:{secure_broker.sasl_ssl_port}"
    kafka = sasl_kafka(bootstrap, pki.ca_file, "SCRAM-SHA-256", PASSWORD)
    config = make_config(bootstrap, topic_prefix, kafka=kafka)
    client = await relay_client_factory(config, wait_ready=False)

    await wait_for_log(caplog, "cannot connect to Kafka")
    readiness = await client.get("/readyz")

    assert "Hostname mismatch" in caplog.text
    assert readiness.status == 503


async def test_hostname_check_disabled_connects(
    secure_broker, pki, topic_prefix, relay_client_factory
):
    bootstrap = f"localhost:{secure_broker.sasl_ssl_port}"
    kafka = sasl_kafka(bootstrap, pki.ca_file, "SCRAM-SHA-256", PASSWORD)
    kafka["ssl"]["check_hostname"] = False
    config = make_config(bootstrap, topic_prefix, kafka=kafka)
    client = await relay_client_factory(config)

    response = await publish_one(client, "review.created")

    assert response.status == 200
