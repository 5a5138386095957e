"""Sample TaskNation event payloads and ``--set`` overrides for ``relay send``.

Every sample has TaskNation's envelope: ``id``, ``event``, ``timestamp``
(RFC 3339 UTC with a ``Z`` suffix) and ``data`` with ``leadID`` and
``businessID`` as decimal strings.

NOTE: TaskNation documents the ``data`` fields of ``lead.created`` only. The
``data`` fields of the other seven event types are plausible examples built
on the same conventions, not the provider's schema.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from relay.config import TASKNATION_EVENT_TYPES, RelayConfig, SourceConfig
from relay.tools.common import ToolError

EVENT_TYPES = TASKNATION_EVENT_TYPES

Document = dict[str, Any]
_DataBuilder = Callable[["_Ids", datetime], Document]


@dataclass(frozen=True, slots=True)
class _Ids:
    """Identifiers shared by the fields of one sample."""

    lead: str
    business: str
    other: str


@dataclass(frozen=True, slots=True)
class Override:
    """One ``--set PATH=VALUE`` (``value`` is parsed JSON) or ``--unset PATH`` (``remove``)."""

    path: tuple[str, ...]
    value: Any = None
    remove: bool = False


def routed_event_types(config: RelayConfig, source: SourceConfig) -> list[str]:
    """Return the TaskNation event types that ``source`` accepts and a route publishes.

    Event types that a route drops, that no route matches (they would go to
    the unrouted topic) or that the source's allow-list rejects are left out.
    """
    events = []
    for event in EVENT_TYPES:
        if not source.allows_event_type(event):
            continue
        destination = config.routing.destination(event, source.name)
        if destination.route_index is not None and destination.topics:
            events.append(event)
    return events


def format_timestamp(moment: datetime) -> str:
    """Return ``moment`` in TaskNation's timestamp form, ``2026-02-15T10:30:00Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_event_id(rng: random.Random) -> str:
    return f"evt_{rng.getrandbits(64):016x}"


def sample_payload(event: str, now: datetime, rng: random.Random) -> Document:
    """Return a realistic payload for ``event`` with a new ``id`` and ``timestamp`` ``now``."""
    builder = _BUILDERS.get(event)
    if builder is None:
        raise ToolError(f"unknown event type {event!r}; expected one of: {', '.join(EVENT_TYPES)}")
    ids = _Ids(lead=_decimal_id(rng), business=_decimal_id(rng), other=_decimal_id(rng))
    return {
        "id": new_event_id(rng),
        "event": event,
        "timestamp": format_timestamp(now),
        "data": builder(ids, now),
    }


def complete_envelope(document: Document, now: datetime, rng: random.Random) -> Document:
    """Return a copy of ``document`` with a new ``id`` and ``timestamp`` where they are absent."""
    completed = dict(document)
    completed.setdefault("id", new_event_id(rng))
    completed.setdefault("timestamp", format_timestamp(now))
    return completed


def parse_override(text: str) -> Override:
    """Parse ``PATH=VALUE``; VALUE is read as JSON where valid and as a string otherwise."""
    path_text, separator, value_text = text.partition("=")
    if not separator:
        raise ToolError(f"--set {text!r}: expected PATH=VALUE, for example data.rating=4")
    path = parse_path(path_text, "--set")
    try:
        value = json.loads(value_text)
    except ValueError:
        value = value_text
    return Override(path=path, value=value)


def parse_path(text: str, option: str) -> tuple[str, ...]:
    """Split a dotted path such as ``data.request.category`` into its parts."""
    parts = tuple(text.split("."))
    if not text or any(not part for part in parts):
        raise ToolError(f"{option} {text!r}: expected a dotted path such as data.request.category")
    return parts


def apply_overrides(document: Document, overrides: Sequence[Override]) -> Document:
    """Return a deep copy of ``document`` with ``overrides`` applied in order.

    ``--set`` creates missing objects on the way; a number indexes into an
    array. Raises ``ToolError`` for a path that runs through a scalar, an
    index outside an array, or an ``--unset`` path that does not exist.
    """
    result: Document = json.loads(json.dumps(document))
    for override in overrides:
        parent = _walk_to_parent(result, override)
        _assign(parent, override)
    return result


