"""Realistic, pre-signed TaskNation deliveries for the load generator.

Every delivery has the provider's envelope (``id``, ``event``, ``timestamp``,
``data``) with the fields that TaskNation's payload example shows
(``leadID``, ``businessID``, ``request``, ``customer``) and event-specific
fields beside them. Each body gets a size drawn uniformly from 512 to 4096
bytes, which free-text fields fill. Event ids are unique per run and index,
so a relay that drops duplicates by id publishes every delivery.

Bodies depend only on the seed and the index, so a rerun with the same seed
sends the same bytes apart from the id and the timestamp.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from relay.signature import sign

MIN_BODY_BYTES = 512
MAX_BODY_BYTES = 4096
SIGNATURE_HEADER = "X-TaskNation-Signature"

# Share of each event type in the generated traffic, in percent. Leads and
# messages dominate a marketplace's webhook traffic; every type is present.
EVENT_WEIGHTS: dict[str, int] = {
    "lead.created": 20,
    "lead.updated": 20,
    "lead.expired": 5,
    "message.received": 25,
    "booking.confirmed": 10,
    "booking.cancelled": 5,
    "review.created": 5,
    "payment.received": 10,
}
EVENT_TYPES = tuple(EVENT_WEIGHTS)

_CATEGORIES = (
    "Interior Painting", "House Cleaning", "Plumbing Repair", "Electrical Wiring",
    "Lawn Care", "Roof Repair", "Moving Help", "Appliance Repair", "Carpet Cleaning",
)  # fmt: skip
_PLACES = (
    ("San Jose", "CA", "95110"), ("Austin", "TX", "78701"), ("Denver", "CO", "80202"),
    ("Portland", "OR", "97205"), ("Chicago", "IL", "60601"), ("Atlanta", "GA", "30303"),
)  # fmt: skip
_NAMES = ("John Doe", "Maria Garcia", "Wei Chen", "Aisha Khan", "Liam Murphy", "Sofia Rossi")
_NOTE_TEXT = (
    "the kitchen walls need two coats and the ceiling has a small water stain near the "
    "window please bring drop cloths we have a dog that stays in the backyard during the "
    "day parking is available in the driveway after nine and the gate code is at the front "
    "desk thanks for the quick reply looking forward to the estimate and the schedule"
)
_WORDS = tuple(_NOTE_TEXT.split())
_LEAD_STATUSES = ("responded", "hired", "declined", "archived")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One signed webhook request: what the load generator sends."""

    event_id: str
    event: str
    body: bytes
    signature: str


def make_delivery(run_id: str, index: int, seed: int, secret: bytes, now: datetime) -> Delivery:
    """Build delivery number ``index`` of run ``run_id``, signed with ``secret``."""
    rng = random.Random(seed * 1_000_003 + index)
    event = rng.choices(EVENT_TYPES, weights=tuple(EVENT_WEIGHTS.values()))[0]
    event_id = f"evt_{run_id}_{index:08d}"
    document: dict[str, Any] = {
        "id": event_id,
        "event": event,
        "timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": _DATA_BUILDERS[event](rng),
    }
    target_size = rng.randint(MIN_BODY_BYTES, MAX_BODY_BYTES)
    body = _fill_to_size(document, target_size, rng)
    return Delivery(event_id=event_id, event=event, body=body, signature=sign(body, secret))


def iter_deliveries(
    run_id: str, start: int, count: int, seed: int, secret: bytes
) -> Iterator[Delivery]:
    """Yield ``count`` deliveries numbered from ``start``, timestamped now."""
    now = datetime.now(UTC)
    for index in range(start, start + count):
        yield make_delivery(run_id, index, seed, secret, now)


def vegeta_target(delivery: Delivery, url: str) -> bytes:
    """Return one line of vegeta's JSON target format for ``delivery``."""
    target = {
        "method": "POST",
        "url": url,
        "body": base64.b64encode(delivery.body).decode("ascii"),
        "header": {
            "Content-Type": ["application/json"],
            SIGNATURE_HEADER: [delivery.signature],
        },
    }
    return orjson.dumps(target) + b"\n"


