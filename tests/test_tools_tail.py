"""``relay tail`` on the real broker, fed by a relay on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from relay.cli import main
from relay.signature import sign
from tests.conftest import TEST_SECRET, make_config
from tests.kafka_broker import free_port
from tests.test_tools_send import fresh_body, fresh_doc_sample, now_timestamp
from tests.test_webhook_kafka import PATH, signed_headers

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 90.0


@pytest.fixture(autouse=True)
def _no_config(monkeypatch, tmp_path):
    # No config/relay.yaml exists in the working directory, so a command that read one would fail.
    monkeypatch.chdir(tmp_path)


@pytest.fixture
async def relay_client(kafka_bootstrap, topic_prefix, relay_client_factory):
    return await relay_client_factory(make_config(kafka_bootstrap, topic_prefix))


async def post(client, body: bytes) -> None:
    response = await client.post(PATH, data=body, headers=signed_headers(body))
    assert response.status == 200


async def run_tail(*arguments: str) -> int:
    # The command runs its own event loop, so it runs in a thread beside the test's loop.
    return await asyncio.to_thread(main, ["tail", *arguments])


async def start_tail_process(*arguments: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay", "tail", *arguments,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


async def wait_for_line(stream: asyncio.StreamReader, text: str) -> str:
    """Return the first line of ``stream`` that contains ``text``."""
    async with asyncio.timeout(READY_TIMEOUT_S):
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(f"the stream ended before a line with {text!r}")
            if text in line:
                return line


async def test_tail_prints_records_from_beginning(
    kafka_bootstrap, topic_prefix, relay_client, tmp_path, capsys
):
    body, event_id = fresh_doc_sample()
    await post(relay_client, body)
    config = tmp_path / "relay.yaml"
    document = {
        "kafka": {"bootstrap_servers": kafka_bootstrap},
        "routing": {"topic_prefix": topic_prefix},
        "sources": [
            {"name": "tasknation", "path": "/webhooks/tasknation", "secrets": [TEST_SECRET]}
        ],
    }
    config.write_text(yaml.safe_dump(document))

    status = await run_tail(
        "--config", str(config), "--from-beginning", "--max-records", "1", "--timeout-s", "60"
    )

    captured = capsys.readouterr()
    output = captured.out
    assert status == 0
    assert f"--- {topic_prefix}lead.created partition=0 offset=0 timestamp=20" in output
    assert f"event=lead.created id={event_id} key=299614694480093245" in output
    assert "ce_type=lead.created" in output
    assert f"ce_id={event_id}" in output
    assert "relay_source=tasknation" in output
    assert '\n      "category": "Interior Painting",\n' in output
    assert f"reading topics {topic_prefix}* from the beginning" in captured.err


async def test_tail_json_is_one_line(kafka_bootstrap, topic_prefix, relay_client, capsys):
    body = (
        b'{"id":"evt_wide_1","event":"payment.received","timestamp":"'
        + now_timestamp().encode()
        + b'",'
        b'"data":{"leadID":"L5","amountCents":123456789012345678901234567890}}'
    )
    await post(relay_client, body)

    status = await run_tail(
        "--bootstrap-servers", kafka_bootstrap, "--topic-prefix", topic_prefix,
        "--from-beginning", "--format", "json", "--max-records", "1", "--timeout-s", "60",
    )  # fmt: skip

    lines = capsys.readouterr().out.splitlines()
    assert status == 0
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["topic"] == f"{topic_prefix}payment.received"
    assert record["partition"] == 0
    assert record["offset"] == 0
    assert record["key"] == "L5"
    assert record["event"] == "payment.received"
    assert record["id"] == "evt_wide_1"
    assert record["headers"]["ce_specversion"] == "1.0"
    assert record["value"]["data"]["amountCents"] == 123456789012345678901234567890
    assert record["timestamp"].endswith("Z")


async def test_dead_letter_value_printed_as_text(
    kafka_bootstrap, topic_prefix, relay_client, capsys
):
    await post(relay_client, b"not json at all")

    status = await run_tail(
        f"{topic_prefix}deadletter", "--bootstrap-servers", kafka_bootstrap,
        "--from-beginning", "--format", "json", "--max-records", "1", "--timeout-s", "60",
    )  # fmt: skip

    record = json.loads(capsys.readouterr().out)
    assert status == 0
    assert record["value_text"] == "not json at all"
    assert "value" not in record
    assert record["key"] is None
    assert record["event"] is None
    assert record["headers"]["relay_dead_letter_reason"] == "invalid_json"


async def test_events_glob_filters_topics(kafka_bootstrap, topic_prefix, relay_client, capsys):
    await post(relay_client, fresh_body("payment.received", leadID="P1"))
    await post(relay_client, fresh_body("lead.created", leadID="L1"))
    await post(relay_client, fresh_body("lead.updated", leadID="L2"))

    status = await run_tail(
        "--bootstrap-servers", kafka_bootstrap, "--topic-prefix", topic_prefix,
        "--events", "lead.*", "--from-beginning", "--format", "json",
        "--max-records", "2", "--timeout-s", "60",
    )  # fmt: skip

    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 0
    assert sorted(record["event"] for record in records) == ["lead.created", "lead.updated"]


async def test_tail_from_now_skips_old_records(kafka_bootstrap, topic_prefix, relay_client):
    await post(relay_client, fresh_body("lead.created", leadID="OLD"))
    process = await start_tail_process(
        "--bootstrap-servers", kafka_bootstrap, "--topic-prefix", topic_prefix,
        "--format", "json", "--max-records", "2", "--timeout-s", "120",
    )  # fmt: skip
    try:
        assert process.stderr is not None
        await wait_for_line(process.stderr, "from now")
        await post(relay_client, fresh_body("lead.created", leadID="NEW1"))
        # A topic created after the start is read from its first record.
        await post(relay_client, fresh_body("review.created", leadID="NEW2"))
        stdout, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    keys = sorted(json.loads(line)["key"] for line in stdout.decode().splitlines())
    assert process.returncode == 0
    assert keys == ["NEW1", "NEW2"]


async def test_new_topic_repeats_no_records(kafka_bootstrap, topic_prefix, relay_client):
    await post(relay_client, fresh_body("lead.created", leadID="A"))
    process = await start_tail_process(
        "--bootstrap-servers", kafka_bootstrap, "--topic-prefix", topic_prefix,
        "--from-beginning", "--format", "json", "--max-records", "3", "--timeout-s", "120",
    )  # fmt: skip
    try:
        assert process.stdout is not None
        await wait_for_line(process.stdout, '"key": "A"')
        # The first record on a new topic changes the set of matching topics.
        await post(relay_client, fresh_body("review.created", leadID="B"))
        await wait_for_line(process.stdout, '"key": "B"')
        await post(relay_client, fresh_body("lead.created", leadID="C"))
        stdout, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 0
    assert [json.loads(line)["key"] for line in stdout.decode().splitlines()] == ["C"]


async def test_tail_stops_on_sigint(kafka_bootstrap, topic_prefix):
    process = await start_tail_process(
        "--bootstrap-servers", kafka_bootstrap, "--topic-prefix", topic_prefix
    )
    try:
        assert process.stderr is not None
        await wait_for_line(process.stderr, "Ctrl-C stops")
        process.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 0
    assert b"Traceback" not in stderr


async def test_save_dir_replays_byte_for_byte(
    kafka_bootstrap, topic_prefix, relay_client, tmp_path, monkeypatch, capsys
):
    body, _ = fresh_doc_sample()
    await post(relay_client, body)
    save_dir = tmp_path / "captured"
    status = await run_tail(
        "--bootstrap-servers", kafka_bootstrap, "--topic-prefix", topic_prefix,
        "--from-beginning", "--max-records", "1", "--timeout-s", "60", "--save-dir", str(save_dir),
    )  # fmt: skip
    saved = save_dir / f"{topic_prefix}lead.created-0-0.body"
    assert status == 0
    assert saved.read_bytes() == body

    # The replay goes to a stand-in for the relay, because a relay that drops
    # duplicate event ids would not publish it a second time.
    received: list[tuple[bytes, str]] = []

    async def capture(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers["X-TaskNation-Signature"]))
        return web.json_response({"status": "published"})

    app = web.Application()
    app.router.add_post(PATH, capture)
    async with TestServer(app, host="127.0.0.1") as server:
        monkeypatch.setenv("TASKNATION_WEBHOOK_SECRET", TEST_SECRET)
        url = str(server.make_url(PATH))
        replay_status = await asyncio.to_thread(
            main, ["send", "--replay", str(saved), "--url", url]
        )

    assert replay_status == 0
    assert received == [(body, sign(body, TEST_SECRET.encode()))]


async def test_timeout_before_max_records_exits_1(kafka_bootstrap, topic_prefix, capsys):
    status = await run_tail(
        "--bootstrap-servers", kafka_bootstrap, "--topic-prefix", topic_prefix,
        "--max-records", "1", "--timeout-s", "1",
    )  # fmt: skip

    assert status == 1
    assert capsys.readouterr().out == ""


async def test_timeout_without_max_records_exits_0(kafka_bootstrap, topic_prefix):
    status = await run_tail(
        "--bootstrap-servers", kafka_bootstrap, "--topic-prefix", topic_prefix, "--timeout-s", "1"
    )

    assert status == 0


async def test_unreachable_kafka_exits_3(capsys):
    address = f"127.0.0.1:{free_port()}"

    status = await run_tail("--bootstrap-servers", address, "--timeout-s", "30")

    assert status == 3
    assert f"cannot connect to Kafka at {address}" in capsys.readouterr().err


def test_missing_config_suggests_bootstrap(capsys):
    status = main(["tail"])

    error = capsys.readouterr().err
    assert status == 2
    assert "config/relay.yaml: cannot read the configuration file" in error
    assert "pass --bootstrap-servers" in error


def test_topics_and_events_conflict(capsys):
    status = main(["tail", "t.lead.created", "--events", "lead.*", "--bootstrap-servers", "b:9092"])

    assert status == 2
    assert "give TOPIC names or --events GLOB, not both" in capsys.readouterr().err


def test_invalid_bootstrap_servers_exit_2(capsys):
    status = main(["tail", "--bootstrap-servers", "kafka:notaport"])

    assert status == 2
    assert "--bootstrap-servers 'kafka:notaport': expected host:port" in capsys.readouterr().err