def _walk_to_parent(document: Document, override: Override) -> Any:
    current: Any = document
    for depth, part in enumerate(override.path[:-1]):
        container = ".".join(override.path[:depth]) or "the payload"
        if isinstance(current, list):
            current = current[_list_index(current, part, container)]
        elif isinstance(current, dict):
            if part not in current:
                if override.remove:
                    raise ToolError(
                        f"--unset: {'.'.join(override.path[: depth + 1])} does not exist"
                    )
                current[part] = {}
            current = current[part]
        else:
            raise ToolError(
                f"cannot set {'.'.join(override.path)}: {container} is not an object or array"
            )
    return current


def _assign(parent: Any, override: Override) -> None:
    name = ".".join(override.path)
    last = override.path[-1]
    if isinstance(parent, list):
        index = _list_index(parent, last, ".".join(override.path[:-1]))
        if override.remove:
            del parent[index]
        else:
            parent[index] = override.value
    elif isinstance(parent, dict):
        if override.remove:
            if last not in parent:
                raise ToolError(f"--unset: {name} does not exist")
            del parent[last]
        else:
            parent[last] = override.value
    else:
        parent_name = ".".join(override.path[:-1])
        raise ToolError(f"cannot set {name}: {parent_name} is not an object or array")


def _list_index(array: list[Any], part: str, container: str) -> int:
    if not part.isdigit() or int(part) >= len(array):
        raise ToolError(f"{container}: expected an index below {len(array)}, got {part!r}")
    return int(part)


def _decimal_id(rng: random.Random) -> str:
    # The IDs in TaskNation's documented sample are 18-digit decimal strings.
    return str(rng.randrange(10**17, 10**18))


def _lead_created(ids: _Ids, now: datetime) -> Document:
    return {
        "leadID": ids.lead,
        "businessID": ids.business,
        "request": {
            "category": "Interior Painting",
            "location": {"city": "San Jose", "state": "CA", "zip": "95110"},
        },
        "customer": {"name": "John Doe", "phone": "+14155550199"},
    }


def _lead_updated(ids: _Ids, now: datetime) -> Document:
    return {
        "leadID": ids.lead,
        "businessID": ids.business,
        "status": "hired",
        "previousStatus": "responded",
        "changedBy": "customer",
    }


def _lead_expired(ids: _Ids, now: datetime) -> Document:
    return {
        "leadID": ids.lead,
        "businessID": ids.business,
        "status": "expired",
        "createdAt": format_timestamp(now - timedelta(days=7)),
        "reason": "no_hire_within_7_days",
    }


def _message_received(ids: _Ids, now: datetime) -> Document:
    return {
        "leadID": ids.lead,
        "businessID": ids.business,
        "messageID": ids.other,
        "customer": {"name": "John Doe"},
        "text": "Hi, are you available next Tuesday morning?",
        "sentAt": format_timestamp(now),
    }


def _booking_confirmed(ids: _Ids, now: datetime) -> Document:
    start = (now + timedelta(days=3)).replace(hour=16, minute=0, second=0, microsecond=0)
    return {
        "bookingID": ids.other,
        "leadID": ids.lead,
        "businessID": ids.business,
        "appointment": {
            "start": format_timestamp(start),
            "end": format_timestamp(start + timedelta(hours=2)),
        },
        "location": {"city": "San Jose", "state": "CA", "zip": "95110"},
        "customer": {"name": "John Doe", "phone": "+14155550199"},
    }


def _booking_cancelled(ids: _Ids, now: datetime) -> Document:
    return {
        "bookingID": ids.other,
        "leadID": ids.lead,
        "businessID": ids.business,
        "cancelledBy": "customer",
        "reason": "Schedule conflict",
    }


def _review_created(ids: _Ids, now: datetime) -> Document:
    return {
        "reviewID": ids.other,
        "leadID": ids.lead,
        "businessID": ids.business,
        "rating": 5,
        "text": "Quick, tidy and friendly. Would hire again.",
        "customer": {"name": "John Doe"},
    }


def _payment_received(ids: _Ids, now: datetime) -> Document:
    return {
        "paymentID": ids.other,
        "leadID": ids.lead,
        "businessID": ids.business,
        "amount": {"value": "450.00", "currency": "USD"},
        "method": "card",
    }


_BUILDERS: dict[str, _DataBuilder] = {
    "lead.created": _lead_created,
    "lead.updated": _lead_updated,
    "lead.expired": _lead_expired,
    "message.received": _message_received,
    "booking.confirmed": _booking_confirmed,
    "booking.cancelled": _booking_cancelled,
    "review.created": _review_created,
    "payment.received": _payment_received,
}
