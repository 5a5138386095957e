"""``relay verify``: check a captured delivery offline, with the checks the relay applies."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from relay.envelope import Envelope, parse_envelope
from relay.errors import InvalidEnvelope, SignatureMalformed, SignatureMismatch, SignatureMissing
from relay.signature import parse_signature_header, verify_signature
from relay.tools.common import (
    DEFAULT_SECRET_ENV,
    EXIT_OK,
    ToolError,
    add_secret_arguments,
    read_secret,
    run_command,
)

EXIT_SIGNATURE_MALFORMED = 3
EXIT_SIGNATURE_MISMATCH = 4
EXIT_NOT_JSON = 5
EXIT_INVALID_ENVELOPE = 6

DESCRIPTION = """\
Check a captured TaskNation delivery without a relay or Kafka: the shape of
the signature header value, the HMAC-SHA256 of the body with the secret,
the body as JSON and the envelope fields (id, event, timestamp, data).
The checks run in that order and stop at the first failure, which is named
with the response the relay would send.

The body is read from standard input or --body FILE, byte for byte: a
newline added by an editor or `echo` changes the signature.
"""

EPILOG = """\
exit status:
  0  all checks passed: the relay accepts the event (200)
  2  invalid arguments, a missing secret or an unreadable file
  3  the signature value is missing or not 64 hex digits (the relay responds 401)
  4  the signature does not match the body with the secret (the relay responds 401)
  5  the body is empty or not JSON (the relay responds 200 and dead-letters it)
  6  an envelope field is missing or invalid (the relay responds 200 and dead-letters it)
"""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of the checks: printed lines and the exit status."""

    lines: list[str]
    exit_code: int


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "verify",
        help="check a captured delivery's signature and envelope offline",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--signature",
        required=True,
        metavar="HEX",
        help="the X-TaskNation-Signature header value as received",
    )
    add_secret_arguments(parser, DEFAULT_SECRET_ENV)
    parser.add_argument(
        "--body", type=Path, metavar="FILE", help="file with the body (default: standard input)"
    )
    parser.set_defaults(run_tool=run)


def run(args: argparse.Namespace) -> int:
    return run_command("verify", lambda: _run(args, sys.stdin.buffer, sys.stdout))


def _run(args: argparse.Namespace, stdin: BinaryIO, out: TextIO) -> int:
    secret = read_secret(args)
    body = _read_body(args.body, stdin)
    verdict = verify_delivery(body, args.signature, secret, datetime.now(UTC))
    for line in verdict.lines:
        out.write(line + "\n")
    return verdict.exit_code


def _read_body(path: Path | None, stdin: BinaryIO) -> bytes:
    if path is None:
        if stdin.isatty():
            print("relay verify: reading the body from standard input; end it with Ctrl-D",
                  file=sys.stderr)  # fmt: skip
        return stdin.read()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ToolError(f"--body: cannot read {path}: {exc.strerror}") from None


def verify_delivery(body: bytes, signature: str, secret: bytes, now: datetime) -> Verdict:
    """Run the relay's checks on one delivery and describe each result."""
    lines = [f"body: {len(body)} bytes"]
    try:
        candidates = parse_signature_header(signature)
    except (SignatureMissing, SignatureMalformed) as exc:
        lines += [f"signature format: invalid: {exc}", "relay response: 401 " + exc.reason]
        return Verdict(lines, EXIT_SIGNATURE_MALFORMED)
    lines.append(f"signature format: ok ({len(candidates)} candidate(s))")

    try:
        verify_signature(body, signature, [secret])
    except SignatureMismatch as exc:
        lines.append(f"signature: mismatch: {exc}")
        lines += _mismatch_hints(body)
        lines.append("relay response: 401 " + exc.reason)
        return Verdict(lines, EXIT_SIGNATURE_MISMATCH)
    lines.append("signature: ok, the HMAC-SHA256 of the body with the secret matches")

    try:
        envelope = parse_envelope(body)
    except InvalidEnvelope as exc:
        return _invalid_envelope_verdict(lines, exc)
    lines.append("JSON: ok")
    lines += _describe_envelope(envelope, now)
    return Verdict(lines, EXIT_OK)


def _mismatch_hints(body: bytes) -> list[str]:
    hints = []
    if body.endswith(b"\n"):
        hints.append(
            "hint: the body ends with a newline; if the capture added it, remove it "
            "(for example with printf '%s' instead of echo)"
        )
    if b"\r\n" in body:
        hints.append("hint: the body contains CRLF line ends; a copy may have converted them")
    hints.append(
        "hint: the signature covers the exact bytes sent; a body re-formatted or re-encoded "
        "after capture does not match"
    )
    return hints


def _invalid_envelope_verdict(lines: list[str], exc: InvalidEnvelope) -> Verdict:
    if exc.reason in ("empty_body", "invalid_json"):
        lines.append(f"JSON: invalid: {exc.detail}")
        exit_code = EXIT_NOT_JSON
    else:
        lines += ["JSON: ok", f"envelope: invalid: {exc.detail}"]
        exit_code = EXIT_INVALID_ENVELOPE
    lines.append(f"relay response: 200 dead_lettered (reason {exc.reason})")
    return Verdict(lines, exit_code)


def _describe_envelope(envelope: Envelope, now: datetime) -> list[str]:
    age_s = (now - envelope.timestamp).total_seconds()
    return [
        f"envelope: ok: event {envelope.event}, id {envelope.id}",
        f"timestamp: {envelope.timestamp.isoformat()} ({_describe_age(age_s)})",
        "relay response: 200, the delivery is authentic and a valid event",
    ]


def _describe_age(age_s: float) -> str:
    if age_s < 0:
        return f"{-age_s:.0f} s in the future"
    if age_s < 120:
        return f"{age_s:.0f} s ago"
    if age_s < 2 * 3600:
        return f"{age_s / 60:.0f} min ago"
    return f"{age_s / 3600:.1f} h ago"
