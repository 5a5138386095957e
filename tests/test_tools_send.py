"""``relay send`` against a relay on loopback and the real broker, and against stub servers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from relay.cli import main
from relay.signature import sign
from relay.tools.payloads import EVENT_TYPES
from tests.conftest import TEST_SECRET, make_config
from tests.kafka_broker import free_port
from tests.kafka_records import consume, count_records
from tests.test_webhook_kafka import DOC_SAMPLE, PATH

REPO = Path(__file__).resolve().parent.parent
SECRET_ENV = "TASKNATION_WEBHOOK_SECRET"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture(autouse=True)
def _no_config_and_secret(monkeypatch, tmp_path):
    # No config/relay.yaml exists in the working directory, so a command that read one would fail.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(SECRET_ENV, TEST_SECRET)


@pytest.fixture
async def relay_url(kafka_bootstrap, topic_prefix, relay_client_factory) -> str:
    client = await relay_client_factory(make_config(kafka_bootstrap, topic_prefix))
    return str(client.make_url(PATH))


@pytest.fixture
async def stub_server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Return a factory that serves one handler on loopback and returns its URL."""
    servers: list[TestServer] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_post(PATH, handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url(PATH))

    yield start
    for server in servers:
        await server.close()


async def run_send(*arguments: str) -> int:
    # The command runs its own event loop, so it runs in a thread beside the test's loop.
    return await asyncio.to_thread(main, ["send", *arguments])


def now_timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fresh_body(event: str, **data: Any) -> bytes:
    """Return an event body with a unique id and the current time.

    Fixed ids and old timestamps would make the bodies look like duplicates
    or replays to a relay that drops those.
    """
    document = {
        "id": f"evt_{uuid.uuid4().hex}",
        "event": event,
        "timestamp": now_timestamp(),
        "data": data,
    }
    return json.dumps(document, separators=(",", ":")).encode()


def fresh_doc_sample() -> tuple[bytes, str]:
    """Return the documented sample body with a unique id and the current time, and that id."""
    event_id = f"evt_{uuid.uuid4().hex[:12]}"
    body = DOC_SAMPLE.replace(b'"evt_abc123"', f'"{event_id}"'.encode())
    return body.replace(b"2026-02-15T10:30:00Z", now_timestamp().encode()), event_id


def dry_run_requests(output: str) -> list[tuple[str, bytes]]:
    """Return (signature, body) for each request printed by ``--dry-run``."""
    found = re.findall(r"X-TaskNation-Signature: ([0-9a-f]+)\n\n(.*)\n\n", output)
    return [(signature, body.encode()) for signature, body in found]


async def test_send_all_publishes_eight_events(kafka_bootstrap, topic_prefix, relay_url, capsys):
    status = await run_send("--all", "--url", relay_url)

    output = capsys.readouterr().out
    assert status == 0
    for event in EVENT_TYPES:
        assert re.search(rf"^200 {re.escape(event)} evt_[0-9a-f]{{16}} \d+ ms ", output, re.M)
    assert "sent 8 in" in output
    for event in EVENT_TYPES:
        records = await consume(kafka_bootstrap, [f"{topic_prefix}{event}"], count=1)
        assert len(records) == 1
        document = json.loads(records[0].value)
        assert document["event"] == event
        assert records[0].key == document["data"]["leadID"].encode()


async def test_send_overrides_reach_kafka(kafka_bootstrap, topic_prefix, relay_url, capsys):
    status = await run_send(
        "lead.created",
        "--url",
        relay_url,
        "--set",
        "data.request.category=Plumbing",
        "--set",
        "data.rating=4",
        "--set",
        'data.customer={"name":"Ann"}',
        "--set",
        "id=evt_fixed_1",
    )

    assert status == 0
    records = await consume(kafka_bootstrap, [f"{topic_prefix}lead.created"], count=1)
    document = json.loads(records[0].value)
    assert document["id"] == "evt_fixed_1"
    assert document["data"]["request"]["category"] == "Plumbing"
    assert document["data"]["rating"] == 4
    assert document["data"]["customer"] == {"name": "Ann"}
    assert "200 lead.created evt_fixed_1" in capsys.readouterr().out


async def test_unset_id_gets_dead_lettered(kafka_bootstrap, topic_prefix, relay_url, capsys):
    status = await run_send("payment.received", "--url", relay_url, "--unset", "id")

    assert status == 0
    assert '"status":"dead_lettered"' in capsys.readouterr().out
    records = await consume(kafka_bootstrap, [f"{topic_prefix}deadletter"], count=1)
    assert b'"id"' not in records[0].value


