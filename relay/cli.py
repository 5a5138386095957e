"""Command-line entry point: ``relay serve``, ``relay check-config`` and the tool commands."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from aiohttp import web

from relay import __version__
from relay.app import create_app
from relay.config import RelayConfig, load_config
from relay.errors import ConfigError
from relay.tools import add_tool_commands

DEFAULT_CONFIG = "config/relay.yaml"


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
    serve.set_defaults(run=_serve)

    check = commands.add_parser("check-config", help="validate the configuration and exit")
    _add_config_argument(check)
    check.set_defaults(run=_check_config)

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

    logging.basicConfig(
        level=config.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    web.run_app(
        create_app(config),
        host=config.server.host,
        port=config.server.port,
        shutdown_timeout=config.server.shutdown_grace_s,
        access_log=None,
        print=None,
    )
    return 0


def _check_config(args: argparse.Namespace, config: RelayConfig) -> int:
    print(f"{args.config}: valid")
    for source in config.sources:
        print(f"source {source.name}: POST {source.path}, {len(source.secrets)} secret(s)")
    print(
        f"topics: {config.routing.topic_prefix}<event>, unrouted: {config.routing.unrouted_topic}"
    )
    return 0
