"""Parsing of the TaskNation event envelope.

An envelope is a JSON object with a string ``id``, a string ``event``, an
RFC 3339 ``timestamp`` and an object ``data``. Other top-level fields are
allowed and ignored. The parsed fields only steer routing: the record value
stays the body bytes as received.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from relay.errors import InvalidEnvelope

MAX_ID_CHARS = 256
MAX_EVENT_CHARS = 256


@dataclass(frozen=True, slots=True)
class Envelope:
    """The routing-relevant fields of one TaskNation event."""

    id: str
    event: str
    timestamp: datetime
    data: dict[str, Any]


def parse_envelope(body: bytes) -> Envelope:
    """Parse ``body`` as an envelope, or raise ``InvalidEnvelope`` with a reason."""
    if not body:
        raise InvalidEnvelope("empty_body", "the body is empty")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson rejects invalid UTF-8 with a JSONDecodeError as well.
        raise InvalidEnvelope("invalid_json", str(exc)) from None
    if not isinstance(document, dict):
        raise InvalidEnvelope("invalid_envelope", "the body is not a JSON object")

    event_id = _required_string(document, "id", MAX_ID_CHARS)
    event = _required_string(document, "event", MAX_EVENT_CHARS)
    timestamp = _parse_timestamp(document.get("timestamp"))
    data = document.get("data")
    if not isinstance(data, dict):
        raise InvalidEnvelope("invalid_envelope", "'data' must be a JSON object")
    return Envelope(id=event_id, event=event, timestamp=timestamp, data=data)


def _required_string(document: dict[str, Any], field: str, max_chars: int) -> str:
    value = document.get(field)
    if not isinstance(value, str) or not value:
        raise InvalidEnvelope("invalid_envelope", f"'{field}' must be a non-empty string")
    if len(value) > max_chars:
        raise InvalidEnvelope(
            "invalid_envelope", f"'{field}' has {len(value)} characters, more than {max_chars}"
        )
    return value


def _parse_timestamp(value: object) -> datetime:
    if not isinstance(value, str):
        raise InvalidEnvelope("invalid_envelope", "'timestamp' must be an RFC 3339 string")
    try:
        # RFC 3339 allows a lowercase "t" and "z"; the rest of a valid value has no letters.
        parsed = datetime.fromisoformat(value.upper())
    except ValueError:
        raise InvalidEnvelope(
            # The value is left out: it is body content, and this detail is logged.
            "invalid_envelope",
            "'timestamp' is not an RFC 3339 date-time",
        ) from None
    if parsed.tzinfo is None:
        # TaskNation sends UTC with a 'Z' suffix; a value without an offset is read as UTC.
        parsed = parsed.replace(tzinfo=UTC)
    return parsed
