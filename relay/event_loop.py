"""Choice of the event loop for ``relay serve``: uvloop when installed, else asyncio's."""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

LOOP_CHOICES = ("auto", "uvloop", "asyncio")


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Return the factory of the event loop named by ``choice``; None means asyncio's default.

    ``auto`` takes uvloop when it can be imported. ``uvloop`` raises
    ``ImportError`` when it cannot.
    """
    if choice == "asyncio":
        log.info("event loop: asyncio")
        return None
    if choice == "auto" and importlib.util.find_spec("uvloop") is None:
        log.info("event loop: asyncio (uvloop is not installed)")
        return None
    import uvloop

    log.info("event loop: uvloop %s", importlib.metadata.version("uvloop"))
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
