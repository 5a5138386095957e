"""``relay tail``: print the records that the relay publishes, as they arrive.

The consumer joins no consumer group and commits no offsets, so it never
moves the position of the services that consume the same topics. It
subscribes by pattern, so aiokafka requests metadata for all topics instead
of naming them, which keeps a broker with ``auto.create.topics.enable`` from
creating a topic, and it notices topics created later.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import itertools
import json
import logging
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from relay.config import KafkaConfig, load_config
from relay.errors import ConfigError
from relay.tools.common import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_TOPIC_PREFIX,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    ToolError,
    positive_float,
    positive_int,
    run_async,
    run_command,
)

# How often the consumer refreshes metadata, which bounds how long a new matching topic
# stays unnoticed.
TOPIC_REFRESH_MS = 5000
ASSIGNMENT_WAIT_S = 30.0
POLL_MS = 500

DESCRIPTION = """\
Print each record on the relay's topics: topic, partition, offset, time,
key, event type, event id, headers and the value as JSON. Without TOPIC or
--events every topic that starts with the topic prefix is read, which
includes the unrouted and dead-letter topics under the default names.

By default only the records published after the line "relay tail: reading
... from now" appears on standard error are printed; --from-beginning prints
each partition from its first record. A topic created later is read from its
beginning.
"""

EPILOG = """\
The Kafka address comes from --bootstrap-servers or else from the
configuration file's kafka.bootstrap_servers and routing.topic_prefix.

exit status:
  0  stopped by Ctrl-C or SIGTERM, after --max-records records, or when
     --timeout-s passed without --max-records
  1  --timeout-s passed before --max-records records arrived
  2  invalid arguments or configuration
  3  cannot connect to Kafka
