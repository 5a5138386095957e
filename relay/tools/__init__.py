"""Commands for integrators: ``send``, ``tail``, ``subscribe`` and ``verify``.

None of them needs a configuration file unless it reads one on purpose:
``send`` and ``verify`` never do, and ``tail`` does only without
``--bootstrap-servers``.
"""

from __future__ import annotations

from typing import Any

from relay.tools import send, subscribe, tail, verify


def add_tool_commands(commands: Any) -> None:
    """Add the tool commands to the ``relay`` subcommand parsers.

    Each command stores its entry point as ``run_tool(args) -> int`` in the
    parsed arguments; ``relay.cli.main`` calls it before any configuration is
    loaded.
    """
    for module in (send, tail, subscribe, verify):
        module.add_parser(commands)
