"""``relay send``: post signed TaskNation deliveries to a relay, as TaskNation would."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import statistics
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from yarl import URL

from relay import __version__
from relay.signature import sign
from relay.tools.common import (
    DEFAULT_RELAY_URL,
    DEFAULT_SECRET_ENV,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    ToolError,
    add_secret_arguments,
    positive_float,
    positive_int,
    read_secret,
    run_async,
    run_command,
)
from relay.tools.payloads import (
    EVENT_TYPES,
    Document,
    Override,
    apply_overrides,
    complete_envelope,
    parse_override,
    parse_path,
    sample_payload,
)

MAX_DETAIL_CHARS = 300
MAX_CONCURRENCY = 1000

DESCRIPTION = """\
Build a TaskNation event, sign it as TaskNation does (lowercase hex
HMAC-SHA256 of the exact bytes sent) and POST it to a relay. Give one of
EVENT, --all, --file or --replay.

Each built delivery gets a new id (evt_...) and the current time as its
timestamp, unless the payload sets them (--file, --set id=...).
"""

EPILOG = f"""\
{textwrap.fill("event types: " + ", ".join(EVENT_TYPES), width=76)}

--set PATH=VALUE reads VALUE as JSON where it is valid JSON and as a string
otherwise: --set data.rating=4 sets a number, --set 'data.zip="95110"' a
string, --set 'data.customer={{"name":"Ann"}}' an object.

exit status:
  0  every response had a 2xx status (or --dry-run)
  1  at least one response had another status
  2  invalid arguments, a missing secret or an unreadable file
  3  at least one request got no response: the connection failed or timed out
  130  interrupted by Ctrl-C or SIGTERM before every delivery was sent
