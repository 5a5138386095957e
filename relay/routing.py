"""Routing of an event to Kafka records: topics, record key, headers and value.

Headers follow the CloudEvents Kafka protocol binding (CloudEvents 1.0). In
binary content mode, the default, the record value is the body as received
and the event attributes travel as ``ce_*`` headers. In structured content
mode the value is a CloudEvents JSON event whose ``data`` member is the body,
spliced in byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from relay.config import ContentMode, Destination, RoutingConfig
from relay.envelope import Envelope
from relay.sources import Source

HEADER_SOURCE = "relay_source"
HEADER_RECEIVED_AT = "relay_received_at"
HEADER_DEAD_LETTER_REASON = "relay_dead_letter_reason"
HEADER_DEAD_LETTER_DETAIL = "relay_dead_letter_detail"

BINARY_CONTENT_TYPE = b"application/json"
STRUCTURED_CONTENT_TYPE = b"application/cloudevents+json; charset=UTF-8"
_BINARY_ATTRIBUTE_HEADERS = ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time")

DROPPED_BY_ROUTE = "dropped_by_route"
MAX_CACHED_DESTINATIONS = 4096


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record to publish."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class RoutedEvent:
    """The records of one event, or the reason why none are published."""

    records: tuple[Record, ...]
    drop_reason: str | None = None


def header_names(content_mode: ContentMode) -> tuple[str, ...]:
    """Return the names of the headers that an event record gets in ``content_mode``."""
    if content_mode == "binary":
        return (*_BINARY_ATTRIBUTE_HEADERS, "content-type", HEADER_SOURCE, HEADER_RECEIVED_AT)
    return ("content-type", HEADER_SOURCE, HEADER_RECEIVED_AT)


def route_event(
    envelope: Envelope, body: bytes, source: Source, routing: RoutingConfig, received_at: datetime
) -> RoutedEvent:
    """Return the records for one authentic, well-formed event.

    No records are returned, with a reason, when the source's allow-lists
    exclude the event or the matching route drops it. ``Router`` gives the
    same result and remembers each event type's destination.
    """
    return _route(envelope, body, source, routing.destination, received_at)


class Router:
    """Router of events with one routing configuration, as ``route_event`` routes them.

    Routes do not change after the configuration is loaded. So the
    destination of each (event type, source) pair is computed once and kept.
    Event types come from senders, so at most ``MAX_CACHED_DESTINATIONS``
    pairs are kept, and the cache starts over when it is full.
    """

    def __init__(self, routing: RoutingConfig) -> None:
        self._routing = routing
        self._destinations: dict[tuple[str, str], Destination] = {}

    def route(
        self, envelope: Envelope, body: bytes, source: Source, received_at: datetime
    ) -> RoutedEvent:
        return _route(envelope, body, source, self._destination, received_at)

    def _destination(self, event: str, source: str) -> Destination:
        key = (event, source)
        destination = self._destinations.get(key)
        if destination is None:
            if len(self._destinations) >= MAX_CACHED_DESTINATIONS:
                self._destinations.clear()
            destination = self._destinations[key] = self._routing.destination(event, source)
        return destination


def _route(
    envelope: Envelope,
    body: bytes,
    source: Source,
    destination_of: Callable[[str, str], Destination],
    received_at: datetime,
) -> RoutedEvent:
    disallow_reason = source.disallow_reason(envelope)
    if disallow_reason is not None:
        return RoutedEvent(records=(), drop_reason=disallow_reason)

    destination = destination_of(envelope.event, source.name)
    if not destination.topics:
        return RoutedEvent(records=(), drop_reason=DROPPED_BY_ROUTE)

    key = record_key(envelope, destination.key_paths)
    relay_headers = (
        (HEADER_SOURCE, source.name.encode()),
        (HEADER_RECEIVED_AT, received_at.isoformat().encode()),
    )
    headers: tuple[tuple[str, bytes], ...]
    if destination.content_mode == "structured":
        value = _structured_value(envelope, body, source)
        headers = (("content-type", STRUCTURED_CONTENT_TYPE), *relay_headers)
    else:
        value = body
        headers = (*_binary_headers(envelope, source), *relay_headers)

    records = tuple(
        Record(topic=topic, key=key, value=value, headers=headers) for topic in destination.topics
    )
    return RoutedEvent(records=records)


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
    poor partition keys. None means a record without a key.
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


def _attributes(envelope: Envelope, source: Source) -> tuple[tuple[str, str], ...]:
    """Return the CloudEvents context attributes of an event, in the spec's order."""
    return (
        ("specversion", "1.0"),
        ("id", envelope.id),
        ("source", f"/tasknation/{source.name}"),
        ("type", envelope.event),
        ("time", envelope.timestamp.isoformat()),
    )


def _binary_headers(envelope: Envelope, source: Source) -> tuple[tuple[str, bytes], ...]:
    """Return the ``_attributes`` as ``ce_*`` headers, and the content type."""
    return (
        ("ce_specversion", b"1.0"),
        ("ce_id", envelope.id.encode()),
        ("ce_source", f"/tasknation/{source.name}".encode()),
        ("ce_type", envelope.event.encode()),
        ("ce_time", envelope.timestamp.isoformat().encode()),
        ("content-type", BINARY_CONTENT_TYPE),
    )


def _structured_value(envelope: Envelope, body: bytes, source: Source) -> bytes:
    """Return a CloudEvents JSON event whose ``data`` is ``body`` byte for byte.

    The body was parsed as a JSON object before, so splicing it in keeps the
    document valid JSON, and numbers wider than 64 bits stay exact.
    """
    attributes: dict[str, str] = dict(_attributes(envelope, source))
    attributes["datacontenttype"] = "application/json"
    head = orjson.dumps(attributes)
    return head[:-1] + b',"data":' + body + b"}"