async def test_replay_sends_bytes_unchanged(kafka_bootstrap, topic_prefix, relay_url, tmp_path):
    body = (
        b'{ "id" : "evt_replay_1",\r\n  "event":"payment.received",'
        b'"timestamp":"' + now_timestamp().encode() + b'",'
        b'"data":{"amountCents":123456789012345678901234567890, "leadID":"L1",'
        b' "note":"caf\xc3\xa9"}}\n'
    )
    capture = tmp_path / "capture.body"
    capture.write_bytes(body)

    status = await run_send("--replay", str(capture), "--url", relay_url)

    assert status == 0
    records = await consume(kafka_bootstrap, [f"{topic_prefix}payment.received"], count=1)
    assert records[0].value == body


async def test_replay_with_captured_signature(
    kafka_bootstrap, topic_prefix, relay_url, tmp_path, monkeypatch, capsys
):
    body = fresh_body("review.created", leadID="L3")
    event_id = json.loads(body)["id"]
    capture = tmp_path / "capture.body"
    capture.write_bytes(body)
    monkeypatch.delenv(SECRET_ENV)
    captured_signature = sign(body, TEST_SECRET.encode())

    status = await run_send(
        "--replay", str(capture), "--signature", captured_signature, "--url", relay_url
    )

    assert status == 0
    assert f"200 review.created {event_id}" in capsys.readouterr().out
    records = await consume(kafka_bootstrap, [f"{topic_prefix}review.created"], count=1)
    assert records[0].value == body


async def test_file_payload_keeps_its_id(kafka_bootstrap, topic_prefix, relay_url, tmp_path):
    payload = tmp_path / "payload.json"
    payload.write_text(
        json.dumps({"id": "evt_from_file", "event": "lead.updated", "data": {"leadID": "L7"}})
    )

    status = await run_send(
        "--file", str(payload), "--set", "data.status=hired", "--url", relay_url
    )

    assert status == 0
    records = await consume(kafka_bootstrap, [f"{topic_prefix}lead.updated"], count=1)
    document = json.loads(records[0].value)
    assert document["id"] == "evt_from_file"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", document["timestamp"])
    assert document["data"] == {"leadID": "L7", "status": "hired"}


async def test_repeat_publishes_every_delivery(kafka_bootstrap, topic_prefix, relay_url, capsys):
    status = await run_send(
        "--all", "--repeat", "5", "--concurrency", "4", "--quiet", "--url", relay_url
    )

    output = capsys.readouterr().out
    assert status == 0
    assert "sent 40 in" in output
    assert "40 got 2xx, 0 another status, 0 no response" in output
    assert "status: 200 x40" in output
    assert "evt_" not in output
    topics = [f"{topic_prefix}{event}" for event in EVENT_TYPES]
    assert await count_records(kafka_bootstrap, topics) == 40


async def test_wrong_secret_exits_1(relay_url, monkeypatch, capsys):
    monkeypatch.setenv(SECRET_ENV, "not-the-relay-secret")

    status = await run_send("booking.confirmed", "--url", relay_url)

    output = capsys.readouterr().out
    assert status == 1
    assert output.startswith("401 booking.confirmed evt_")
    assert '"error":"signature_mismatch"' in output


async def test_unreachable_relay_exits_3(capsys):
    url = f"http://127.0.0.1:{free_port()}{PATH}"

    status = await run_send("lead.created", "--url", url)

    output = capsys.readouterr().out
    assert status == 3
    assert output.startswith("error lead.created evt_")
    assert f"cannot connect to {url}" in output


