"""Routing of an event to Kafka records: topics, record key and headers.

Headers follow the CloudEvents Kafka protocol binding, binary content mode
(CloudEvents 1.0): the record value is the body as received and the event
attributes travel as ``ce_*`` headers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from relay.config import RoutingConfig
from relay.envelope import Envelope
from relay.sources import Source

# Kafka's rule for topic names: at most 249 characters of [A-Za-z0-9._-], not "." or "..".
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")

HEADER_SOURCE = "relay_source"
HEADER_RECEIVED_AT = "relay_received_at"
HEADER_DEAD_LETTER_REASON = "relay_dead_letter_reason"
HEADER_DEAD_LETTER_DETAIL = "relay_dead_letter_detail"


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record to publish."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


def is_valid_topic_name(name: str) -> bool:
    return bool(_TOPIC_NAME.match(name)) and name not in (".", "..")


def route_event(
    envelope: Envelope, body: bytes, source: Source, routing: RoutingConfig, received_at: datetime
) -> list[Record]:
    """Return the records for one authentic, well-formed event."""
    topic = routing.topic_prefix + envelope.event
    if not is_valid_topic_name(topic):
        # An event name never becomes a topic name that Kafka would reject or misread.
        topic = routing.unrouted_topic

    headers = (
        ("ce_specversion", b"1.0"),
        ("ce_id", envelope.id.encode()),
        ("ce_source", f"/tasknation/{source.name}".encode()),
        ("ce_type", envelope.event.encode()),
        ("ce_time", envelope.timestamp.isoformat().encode()),
        ("content-type", b"application/json"),
        (HEADER_SOURCE, source.name.encode()),
        (HEADER_RECEIVED_AT, received_at.isoformat().encode()),
    )
    key = record_key(envelope, routing.key_paths)
    return [Record(topic=topic, key=key, value=body, headers=headers)]


def route_dead_letter(
    body: bytes,
    source: Source,
    routing: RoutingConfig,
    reason: str,
    detail: str,
    received_at: datetime,
) -> Record:
    """Return the dead-letter record for an authentic body that is not a valid event."""
    headers = (
        (HEADER_SOURCE, source.name.encode()),
        (HEADER_RECEIVED_AT, received_at.isoformat().encode()),
        (HEADER_DEAD_LETTER_REASON, reason.encode()),
        (HEADER_DEAD_LETTER_DETAIL, detail[:512].encode("utf-8", "replace")),
    )
    return Record(topic=routing.dead_letter_topic, key=None, value=body, headers=headers)


def record_key(envelope: Envelope, key_paths: tuple[str, ...]) -> bytes | None:
    """Return the value at the first key path that names a string or an integer.

    A path is dotted (``data.leadID``) and starts at the envelope's top level.
    Floats, booleans, objects and empty strings are skipped, because they make
    poor partition keys.
    """
    document: dict[str, Any] = {
        "id": envelope.id,
        "event": envelope.event,
        "data": envelope.data,
    }
    for path in key_paths:
        value = _lookup(document, path)
        if isinstance(value, str) and value:
            return value.encode()
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value).encode()
    return None


def _lookup(document: dict[str, Any], path: str) -> object:
    value: object = document
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value
