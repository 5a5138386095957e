"""``relay subscribe`` against a stand-in for TaskNation's webhook API on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from relay.cli import main
from relay.tools.payloads import EVENT_TYPES
from tests.kafka_broker import free_port

TOKEN = "test-access-token"
SECRET = "registered-secret"
BUSINESS_ID = "468046965846925323"
PUBLIC_URL = "https://hooks.example.com"


@dataclass
class FakeApi:
    """Stand-in for TaskNation's ``POST /api/v2/webhooks``; the test sets the response status."""

    status: int = 201
    answer: dict[str, Any] = field(default_factory=lambda: {"id": "wh_123", "secret": SECRET})
    headers: dict[str, str] = field(default_factory=dict)
    hold: asyncio.Event | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    base_url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            {
                "path": request.path,
                "headers": dict(request.headers),
                "body": await request.json(),
            }
        )
        if self.hold is not None:
            await self.hold.wait()
        return web.json_response(self.answer, status=self.status, headers=self.headers)


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeApi]:
    api = FakeApi()
    app = web.Application()
    app.router.add_post("/api/v2/webhooks", api.handle)
    app.router.add_post("/elsewhere", api.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    api.base_url = str(server.make_url("/"))
    yield api
    if api.hold is not None:
        api.hold.set()
    await server.close()


@pytest.fixture
def config_file(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TASKNATION_ACCESS_TOKEN", TOKEN)
    monkeypatch.delenv("TASKNATION_API_URL", raising=False)
    return write_config(tmp_path / "relay.yaml")


def write_config(path: Path, **overrides: Any) -> Path:
    document: dict[str, Any] = {
        "kafka": {"bootstrap_servers": "127.0.0.1:9092"},
        "sources": [
            {"name": "tasknation", "path": "/webhooks/tasknation", "secrets": [SECRET, "old"]}
        ],
    }
    document.update(overrides)
    path.write_text(yaml.safe_dump(document))
    return path


def arguments(config: Path, api_url: str, *extra: str) -> list[str]:
    return [
        "subscribe", "--config", str(config), "--api-url", api_url,
        "--public-url", PUBLIC_URL, "--business-id", BUSINESS_ID, *extra,
    ]  # fmt: skip


async def run_subscribe(argv: list[str]) -> int:
    # The command runs its own event loop, so it runs in a thread beside the test's loop.
    return await asyncio.to_thread(main, argv)


async def test_subscribe_registers_routed_events(fake_api, config_file, capsys):
    status = await run_subscribe(arguments(config_file, fake_api.base_url))

    captured = capsys.readouterr()
    assert status == 0
    [request] = fake_api.requests
    assert request["path"] == "/api/v2/webhooks"
    assert request["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["body"] == {
        "url": f"{PUBLIC_URL}/webhooks/tasknation",
        "events": list(EVENT_TYPES),
        "businessID": BUSINESS_ID,
        "secret": SECRET,
    }
    assert f"registered {PUBLIC_URL}/webhooks/tasknation for business {BUSINESS_ID}" in captured.out
    assert "(HTTP 201)" in captured.out
    assert '"id": "wh_123"' in captured.out


async def test_echoed_secret_is_masked(fake_api, config_file, capsys):
    fake_api.answer = {"id": "wh_1", "secret": SECRET, "note": f"token {TOKEN}"}

    status = await run_subscribe(arguments(config_file, fake_api.base_url))

    captured = capsys.readouterr()
    assert status == 0
    assert '"secret": "***"' in captured.out
    assert SECRET not in captured.out + captured.err
    assert TOKEN not in captured.out + captured.err


async def test_secret_from_file_must_be_accepted(fake_api, config_file, tmp_path, capsys):
    secret_file = tmp_path / "secret"
    secret_file.write_text("old\n")

    status = await run_subscribe(
        arguments(config_file, fake_api.base_url, "--secret-file", str(secret_file))
    )

    assert status == 0
    assert fake_api.requests[0]["body"]["secret"] == "old"


async def test_unknown_secret_rejected_before_sending(fake_api, config_file, monkeypatch, capsys):
    monkeypatch.setenv("OTHER_SECRET", "not-configured")

    status = await run_subscribe(
        arguments(config_file, fake_api.base_url, "--secret-env", "OTHER_SECRET")
    )

    error = capsys.readouterr().err
    assert status == 2
    assert "the relay would reject every delivery" in error
    assert "not-configured" not in error
    assert fake_api.requests == []


@pytest.mark.parametrize(
    ("status", "exit_code", "message"),
    [
        (401, 4, "TaskNation rejected the access token (HTTP 401)"),
        (403, 1, "TaskNation rejected the registration (HTTP 403); fix the request"),
        (422, 1, "TaskNation rejected the registration (HTTP 422); fix the request"),
        (500, 3, "TaskNation failed to handle the registration (HTTP 500); retry later"),
        (503, 3, "TaskNation failed to handle the registration (HTTP 503); retry later"),
    ],
)
async def test_error_answers_map_to_exit_codes(
    fake_api, config_file, capsys, status, exit_code, message
):
    fake_api.status = status
    fake_api.answer = {"error": "invalid_url", "message": "url must be reachable"}

    result = await run_subscribe(arguments(config_file, fake_api.base_url))

    captured = capsys.readouterr()
    assert result == exit_code
    assert message in captured.err
    assert "url must be reachable" in captured.err
    assert "registered" not in captured.out


async def test_redirect_not_followed(fake_api, config_file, capsys):
    fake_api.status = 307
    fake_api.headers = {"Location": fake_api.base_url + "elsewhere"}

    status = await run_subscribe(arguments(config_file, fake_api.base_url))

    assert status == 1
    assert "responded with a redirect (HTTP 307)" in capsys.readouterr().err
    assert [request["path"] for request in fake_api.requests] == ["/api/v2/webhooks"]


async def test_slow_api_times_out(fake_api, config_file, capsys):
    fake_api.hold = asyncio.Event()

    status = await run_subscribe(arguments(config_file, fake_api.base_url, "--timeout-s", "0.5"))

    assert status == 3
    assert "timed out after 0.5 s" in capsys.readouterr().err


async def test_unreachable_api_exits_3(config_file, capsys):
    api_url = f"http://127.0.0.1:{free_port()}"

    status = await run_subscribe(arguments(config_file, api_url))

    error = capsys.readouterr().err
    assert status == 3
    assert f"cannot reach {api_url}/api/v2/webhooks" in error
    assert SECRET not in error


async def test_dry_run_sends_nothing(fake_api, config_file, capsys):
    status = await run_subscribe(arguments(config_file, fake_api.base_url, "--dry-run"))

    output = capsys.readouterr().out
    assert status == 0
    assert fake_api.requests == []
    assert output.startswith(f"POST {fake_api.base_url.rstrip('/')}/api/v2/webhooks\n")
    assert "Authorization: Bearer ***" in output
    assert '"secret": "***"' in output
    assert SECRET not in output
    assert TOKEN not in output
    assert json.loads(output.split("\n\n", 1)[1])["events"] == list(EVENT_TYPES)


async def test_api_url_from_environment(fake_api, config_file, monkeypatch):
    monkeypatch.setenv("TASKNATION_API_URL", fake_api.base_url)
    argv = arguments(config_file, "unused")
    del argv[3:5]

    status = await run_subscribe(argv)

    assert status == 0
    assert len(fake_api.requests) == 1


@pytest.mark.parametrize(
    ("api_url", "message"),
    [
        ("", "no TaskNation API URL; pass --api-url URL or set TASKNATION_API_URL"),
        ("api.tasknation.example", "expected an absolute https:// URL"),
        ("http://api.tasknation.example", "use https://, because the request carries"),
    ],
)
def test_invalid_api_url_exits_2(config_file, capsys, api_url, message):
    status = main(arguments(config_file, api_url))

    assert status == 2
    assert message in capsys.readouterr().err


def test_missing_token_exits_2(config_file, monkeypatch, capsys):
    monkeypatch.delenv("TASKNATION_ACCESS_TOKEN")

    status = main(arguments(config_file, "http://127.0.0.1:9", "--dry-run"))

    assert status == 2
    assert "environment variable TASKNATION_ACCESS_TOKEN is not set" in capsys.readouterr().err


def test_token_read_from_file(config_file, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TASKNATION_ACCESS_TOKEN")
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n")

    status = main(
        arguments(config_file, "http://127.0.0.1:9", "--dry-run", "--token-file", str(token_file))
    )

    assert status == 0
    assert "file-token" not in capsys.readouterr().out


def test_several_sources_need_source_option(config_file, tmp_path, capsys):
    sources = [
        {"name": "tasknation", "path": "/webhooks/tasknation", "secrets": [SECRET]},
        {"name": "staging", "path": "/webhooks/staging", "secrets": ["staging-secret"]},
    ]
    config = write_config(tmp_path / "two.yaml", sources=sources)

    without = main(arguments(config, "http://127.0.0.1:9", "--dry-run"))
    error = capsys.readouterr().err
    chosen = main(arguments(config, "http://127.0.0.1:9", "--dry-run", "--source", "staging"))
    output = capsys.readouterr().out

    assert without == 2
    assert "several sources; pass --source, one of ['tasknation', 'staging']" in error
    assert chosen == 0
    assert f'"url": "{PUBLIC_URL}/webhooks/staging"' in output


def test_nothing_routed_exits_2(config_file, tmp_path, capsys):
    config = write_config(
        tmp_path / "bad.yaml", routing={"routes": [{"events": "*", "drop": True}]}
    )

    status = main(arguments(config, "http://127.0.0.1:9", "--dry-run"))

    assert status == 2
    assert "the routing publishes no TaskNation event type" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--public-url", "hooks.example.com", "--public-url 'hooks.example.com': expected"),
        ("--public-url", "https://h.example.com/?a=1", "without query"),
        ("--business-id", " ", "--business-id must not be empty"),
    ],
)
def test_invalid_request_fields_exit_2(config_file, capsys, option, value, message):
    argv = arguments(config_file, "http://127.0.0.1:9", "--dry-run")
    argv[argv.index(option) + 1] = value

    status = main(argv)

    assert status == 2
    assert message in capsys.readouterr().err


def test_missing_config_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TASKNATION_ACCESS_TOKEN", TOKEN)

    status = main(
        ["subscribe", "--api-url", "http://127.0.0.1:9", "--public-url", PUBLIC_URL,
         "--business-id", BUSINESS_ID]
    )  # fmt: skip

    assert status == 2
    assert "config/relay.yaml: cannot read the configuration file" in capsys.readouterr().err