def _fill_to_size(document: dict[str, Any], target_size: int, rng: random.Random) -> bytes:
    """Serialize ``document`` with its ``data.notes`` text grown to ``target_size`` bytes."""
    data = document["data"]
    data["notes"] = ""
    body = orjson.dumps(document)
    missing = target_size - len(body)
    if missing <= 0:
        return body
    # Words are ASCII without characters that JSON escapes, so one character is one byte.
    words = rng.choices(_WORDS, k=missing // 4 + 1)
    data["notes"] = " ".join(words)[:missing]
    return orjson.dumps(document)


def _numeric_id(rng: random.Random) -> str:
    return str(rng.randrange(10**17, 10**18))


def _customer(rng: random.Random) -> dict[str, Any]:
    return {
        "name": rng.choice(_NAMES),
        "phone": f"+1415555{rng.randrange(10**4):04d}",
    }


def _request(rng: random.Random) -> dict[str, Any]:
    city, state, zip_code = rng.choice(_PLACES)
    return {
        "category": rng.choice(_CATEGORIES),
        "location": {"city": city, "state": state, "zip": zip_code},
        "answers": [
            {"question": "When do you need this done?", "answer": "Within a week"},
            {"question": "How many rooms?", "answer": str(rng.randint(1, 6))},
        ],
    }


def _lead_ids(rng: random.Random) -> dict[str, Any]:
    return {"leadID": _numeric_id(rng), "businessID": _numeric_id(rng)}


def _lead_created(rng: random.Random) -> dict[str, Any]:
    return {**_lead_ids(rng), "request": _request(rng), "customer": _customer(rng)}


def _lead_updated(rng: random.Random) -> dict[str, Any]:
    return {
        **_lead_ids(rng),
        "status": rng.choice(_LEAD_STATUSES),
        "previousStatus": "new",
        "request": _request(rng),
    }


def _lead_expired(rng: random.Random) -> dict[str, Any]:
    return {**_lead_ids(rng), "reason": "7-day timeout", "request": _request(rng)}


def _message_received(rng: random.Random) -> dict[str, Any]:
    return {
        **_lead_ids(rng),
        "messageID": _numeric_id(rng),
        "customer": _customer(rng),
        "text": " ".join(rng.choices(_WORDS, k=rng.randint(5, 40))),
    }


def _booking(rng: random.Random) -> dict[str, Any]:
    day = rng.randint(1, 28)
    return {
        **_lead_ids(rng),
        "bookingID": _numeric_id(rng),
        "start": f"2026-03-{day:02d}T09:00:00Z",
        "end": f"2026-03-{day:02d}T12:00:00Z",
        "customer": _customer(rng),
    }


def _booking_cancelled(rng: random.Random) -> dict[str, Any]:
    return {**_booking(rng), "cancelledBy": rng.choice(("customer", "business"))}


def _review_created(rng: random.Random) -> dict[str, Any]:
    return {
        "businessID": _numeric_id(rng),
        "reviewID": _numeric_id(rng),
        "rating": rng.randint(1, 5),
        "customer": {"name": rng.choice(_NAMES)},
        "text": " ".join(rng.choices(_WORDS, k=rng.randint(10, 60))),
    }


def _payment_received(rng: random.Random) -> dict[str, Any]:
    cents = rng.randrange(5_000, 500_000)
    return {
        **_lead_ids(rng),
        "paymentID": _numeric_id(rng),
        "amount": {"value": cents, "currency": "USD"},
        "method": rng.choice(("card", "ach")),
        "fee": {"value": cents // 20, "currency": "USD"},
    }


_DATA_BUILDERS: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    "lead.created": _lead_created,
    "lead.updated": _lead_updated,
    "lead.expired": _lead_expired,
    "message.received": _message_received,
    "booking.confirmed": _booking,
    "booking.cancelled": _booking_cancelled,
    "review.created": _review_created,
    "payment.received": _payment_received,
}
