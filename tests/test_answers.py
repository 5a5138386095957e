"""Every status the webhook path returns, and when."""

from __future__ import annotations

import asyncio
import time

from tests.conftest import make_config
from tests.kafka_broker import KafkaBroker
from tests.kafka_records import consume, create_topics
from tests.test_webhook_kafka import PATH, event_body, signed_headers


async def test_missing_signature_gets_401(kafka_bootstrap, topic_prefix, relay_client_factory):
    client = await relay_client_factory(make_config(kafka_bootstrap, topic_prefix))

    response = await client.post(PATH, data=event_body())

    assert response.status == 401
    assert (await response.json())["error"] == "missing_signature"


async def test_malformed_signature_gets_401(kafka_bootstrap, topic_prefix, relay_client_factory):
    client = await relay_client_factory(make_config(kafka_bootstrap, topic_prefix))

    response = await client.post(
        PATH, data=event_body(), headers={"X-TaskNation-Signature": "not-hex"}
    )

    assert response.status == 401
    assert (await response.json())["error"] == "malformed_signature"


async def test_wrong_signature_gets_401_and_publishes_nothing(
    kafka_bootstrap, topic_prefix, relay_client_factory
):
    client = await relay_client_factory(make_config(kafka_bootstrap, topic_prefix))
    body = event_body("lead.created", leadID="L1")

    response = await client.post(PATH, data=body, headers=signed_headers(body, "wrong-secret"))

    assert response.status == 401
    assert (await response.json())["error"] == "signature_mismatch"
    records = await consume(kafka_bootstrap, [f"{topic_prefix}lead.created"], count=1, timeout_s=3)
    assert records == []


async def test_declared_oversize_body_gets_413(kafka_bootstrap, topic_prefix, relay_client_factory):
    config = make_config(kafka_bootstrap, topic_prefix)
    client = await relay_client_factory(config)
    body = b"x" * (config.server.max_body_bytes + 1)

    response = await client.post(PATH, data=body, headers=signed_headers(body))

    assert response.status == 413
    assert (await response.json())["error"] == "body_too_large"


async def test_chunked_oversize_body_gets_413(kafka_bootstrap, topic_prefix, relay_client_factory):
    config = make_config(kafka_bootstrap, topic_prefix)
    client = await relay_client_factory(config)
    chunk = b"x" * 8192
    count = config.server.max_body_bytes // len(chunk) + 2

    async def chunks():
        for _ in range(count):
            yield chunk

    response = await client.post(PATH, data=chunks(), headers={"X-TaskNation-Signature": "0" * 64})

    assert response.status == 413


async def test_body_at_limit_accepted(kafka_bootstrap, topic_prefix, relay_client_factory):
    config = make_config(kafka_bootstrap, topic_prefix)
    client = await relay_client_factory(config)
    body = event_body("lead.updated", leadID="L1")
    body = body[:-1] + b" " * (config.server.max_body_bytes - len(body)) + b"}"
    assert len(body) == config.server.max_body_bytes

    response = await client.post(PATH, data=body, headers=signed_headers(body))

    assert response.status == 200


async def test_unknown_path_gets_404(kafka_bootstrap, topic_prefix, relay_client_factory):
    client = await relay_client_factory(make_config(kafka_bootstrap, topic_prefix))
    body = event_body()

    response = await client.post("/webhooks/other", data=body, headers=signed_headers(body))

    assert response.status == 404


async def test_get_on_webhook_path_gets_405(kafka_bootstrap, topic_prefix, relay_client_factory):
    client = await relay_client_factory(make_config(kafka_bootstrap, topic_prefix))

    response = await client.get(PATH)

    assert response.status == 405


async def test_stopped_broker_gets_503_within_deadline(
    dedicated_broker: KafkaBroker, topic_prefix, relay_client_factory
):
    config = make_config(
        dedicated_broker.bootstrap, topic_prefix, server={"deadline_s": 2, "retry_after_s": 30}
    )
    # Creating the topic on the first send can take longer than the 2 s deadline.
    await create_topics(dedicated_broker.bootstrap, [f"{topic_prefix}lead.created"])
    client = await relay_client_factory(config)
    body = event_body("lead.created", leadID="L1")
    first = await client.post(PATH, data=body, headers=signed_headers(body))
    assert first.status == 200

    await asyncio.to_thread(dedicated_broker.stop)
    second = event_body("lead.created", leadID="L1")
    started = time.monotonic()
    response = await client.post(PATH, data=second, headers=signed_headers(second))
    elapsed = time.monotonic() - started

    assert response.status == 503
    assert response.headers["Retry-After"] == "30"
    assert (await response.json())["error"] == "kafka_unavailable"
    assert elapsed < 2 + 1.0


async def test_unreachable_broker_at_start_gets_503(
    topic_prefix, relay_client_factory, unused_tcp_port
):
    config = make_config(f"127.0.0.1:{unused_tcp_port}", topic_prefix, server={"deadline_s": 1})
    client = await relay_client_factory(config, wait_ready=False)
    body = event_body()

    response = await client.post(PATH, data=body, headers=signed_headers(body))
    ready = await client.get("/readyz")

    assert response.status == 503
    assert "Retry-After" in response.headers
    assert ready.status == 503
