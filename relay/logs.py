"""Logging set-up: human-readable or JSON lines, with repeats rate-limited.

Context such as the event id travels in ``extra={...}`` with the keys in
``CONTEXT_FIELDS``; both formats print them. ``RepeatFilter`` lets the same
message template through at most ``burst`` times per ``interval_s`` and
reports how many it suppressed on the next line it lets through.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

import orjson
from aiohttp.http_exceptions import HttpProcessingError

CONTEXT_FIELDS = (
    "event_id",
    "source",
    "event_type",
    "reason",
    "status",
    "topic",
    "partition",
    "offset",
)

LogFormat = Literal["text", "json"]


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{field}={getattr(record, field)}"
            for field in CONTEXT_FIELDS
            if getattr(record, field, None) is not None
        )
        if not context:
            return line
        first, newline, rest = line.partition("\n")
        return f"{first} {context}{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context, exception."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                document[field] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document, default=str).decode()


class InvalidHttpFilter(logging.Filter):
    """Shortens aiohttp's log records about malformed HTTP requests to one line.

    aiohttp logs an ERROR with a traceback whose message quotes the raw
    request bytes (body and signature header included) when it cannot parse
    a request. The client already got a 400, so the relay keeps only the
    exception class, at INFO.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiohttp") or not record.exc_info:
            return True
        exc = record.exc_info[1]
        if isinstance(exc, HttpProcessingError):
            record.msg = "rejected an invalid HTTP request: %s (status %s)"
            record.args = (type(exc).__name__, exc.code)
            record.exc_info = None
            record.exc_text = None
            record.levelno = logging.INFO
            record.levelname = "INFO"
        return True


class RepeatFilter(logging.Filter):
    """Rate-limits log records that share a logger and a message template."""

    def __init__(
        self,
        burst: int = 10,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._burst = burst
        self._interval_s = interval_s
        self._clock = clock
        # (logger, template) -> [window start, records let through, records suppressed]
        self._windows: dict[tuple[str, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window[0] >= self._interval_s:
            suppressed = int(window[2]) if window is not None else 0
            self._windows[key] = [now, 1, 0]
            if suppressed:
                record.msg = f"{record.msg} (suppressed {suppressed} similar messages)"
            return True
        if window[1] < self._burst:
            window[1] += 1
            return True
        window[2] += 1
        return False


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """Send the root logger's records to stderr in ``log_format``, rate-limited."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    # The rewrite runs first, so malformed requests and handler crashes,
    # which aiohttp logs with one template, are rate-limited apart.
    handler.addFilter(InvalidHttpFilter())
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka logs record values at DEBUG, and those are webhook bodies.
    if logging.getLevelName(level) < logging.INFO:
        logging.getLogger("aiokafka").setLevel(logging.INFO)
