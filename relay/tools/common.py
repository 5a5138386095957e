"""Exit codes, errors, secret loading and the event loop runner shared by the tool commands."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from relay.errors import RelayError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
# The shell's status for a process ended by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130

DEFAULT_CONFIG_PATH = "config/relay.yaml"
DEFAULT_SECRET_ENV = "TASKNATION_WEBHOOK_SECRET"
DEFAULT_RELAY_URL = "http://127.0.0.1:8080/webhooks/tasknation"
DEFAULT_TOPIC_PREFIX = "tasknation."


class ToolError(RelayError):
    """A failure that ends a tool command with ``exit_code`` as the process exit status."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_secret_arguments(parser: argparse.ArgumentParser, default_env: str | None) -> None:
    """Add ``--secret-env`` and ``--secret-file``, so that no secret appears in an argument."""
    group = parser.add_mutually_exclusive_group()
    default_text = f" (default: {default_env})" if default_env else ""
    group.add_argument(
        "--secret-env",
        metavar="VAR",
        default=default_env,
        help=f"environment variable that contains the webhook secret{default_text}",
    )
    group.add_argument(
        "--secret-file",
        metavar="FILE",
        type=Path,
        help="file that contains the webhook secret; one trailing newline is stripped",
    )


def read_secret(args: argparse.Namespace) -> bytes:
    """Return the webhook secret named by ``--secret-file`` or ``--secret-env``.

    Raises ``ToolError`` when the variable is unset or empty, or the file is
    unreadable or empty. Messages name the variable or file, never the value.
    """
    secret_file: Path | None = args.secret_file
    if secret_file is not None:
        return read_secret_file(secret_file, "--secret-file")

    name: str | None = args.secret_env
    if not name:
        raise ToolError("no webhook secret given; pass --secret-env VAR or --secret-file FILE")
    value = os.environ.get(name, "")
    if not value:
        raise ToolError(
            f"environment variable {name} is not set or empty; export it, or pass "
            "--secret-env VAR or --secret-file FILE"
        )
    return value.encode()


def read_secret_file(path: Path, option: str) -> bytes:
    """Return the content of a secret file without its one trailing newline."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ToolError(f"{option}: cannot read {path}: {exc.strerror}") from None
    # Files written by editors and `echo` end with one newline that is not part of the secret.
    if content.endswith(b"\n"):
        content = content[:-1]
    if not content:
        raise ToolError(f"{option}: {path} is empty")
    return content


def positive_float(text: str) -> float:
    """Parse an argparse value that must be a number greater than zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number greater than 0, got {text}")
    return value


def positive_int(text: str) -> int:
    """Parse an argparse value that must be an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer of at least 1, got {value}")
    return value


def run_command(name: str, command: Callable[[], int]) -> int:
    """Run one tool command and turn a ``ToolError`` into its message and exit code."""
    try:
        return command()
    except ToolError as exc:
        print(f"relay {name}: {exc}", file=sys.stderr)
        return exc.exit_code


def run_async(main: Coroutine[Any, Any, int], stop_code: int = EXIT_OK) -> int:
    """Run ``main`` in a new event loop; SIGINT and SIGTERM cancel it and return ``stop_code``.

    The signal handlers are installed only in the main thread, because Python
    delivers signals there alone; elsewhere Ctrl-C keeps its default effect.
    """

    async def supervise() -> int:
        task = asyncio.ensure_future(main)
        loop = asyncio.get_running_loop()
        in_main_thread = threading.current_thread() is threading.main_thread()
        signals = (signal.SIGINT, signal.SIGTERM) if in_main_thread else ()
        for signum in signals:
            loop.add_signal_handler(signum, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            return stop_code
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)

    return asyncio.run(supervise())