async def test_slow_relay_times_out(stub_server, capsys):
    release = asyncio.Event()

    async def never_answers(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    url = await stub_server(never_answers)
    try:
        status = await run_send("lead.created", "--url", url, "--timeout-s", "0.5")
    finally:
        release.set()

    assert status == 3
    assert "timed out: no response within 0.5 s" in capsys.readouterr().out


async def test_interrupted_send_exits_130(stub_server, monkeypatch):
    arrived = asyncio.Event()
    release = asyncio.Event()

    async def hold(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response()

    url = await stub_server(hold)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay", "send", "lead.created", "--repeat", "100", "--url", url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    try:
        await asyncio.wait_for(arrived.wait(), timeout=60)
        process.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        release.set()
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 130
    assert b"Traceback" not in stderr


async def test_concurrency_keeps_requests_in_flight(stub_server, capsys):
    in_flight = 0
    peak = 0
    all_arrived = asyncio.Event()

    async def gather_four(request: web.Request) -> web.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == 4:
            all_arrived.set()
        # Each request waits until four are in flight at once, which a sender with
        # fewer connections never reaches, so the test fails by timeout then.
        await asyncio.wait_for(all_arrived.wait(), timeout=30)
        in_flight -= 1
        return web.json_response({"status": "published"})

    url = await stub_server(gather_four)
    status = await run_send("lead.created", "--repeat", "8", "--concurrency", "4", "--url", url)

    assert status == 0
    assert peak == 4
    assert "status: 200 x8" in capsys.readouterr().out


async def test_rate_spaces_request_starts(stub_server, capsys):
    arrivals: list[float] = []

    async def record_arrival(request: web.Request) -> web.Response:
        arrivals.append(asyncio.get_running_loop().time())
        return web.json_response({"status": "published"})

    url = await stub_server(record_arrival)
    status = await run_send(
        "lead.created", "--repeat", "6", "--concurrency", "3", "--rate", "10", "--url", url
    )

    assert status == 0
    assert len(arrivals) == 6
    # At 10 requests per second the sixth starts at least 0.5 s after the first; a
    # loaded machine only makes the gap longer.
    assert arrivals[-1] - arrivals[0] >= 0.45


async def test_signature_header_name_configurable(stub_server, capsys):
    seen: list[dict[str, Any]] = []

    async def capture(request: web.Request) -> web.Response:
        seen.append({"headers": dict(request.headers), "body": await request.read()})
        return web.json_response({"status": "published"})

    url = await stub_server(capture)
    status = await run_send("lead.expired", "--signature-header", "X-Signature", "--url", url)

    assert status == 0
    headers = seen[0]["headers"]
    assert headers["X-Signature"] == sign(seen[0]["body"], TEST_SECRET.encode())
    assert headers["Content-Type"] == "application/json"
    assert "X-TaskNation-Signature" not in headers


def test_dry_run_signs_with_secret_file(tmp_path, monkeypatch, capsys):
    secret_file = tmp_path / "secret"
    secret_file.write_text("file-secret\n")
    monkeypatch.delenv(SECRET_ENV)

    status = main(["send", "--all", "--dry-run", "--secret-file", str(secret_file)])

    output = capsys.readouterr().out
    requests = dry_run_requests(output)
    assert status == 0
    assert len(requests) == len(EVENT_TYPES)
    for signature, body in requests:
        assert signature == sign(body, b"file-secret")
    assert output.startswith("POST http://127.0.0.1:8080/webhooks/tasknation\n")


def test_dry_run_output_passes_verify(monkeypatch, capsys):
    assert main(["send", "message.received", "--dry-run"]) == 0
    [(signature, body)] = dry_run_requests(capsys.readouterr().out)
    body_file = "body.json"
    with open(body_file, "wb") as file:
        file.write(body)

    status = main(["verify", "--signature", signature, "--body", body_file])

    assert status == 0
    assert "envelope: ok: event message.received" in capsys.readouterr().out


def test_missing_secret_exits_2(monkeypatch, capsys):
    monkeypatch.delenv(SECRET_ENV)

    status = main(["send", "lead.created", "--url", f"http://127.0.0.1:{free_port()}{PATH}"])

    captured = capsys.readouterr()
    assert status == 2
    assert f"environment variable {SECRET_ENV} is not set or empty" in captured.err
    assert captured.out == ""


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "give exactly one of EVENT, --all, --file FILE or --replay FILE"),
        (["lead.created", "--all"], "give exactly one of EVENT"),
        (["lead.deleted"], "unknown event type 'lead.deleted'"),
        (["--replay", "x.body", "--set", "data.a=1"], "--set and --unset do not apply"),
        (["lead.created", "--set", "data.leadID.x=1"], "data.leadID is not an object or array"),
        (["lead.created", "--set", "rating"], "expected PATH=VALUE"),
        (["lead.created", "--unset", "data.nothing"], "--unset: data.nothing does not exist"),
        (["lead.created", "--url", "127.0.0.1:8080"], "expected an absolute http:// or https://"),
        (["lead.created", "--concurrency", "1001"], "the maximum is 1000"),
        (["--file", "missing.json"], "--file: cannot read missing.json"),
        (["--replay", "missing.body"], "--replay: cannot read missing.body"),
    ],
)
def test_invalid_arguments_exit_2(capsys, arguments, message):
    status = main(["send", *arguments, "--dry-run"])

    captured = capsys.readouterr()
    assert status == 2
    assert message in captured.err
    assert captured.out == ""


def test_file_must_hold_object(tmp_path, capsys):
    payload = tmp_path / "payload.json"
    payload.write_text("[1, 2]")

    status = main(["send", "--file", str(payload), "--dry-run"])

    assert status == 2
    assert "must contain a JSON object, not list" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value"), [("--repeat", "0"), ("--rate", "0"), ("--timeout-s", "-1")]
)
def test_non_positive_numbers_rejected(capsys, option, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["send", "lead.created", option, value])

    assert exit_info.value.code == 2
    assert f"argument {option}: expected" in capsys.readouterr().err