"""


@dataclass(frozen=True, slots=True)
class TailOptions:
    """Topics, start position, stop conditions and output format of one ``relay tail`` run."""

    bootstrap_servers: str
    pattern: re.Pattern[str]
    description: str
    from_beginning: bool = False
    max_records: int | None = None
    timeout_s: float | None = None
    output_format: str = "text"
    save_dir: Path | None = None


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "tail",
        help="print the records on the relay's Kafka topics",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("topics", nargs="*", metavar="TOPIC", help="exact topic names to read")
    parser.add_argument(
        "--events",
        metavar="GLOB",
        help="read the topics of the event types that match GLOB, such as 'lead.*'",
    )
    _add_source_arguments(parser)
    _add_output_arguments(parser)
    parser.set_defaults(run_tool=run)


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT[,...]",
        help="Kafka brokers; when given, no configuration file is read",
    )
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG_PATH,
        metavar="FILE",
        help="relay configuration, read only without --bootstrap-servers "
        f"(default: {DEFAULT_CONFIG_PATH})",
    )
    parser.add_argument(
        "--topic-prefix",
        metavar="PREFIX",
        help=f"topic prefix (default: routing.topic_prefix, or {DEFAULT_TOPIC_PREFIX} "
        "with --bootstrap-servers)",
    )
    parser.add_argument(
        "--from-beginning", action="store_true", help="read each partition from its first record"
    )


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        dest="output_format",
        choices=("text", "json"),
        default="text",
        help="text: a header and the value as indented JSON; json: one JSON object per line "
        "(default: text)",
    )
    parser.add_argument(
        "--max-records", type=positive_int, metavar="N", help="stop after printing N records"
    )
    parser.add_argument(
        "--timeout-s",
        type=positive_float,
        metavar="SECONDS",
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    parser.add_argument(
        "--save-dir",
        type=Path,
        metavar="DIR",
        help="also write each record value to DIR/TOPIC-PARTITION-OFFSET.body, byte for byte, "
        "for relay send --replay",
    )


def run(args: argparse.Namespace) -> int:
    return run_command("tail", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    if options.save_dir is not None:
        try:
            options.save_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ToolError(
                f"--save-dir: cannot create {options.save_dir}: {exc.strerror}"
            ) from None
    logging.basicConfig(
        level=logging.WARNING, format="relay tail: %(levelname)s %(name)s: %(message)s"
    )
    return run_async(tail(options, sys.stdout, sys.stderr), stop_code=EXIT_OK)


def options_from_args(args: argparse.Namespace) -> TailOptions:
    """Resolve the Kafka address and topic pattern from the arguments or the configuration."""
    if args.topics and args.events is not None:
        raise ToolError("give TOPIC names or --events GLOB, not both")
    bootstrap_servers = args.bootstrap_servers
    prefix = args.topic_prefix
    if bootstrap_servers is not None:
        bootstrap_servers = _check_bootstrap_servers(bootstrap_servers)
    else:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            raise ToolError(f"{exc}\n(pass --bootstrap-servers to read no configuration)") from None
        bootstrap_servers = config.kafka.bootstrap_servers
        prefix = prefix if prefix is not None else config.routing.topic_prefix
    prefix = prefix if prefix is not None else DEFAULT_TOPIC_PREFIX
    pattern, description = topic_pattern(prefix, args.topics, args.events)
    return TailOptions(
        bootstrap_servers=bootstrap_servers,
        pattern=pattern,
        description=description,
        from_beginning=args.from_beginning,
        max_records=args.max_records,
        timeout_s=args.timeout_s,
        output_format=args.output_format,
        save_dir=args.save_dir,
    )


def _check_bootstrap_servers(value: str) -> str:
    """Validate ``--bootstrap-servers`` with the rules of ``kafka.bootstrap_servers``."""
    try:
        return KafkaConfig(bootstrap_servers=value).bootstrap_servers
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ToolError(f"--bootstrap-servers {value!r}: {reason}") from None


def topic_pattern(
    prefix: str, topics: Iterable[str], events_glob: str | None
) -> tuple[re.Pattern[str], str]:
    """Return the regular expression that matches the topic names to read, and its description.

    The consumer applies the expression with ``re.match``, so it is anchored
    at the start of the name.
    """
    names = list(topics)
    if names:
        pattern = "(?:" + "|".join(re.escape(name) for name in names) + r")\Z"
        return re.compile(pattern), "topics " + ", ".join(names)
    if events_glob is not None:
        pattern = re.escape(prefix) + fnmatch.translate(events_glob)
        return re.compile(pattern), f"topics {prefix}{events_glob}"
    return re.compile(re.escape(prefix)), f"topics {prefix}*"


async def tail(options: TailOptions, out: TextIO, err: TextIO) -> int:
    """Print records until ``max_records``, ``timeout_s`` or cancellation; return the exit code."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=options.bootstrap_servers,
        client_id="relay-tail",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        metadata_max_age_ms=TOPIC_REFRESH_MS,
    )
    try:
        await consumer.start()
    except KafkaError as exc:
        await consumer.stop()
        raise ToolError(
            f"cannot connect to Kafka at {options.bootstrap_servers}: {exc}", EXIT_UNAVAILABLE
        ) from None
    try:
        consumer.subscribe(pattern=options.pattern.pattern)
        start_offsets = {} if options.from_beginning else await _end_offsets(consumer, options)
        positions = _Positions(start_offsets)
        positions.restore(consumer)
        where = "the beginning" if options.from_beginning else "now"
        err.write(f"relay tail: reading {options.description} from {where}; Ctrl-C stops\n")
        err.flush()
        return await _print_records(consumer, positions, options, out)
    finally:
        await consumer.stop()