"""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One request to send: the body bytes and the signature header value."""

    event: str
    event_id: str
    body: bytes
    signature: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one delivery: the response status and body, or why none arrived."""

    delivery: Delivery
    status: int | None
    detail: str
    elapsed_s: float


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "send",
        help="send signed sample deliveries to a relay",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("event", nargs="?", metavar="EVENT", help="event type to send")
    parser.add_argument("--all", action="store_true", help="send one of each event type")
    parser.add_argument("--file", type=Path, metavar="FILE", help="send the JSON object in FILE")
    parser.add_argument(
        "--replay",
        type=Path,
        metavar="FILE",
        help="send the bytes of FILE unchanged, such as a captured delivery body",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="set a field, such as data.request.category=Plumbing; repeatable",
    )
    parser.add_argument(
        "--unset", action="append", default=[], metavar="PATH", help="remove a field; repeatable"
    )
    _add_request_arguments(parser)
    _add_load_arguments(parser)
    parser.set_defaults(run_tool=run)


def _add_request_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", default=DEFAULT_RELAY_URL, help=f"relay endpoint (default: {DEFAULT_RELAY_URL})"
    )
    add_secret_arguments(parser, DEFAULT_SECRET_ENV)
    parser.add_argument(
        "--signature",
        metavar="VALUE",
        help="send VALUE as the signature header instead of signing, such as a captured one",
    )
    parser.add_argument(
        "--signature-header",
        default="X-TaskNation-Signature",
        metavar="NAME",
        help="signature header name (default: X-TaskNation-Signature)",
    )
    parser.add_argument(
        "--timeout-s",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="time allowed for each request, from connecting to the end of the response "
        "(default: 10)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the requests instead of sending them"
    )


def _add_load_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repeat",
        type=positive_int,
        default=1,
        metavar="N",
        help="send each delivery N times (default: 1)",
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=1,
        metavar="N",
        help=f"requests in flight at once, at most {MAX_CONCURRENCY} (default: 1)",
    )
    parser.add_argument(
        "--rate",
        type=positive_float,
        metavar="PER_S",
        help="start at most this many requests per second (default: no limit)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print only the summary, not each response"
    )


def run(args: argparse.Namespace) -> int:
    return run_command("send", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    _check_arguments(args)
    signature = args.signature
    secret = b"" if signature is not None else read_secret(args)
    templates = _templates(args)

    def deliveries() -> Iterator[Delivery]:
        rng = random.Random()
        for template in itertools.chain.from_iterable(itertools.repeat(templates, args.repeat)):
            body = template(datetime.now(UTC), rng)
            yield _delivery(body, signature if signature is not None else sign(body, secret))

    if args.dry_run:
        for delivery in deliveries():
            _print_request(args, delivery, sys.stdout)
        return EXIT_OK
    return run_async(send(args, deliveries(), sys.stdout), stop_code=EXIT_INTERRUPTED)


def _check_arguments(args: argparse.Namespace) -> None:
    sources = [args.event is not None, args.all, args.file is not None, args.replay is not None]
    if sum(sources) != 1:
        raise ToolError("give exactly one of EVENT, --all, --file FILE or --replay FILE")
    if args.event is not None and args.event not in EVENT_TYPES:
        raise ToolError(
            f"unknown event type {args.event!r}; expected one of: {', '.join(EVENT_TYPES)}"
        )
    if args.replay is not None and (args.overrides or args.unset):
        raise ToolError("--replay sends the file unchanged, so --set and --unset do not apply")
    if args.concurrency > MAX_CONCURRENCY:
        raise ToolError(f"--concurrency {args.concurrency}: the maximum is {MAX_CONCURRENCY}")
    url = URL(args.url)
    if url.scheme not in ("http", "https") or not url.host:
        raise ToolError(f"--url {args.url!r}: expected an absolute http:// or https:// URL")


_Template = Callable[[datetime, random.Random], bytes]


def _templates(args: argparse.Namespace) -> list[_Template]:
    """Return one body builder per distinct delivery; each call builds a new body."""
    if args.replay is not None:
        body = _read_file(args.replay, "--replay")
        return [lambda now, rng: body]

    overrides = [parse_override(text) for text in args.overrides]
    overrides += [Override(path=parse_path(text, "--unset"), remove=True) for text in args.unset]
    if args.file is not None:
        document = _read_json_object(args.file)
        return [_document_template(document, overrides)]
    events = EVENT_TYPES if args.all else (args.event,)
    return [_sample_template(event, overrides) for event in events]


def _sample_template(event: str, overrides: list[Override]) -> _Template:
    def build(now: datetime, rng: random.Random) -> bytes:
        return _serialize(apply_overrides(sample_payload(event, now, rng), overrides))

    # Applying the overrides once now makes an invalid path fail before anything is sent.
    apply_overrides(sample_payload(event, datetime.now(UTC), random.Random()), overrides)
    return build


def _document_template(document: Document, overrides: list[Override]) -> _Template:
    def build(now: datetime, rng: random.Random) -> bytes:
        return _serialize(apply_overrides(complete_envelope(document, now, rng), overrides))

    # Applying the overrides once now makes an invalid path fail before anything is sent.
    apply_overrides(complete_envelope(document, datetime.now(UTC), random.Random()), overrides)
    return build


def _serialize(document: Document) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def _read_file(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ToolError(f"{option}: cannot read {path}: {exc.strerror}") from None


def _read_json_object(path: Path) -> Document:
    content = _read_file(path, "--file")
    try:
        document = json.loads(content)
    except ValueError as exc:
        raise ToolError(f"--file: {path} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ToolError(f"--file: {path} must contain a JSON object, not {type(document).__name__}")
    return document


def _delivery(body: bytes, signature: str) -> Delivery:
    """Describe ``body`` by its ``event`` and ``id`` fields, or ``-`` where they are missing."""
    event = event_id = "-"
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict):
        event = str(document.get("event", "-"))
        event_id = str(document.get("id", "-"))
    return Delivery(event=event, event_id=event_id, body=body, signature=signature)


def _print_request(args: argparse.Namespace, delivery: Delivery, out: TextIO) -> None:
    out.write(f"POST {args.url}\n")
    out.write("Content-Type: application/json\n")
    out.write(f"{args.signature_header}: {delivery.signature}\n\n")
    out.write(delivery.body.decode("utf-8", "backslashreplace"))
    out.write("\n\n")


async def send(args: argparse.Namespace, deliveries: Iterator[Delivery], out: TextIO) -> int:
    """POST ``deliveries`` with ``args.concurrency`` requests in flight; return the exit status.

    With ``args.rate`` the n-th request starts no earlier than n / rate
    seconds after the first one.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    counter = itertools.count()
    outcomes: list[Outcome] = []
    timeout = aiohttp.ClientTimeout(total=args.timeout_s)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    headers = {"User-Agent": f"relay-send/{__version__}", "Content-Type": "application/json"}

    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as http:

        async def worker() -> None:
            # Every worker draws from the one iterator; next() never awaits, so no two
            # workers get the same delivery.
            for delivery in deliveries:
                index = next(counter)
                if args.rate is not None:
                    await asyncio.sleep(max(0.0, started + index / args.rate - loop.time()))
                outcome = await _post(http, args, delivery)
                outcomes.append(outcome)
                if not args.quiet:
                    _print_outcome(outcome, out)

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))

    elapsed_s = loop.time() - started
    if len(outcomes) > 1 or args.quiet:
        _print_summary(outcomes, elapsed_s, out)
    return _exit_status(outcomes)


