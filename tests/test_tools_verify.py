"""``relay verify``: each check, its message and its exit status, without a relay or Kafka."""

from __future__ import annotations

import io
import sys

import pytest

from relay.cli import main
from relay.signature import sign
from tests.conftest import TEST_SECRET
from tests.test_webhook_kafka import DOC_SAMPLE

SECRET_ENV = "TASKNATION_WEBHOOK_SECRET"


@pytest.fixture(autouse=True)
def _no_config_and_secret(monkeypatch, tmp_path):
    # No config/relay.yaml exists in the working directory, so a command that read one would fail.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(SECRET_ENV, TEST_SECRET)


def run_verify(monkeypatch, body: bytes, *arguments: str) -> int:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(body)))
    return main(["verify", *arguments])


def test_authentic_delivery_passes(monkeypatch, capsys):
    signature = sign(DOC_SAMPLE, TEST_SECRET.encode())

    status = run_verify(monkeypatch, DOC_SAMPLE, "--signature", signature)

    output = capsys.readouterr().out
    assert status == 0
    assert f"body: {len(DOC_SAMPLE)} bytes" in output
    assert "signature format: ok (1 candidate(s))" in output
    assert "signature: ok" in output
    assert "JSON: ok" in output
    assert "envelope: ok: event lead.created, id evt_abc123" in output
    assert "timestamp: 2026-02-15T10:30:00+00:00" in output
    assert "relay response: 200" in output


def test_prefixed_uppercase_signature_passes(monkeypatch, capsys):
    signature = "sha256=" + sign(DOC_SAMPLE, TEST_SECRET.encode()).upper()

    assert run_verify(monkeypatch, DOC_SAMPLE, "--signature", signature) == 0


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        ("", "signature format: invalid: the signature header is missing or empty"),
        ("abc123", "signature format: invalid: each signature must be 64 hex digits"),
        ("z" * 64, "signature format: invalid: each signature must be 64 hex digits"),
    ],
)
def test_malformed_signature_exits_3(monkeypatch, capsys, signature, message):
    status = run_verify(monkeypatch, DOC_SAMPLE, "--signature", signature)

    output = capsys.readouterr().out
    assert status == 3
    assert message in output
    assert "relay response: 401" in output
    assert "JSON" not in output


def test_wrong_secret_exits_4(monkeypatch, capsys):
    signature = sign(DOC_SAMPLE, b"another-secret")

    status = run_verify(monkeypatch, DOC_SAMPLE, "--signature", signature)

    output = capsys.readouterr().out
    assert status == 4
    assert "signature: mismatch" in output
    assert "relay response: 401 signature_mismatch" in output
    assert "ends with a newline" not in output


def test_added_newline_gets_hint(monkeypatch, capsys):
    signature = sign(DOC_SAMPLE, TEST_SECRET.encode())

    status = run_verify(monkeypatch, DOC_SAMPLE + b"\n", "--signature", signature)

    output = capsys.readouterr().out
    assert status == 4
    assert "hint: the body ends with a newline" in output


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "JSON: invalid: the body is empty"),
        (b"{not json", "JSON: invalid:"),
        (b'{"id": "\xff"}', "JSON: invalid:"),
    ],
)
def test_body_not_json_exits_5(monkeypatch, capsys, body, message):
    status = run_verify(monkeypatch, body, "--signature", sign(body, TEST_SECRET.encode()))

    output = capsys.readouterr().out
    assert status == 5
    assert message in output
    assert "relay response: 200 dead_lettered" in output


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1, 2]", "the body is not a JSON object"),
        (b'{"event": "lead.created"}', "'id' must be a non-empty string"),
        (
            b'{"id": "e1", "event": "lead.created", "timestamp": "yesterday", "data": {}}',
            "'timestamp' is not an RFC 3339 date-time",
        ),
        (
            b'{"id": "e1", "event": "lead.created", "timestamp": "2026-02-15T10:30:00Z"}',
            "'data' must be a JSON object",
        ),
    ],
)
def test_invalid_envelope_exits_6(monkeypatch, capsys, body, message):
    status = run_verify(monkeypatch, body, "--signature", sign(body, TEST_SECRET.encode()))

    output = capsys.readouterr().out
    assert status == 6
    assert "JSON: ok" in output
    assert f"envelope: invalid: {message}" in output
    assert "relay response: 200 dead_lettered (reason invalid_envelope)" in output


def test_body_read_from_file(monkeypatch, capsys, tmp_path):
    path = tmp_path / "body.json"
    path.write_bytes(DOC_SAMPLE)
    signature = sign(DOC_SAMPLE, TEST_SECRET.encode())

    status = run_verify(monkeypatch, b"ignored", "--signature", signature, "--body", str(path))

    assert status == 0
    assert f"body: {len(DOC_SAMPLE)} bytes" in capsys.readouterr().out


def test_secret_read_from_file(monkeypatch, capsys, tmp_path):
    path = tmp_path / "secret"
    path.write_text("file-secret\n")
    monkeypatch.delenv(SECRET_ENV)
    signature = sign(DOC_SAMPLE, b"file-secret")

    status = run_verify(
        monkeypatch, DOC_SAMPLE, "--signature", signature, "--secret-file", str(path)
    )

    assert status == 0


def test_missing_secret_exits_2(monkeypatch, capsys):
    monkeypatch.delenv(SECRET_ENV)

    status = run_verify(monkeypatch, DOC_SAMPLE, "--signature", "0" * 64)

    error = capsys.readouterr().err
    assert status == 2
    assert f"environment variable {SECRET_ENV} is not set or empty" in error


def test_unreadable_body_exits_2(monkeypatch, capsys, tmp_path):
    status = run_verify(
        monkeypatch, b"", "--signature", "0" * 64, "--body", str(tmp_path / "missing.json")
    )

    assert status == 2
    assert "--body: cannot read" in capsys.readouterr().err


def test_secret_never_printed(monkeypatch, capsys):
    run_verify(monkeypatch, DOC_SAMPLE, "--signature", sign(DOC_SAMPLE, b"other"))

    captured = capsys.readouterr()
    assert TEST_SECRET not in captured.out
    assert TEST_SECRET not in captured.err