class _Positions:
    """The next offset to print for each partition, kept across reassignments.

    Without a consumer group, aiokafka 0.14 replaces the whole assignment when
    a topic that matches the pattern appears, which resets the position of
    every partition to ``auto_offset_reset``. ``restore`` seeks the known
    partitions back, and ``is_new`` skips records fetched before it did.
    """

    def __init__(self, start_offsets: dict[TopicPartition, int]) -> None:
        self._next = dict(start_offsets)
        self._assigned: frozenset[TopicPartition] = frozenset()

    def restore(self, consumer: AIOKafkaConsumer) -> None:
        assigned = frozenset(consumer.assignment())
        if assigned == self._assigned:
            return
        for partition in assigned & self._next.keys():
            consumer.seek(partition, self._next[partition])
        self._assigned = assigned

    def is_new(self, record: ConsumerRecord[bytes, bytes]) -> bool:
        partition = TopicPartition(record.topic, record.partition)
        return bool(record.offset >= self._next.get(partition, 0))

    def advance(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self._next[TopicPartition(record.topic, record.partition)] = record.offset + 1


async def _end_offsets(
    consumer: AIOKafkaConsumer, options: TailOptions
) -> dict[TopicPartition, int]:
    """Return the end offset of every partition of the matching topics that exist now.

    Partitions that appear later are read from their beginning
    (``auto_offset_reset``), because their topic was created after this point.
    """
    existing = {topic for topic in await consumer.topics() if options.pattern.match(topic)}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ASSIGNMENT_WAIT_S
    while not existing <= {partition.topic for partition in consumer.assignment()}:
        if loop.time() > deadline:
            # NOTE: a topic still unassigned here is read from its beginning once assigned.
            break
        await asyncio.sleep(0.1)

    partitions: list[TopicPartition] = sorted(consumer.assignment())
    if not partitions:
        return {}
    offsets: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
    return offsets


async def _print_records(
    consumer: AIOKafkaConsumer, positions: _Positions, options: TailOptions, out: TextIO
) -> int:
    loop = asyncio.get_running_loop()
    deadline = None if options.timeout_s is None else loop.time() + options.timeout_s
    printed = 0
    while options.max_records is None or printed < options.max_records:
        wait_ms = POLL_MS
        if deadline is not None:
            remaining_ms = int((deadline - loop.time()) * 1000)
            if remaining_ms <= 0:
                return EXIT_OK if options.max_records is None else EXIT_FAILED
            wait_ms = min(wait_ms, remaining_ms)

        positions.restore(consumer)
        batches = await _next_batches(consumer, wait_ms)
        for record in itertools.chain.from_iterable(batches.values()):
            if not positions.is_new(record):
                continue
            if not _write_record(record, options, out):
                return EXIT_OK
            positions.advance(record)
            printed += 1
            if printed == options.max_records:
                break
    return EXIT_OK


async def _next_batches(
    consumer: AIOKafkaConsumer, wait_ms: int
) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
    # aiokafka 0.14's getmany waits without limit for the first assignment, which a
    # pattern that matches no topic yet never gets; the timeout bounds that wait. No
    # record is lost by it, because getmany takes records from its buffer only right
    # before it returns.
    try:
        async with asyncio.timeout(wait_ms / 1000):
            batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
            batches = await consumer.getmany(timeout_ms=wait_ms)
            return batches
    except TimeoutError:
        return {}


def _write_record(record: ConsumerRecord[bytes, bytes], options: TailOptions, out: TextIO) -> bool:
    """Print ``record``; return False once the reader of standard output went away."""
    if options.save_dir is not None:
        name = f"{record.topic}-{record.partition}-{record.offset}.body"
        (options.save_dir / name).write_bytes(record.value or b"")
    if options.output_format == "json":
        text = json.dumps(record_summary(record), ensure_ascii=False) + "\n"
    else:
        text = format_text(record)
    try:
        out.write(text)
        out.flush()
    except BrokenPipeError:
        # The reader of a pipe, as in `relay tail | head`, exited. Pointing standard output
        # at /dev/null keeps the interpreter's final flush from failing again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return False
    return True


def record_summary(record: ConsumerRecord[bytes, bytes]) -> dict[str, Any]:
    """Describe ``record`` as a JSON object; the value is parsed JSON or else ``value_text``."""
    headers = {name: _decode(value) for name, value in record.headers}
    value = _parse_json(record.value)
    summary: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": _format_millis(record.timestamp),
        "key": None if record.key is None else _decode(record.key),
        "event": headers.get("ce_type") or _field(value, "event"),
        "id": headers.get("ce_id") or _field(value, "id"),
        "headers": headers,
    }
    if value is _NOT_JSON:
        summary["value_text"] = _decode(record.value or b"")
    else:
        summary["value"] = value
    return summary


def format_text(record: ConsumerRecord[bytes, bytes]) -> str:
    """Return a header line, the key fields, the headers and the indented JSON value."""
    summary = record_summary(record)
    lines = [
        f"--- {summary['topic']} partition={summary['partition']} offset={summary['offset']} "
        f"timestamp={summary['timestamp']}",
        f"event={summary['event'] or '-'} id={summary['id'] or '-'} key={summary['key'] or '-'}",
        "headers: " + ", ".join(f"{name}={value}" for name, value in summary["headers"].items()),
    ]
    if "value" in summary:
        lines.append(json.dumps(summary["value"], indent=2, ensure_ascii=False))
    else:
        lines.append(summary["value_text"])
    return "\n".join(lines) + "\n\n"


_NOT_JSON = object()


def _parse_json(value: bytes | None) -> Any:
    if not value:
        return _NOT_JSON
    try:
        return json.loads(value)
    except ValueError:
        return _NOT_JSON


def _field(document: Any, name: str) -> str | None:
    value = document.get(name) if isinstance(document, dict) else None
    return value if isinstance(value, str) else None


def _decode(value: bytes) -> str:
    return value.decode("utf-8", "backslashreplace")


def _format_millis(timestamp_ms: int) -> str:
    moment = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