async def _post(
    http: aiohttp.ClientSession, args: argparse.Namespace, delivery: Delivery
) -> Outcome:
    headers = {args.signature_header: delivery.signature}
    started = time.perf_counter()
    status: int | None = None
    try:
        async with http.post(args.url, data=delivery.body, headers=headers) as response:
            status = response.status
            detail = (await response.text(errors="replace")).strip()
    except TimeoutError:
        detail = f"timed out: no response within {args.timeout_s:g} s"
    except aiohttp.ClientConnectorError as exc:
        detail = f"cannot connect to {args.url}: {exc.os_error.strerror or exc.os_error}"
    except aiohttp.ClientError as exc:
        detail = f"request to {args.url} failed: {exc!r}"
    elapsed_s = time.perf_counter() - started
    return Outcome(delivery, status, detail[:MAX_DETAIL_CHARS], elapsed_s)


def _print_outcome(outcome: Outcome, out: TextIO) -> None:
    status = "error" if outcome.status is None else str(outcome.status)
    delivery = outcome.delivery
    milliseconds = outcome.elapsed_s * 1000
    out.write(
        f"{status} {delivery.event} {delivery.event_id} {milliseconds:.0f} ms {outcome.detail}\n"
    )
    out.flush()


def _print_summary(outcomes: list[Outcome], elapsed_s: float, out: TextIO) -> None:
    responded = [outcome for outcome in outcomes if outcome.status is not None]
    success = sum(1 for outcome in responded if 200 <= (outcome.status or 0) < 300)
    rate = len(outcomes) / elapsed_s if elapsed_s > 0 else 0.0
    out.write(
        f"sent {len(outcomes)} in {elapsed_s:.2f} s ({rate:.1f}/s): {success} got 2xx, "
        f"{len(responded) - success} another status, {len(outcomes) - len(responded)} no response\n"
    )
    counts: dict[str, int] = {}
    for outcome in outcomes:
        key = "error" if outcome.status is None else str(outcome.status)
        counts[key] = counts.get(key, 0) + 1
    out.write("status: " + ", ".join(f"{key} x{n}" for key, n in sorted(counts.items())) + "\n")
    if responded:
        latencies = sorted(outcome.elapsed_s * 1000 for outcome in responded)
        p95 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))]
        out.write(
            f"latency: p50 {statistics.median(latencies):.1f} ms, p95 {p95:.1f} ms, "
            f"max {latencies[-1]:.1f} ms\n"
        )


def _exit_status(outcomes: list[Outcome]) -> int:
    if any(outcome.status is None for outcome in outcomes):
        return EXIT_UNAVAILABLE
    if any(not 200 <= (outcome.status or 0) < 300 for outcome in outcomes):
        return EXIT_FAILED
    return EXIT_OK
