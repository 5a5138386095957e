"""Command-line entry point: ``relay serve``, ``check-config``, ``topics`` and the tools.

Exit status of ``serve``, ``check-config`` and ``topics``: 0 on success, 1
when Kafka cannot be reached or a topic is missing or cannot be created, 2
for an invalid configuration or command line. The tools document their own.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator, Sequence

from relay import __version__
from relay.app import serve
from relay.config import RelayConfig, SourceConfig, load_config
from relay.errors import ConfigError, TopicAdminError
from relay.event_loop import LOOP_CHOICES, event_loop_factory
from relay.logs import configure_logging
from relay.routing import header_names
from relay.tools import add_tool_commands
from relay.topics import TopicResult, ensure_topics, find_missing_topics
from relay.workers import run_workers, worker_config

DEFAULT_CONFIG = "config/relay.yaml"
DEFAULT_TOPICS_TIMEOUT_S = 60.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if "run_tool" in args:
        # The tool commands read a configuration file only when they need one.
        tool_result: int = args.run_tool(args)
        return tool_result
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 2
    result: int = args.run(args, config)
    return result


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay", description="Authenticate TaskNation webhooks and publish them to Kafka."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP server")
    _add_config_argument(serve)
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, help="listen port (overrides server.port)")
    serve.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="worker processes sharing the port with SO_REUSEPORT (default: 1)",
    )
    serve.add_argument(
        "--loop",
        choices=LOOP_CHOICES,
        default="auto",
        help="event loop: uvloop, asyncio, or auto (uvloop when installed; the default)",
    )
    serve.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    serve.set_defaults(run=_serve)

    check = commands.add_parser(
        "check-config",
        help="validate the configuration and print the routing table of every event type",
    )
    _add_config_argument(check)
    check.set_defaults(run=_check_config)

    topics = commands.add_parser("topics", help="create or check the topics the relay writes to")
    actions = topics.add_subparsers(dest="action", required=True, metavar="ACTION")
    ensure = actions.add_parser(
        "ensure", help="create every missing topic; existing topics are left unchanged"
    )
    ensure.set_defaults(run=_topics_ensure)
    check_topics = actions.add_parser("check", help="list missing topics; exit 1 if any")
    check_topics.set_defaults(run=_topics_check)
    for action in (ensure, check_topics):
        _add_config_argument(action)
        action.add_argument(
            "--timeout-s",
            type=float,
            default=DEFAULT_TOPICS_TIMEOUT_S,
            help=f"seconds to wait for Kafka (default: {DEFAULT_TOPICS_TIMEOUT_S:g})",
        )

    add_tool_commands(commands)
    return parser


def _add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        metavar="FILE",
        help=f"YAML configuration file (default: {DEFAULT_CONFIG})",
    )


def _serve(args: argparse.Namespace, config: RelayConfig) -> int:
    overrides = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if overrides:
        server = config.server.model_copy(update=overrides)
        config = config.model_copy(update={"server": server})

    configure_logging(config.log_level, config.log_format)
    if args.workers > 1 and args.worker_index is None:
        return run_workers(lambda index: _worker_args(args, index), args.workers)
    reuse_port = args.worker_index is not None
    if reuse_port:
        config = worker_config(config, args.worker_index)
    try:
        loop_factory = event_loop_factory(args.loop)
    except ImportError as exc:
        print(f"relay: --loop uvloop: {exc}", file=sys.stderr)
        return 2
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(config, reuse_port=reuse_port))
    return 0


def _worker_args(args: argparse.Namespace, index: int) -> list[str]:
    """Return the command line of worker ``index``: this one's, for one process."""
    worker = [sys.executable, "-m", "relay", "serve", "--config", args.config]
    worker += ["--loop", args.loop, "--worker-index", str(index)]
    if args.host is not None:
        worker += ["--host", args.host]
    if args.port is not None:
        worker += ["--port", str(args.port)]
    return worker


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _check_config(args: argparse.Namespace, config: RelayConfig) -> int:
    print(f"{args.config}: valid")
    for source in config.sources:
        print()
        for line in _describe_source(source):
            print(line)
        for event in config.routing.event_types:
            for line in _describe_event(config, source, event):
                print(f"  {line}")

    routing = config.routing
    print()
    print(f"unrouted topic: {routing.unrouted_topic} (events that no route matches,")
    print("  and event types that are not valid topic names)")
    print(f"dead-letter topic: {routing.dead_letter_topic} (authentic bodies that are not events)")
    topics = config.writable_topics()
    print(f"{len(topics)} topics for `relay topics ensure`: {', '.join(topics)}")
    for index, route in enumerate(routing.routes):
        if not any(route.matches(event) for event in routing.event_types):
            print(
                f"note: route {index + 1} ({', '.join(route.events)}) matches none of "
                "routing.event_types"
            )
    return 0


def _describe_source(source: SourceConfig) -> Iterator[str]:
    yield (
        f"source {source.name}: POST {source.path}, signature header {source.signature_header}, "
        f"{len(source.secrets)} secret(s)"
    )
    if source.allowed_event_types is not None:
        yield f"  allowed event types: {', '.join(source.allowed_event_types)}"
    if source.allowed_business_ids is not None:
        yield f"  allowed business IDs: {', '.join(sorted(source.allowed_business_ids))}"


def _describe_event(config: RelayConfig, source: SourceConfig, event: str) -> Iterator[str]:
    """Yield the lines of one event type in the routing table of ``source``."""
    yield event
    if not source.allows_event_type(event):
        yield "  not allowed by the source: gets 200, not published"
        return

    routing = config.routing
    destination = routing.destination(event, source.name)
    if destination.route_index is None:
        yield "  route:   none matches, so the unrouted topic"
    else:
        route = routing.routes[destination.route_index]
        yield f"  route:   {destination.route_index + 1} ({', '.join(route.events)})"
    if not destination.topics:
        yield "  dropped by the route: gets 200, not published"
        return

    key_paths = destination.key_paths
    key = ", then ".join(key_paths) if key_paths else "none"
    if destination.content_mode == "binary":
        value = "the body as received (CloudEvents binary content mode)"
    else:
        value = "a CloudEvents JSON event with the body as data (structured content mode)"
    yield f"  topics:  {', '.join(destination.topics)}"
    yield f"  key:     {key}"
    yield f"  value:   {value}"
    yield f"  headers: {' '.join(header_names(destination.content_mode))}"


def _topics_ensure(args: argparse.Namespace, config: RelayConfig) -> int:
    try:
        results = asyncio.run(ensure_topics(config, args.timeout_s))
    except TopicAdminError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 1
    for result in results:
        print(_describe_result(result))
    failed = sum(result.outcome == "failed" for result in results)
    created = sum(result.outcome == "created" for result in results)
    print(f"{created} created, {len(results) - created - failed} existed, {failed} failed")
    return 1 if failed else 0


def _describe_result(result: TopicResult) -> str:
    line = (
        f"{result.outcome:7} {result.topic} (partitions {result.partitions}, "
        f"replication factor {result.replication_factor})"
    )
    return f"{line}: {result.detail}" if result.detail else line


def _topics_check(args: argparse.Namespace, config: RelayConfig) -> int:
    topics = config.writable_topics()
    try:
        missing = asyncio.run(find_missing_topics(config.kafka, topics, args.timeout_s))
    except TopicAdminError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 1
    for topic in topics:
        print(f"{'missing' if topic in missing else 'exists':7} {topic}")
    if missing:
        print(
            f"{len(missing)} of {len(topics)} topics are missing; "
            "create them with `relay topics ensure`"
        )
        return 1
    print(f"all {len(topics)} topics exist")
    return 0
