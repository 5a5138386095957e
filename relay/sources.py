"""Selection of the webhook source that a request path belongs to, and its allow-lists."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from relay.config import SourceConfig, event_matches
from relay.envelope import Envelope

# Field of a TaskNation payload's `data` that contains the ID of the business.
BUSINESS_ID_FIELD = "businessID"

NOT_ALLOWED_EVENT_TYPE = "event_type_not_allowed"
NOT_ALLOWED_BUSINESS_ID = "business_id_not_allowed"


@dataclass(frozen=True, slots=True)
class Source:
    """One configured webhook endpoint, with its secrets as bytes.

    ``None`` in an allow-list means that every value is allowed.
    """

    name: str
    path: str
    signature_header: str
    secrets: tuple[bytes, ...] = field(repr=False)
    allowed_event_types: tuple[str, ...] | None = None
    allowed_business_ids: frozenset[str] | None = None

    def disallow_reason(self, envelope: Envelope) -> str | None:
        """Return why this source does not publish ``envelope``, or None when it does.

        An event whose ``data.businessID`` is absent, or neither a string nor
        an integer, is not allowed while ``allowed_business_ids`` is set.
        """
        allowed_types = self.allowed_event_types
        if allowed_types is not None and not any(
            event_matches(pattern, envelope.event) for pattern in allowed_types
        ):
            return NOT_ALLOWED_EVENT_TYPE

        allowed_ids = self.allowed_business_ids
        if allowed_ids is not None and _business_id(envelope) not in allowed_ids:
            return NOT_ALLOWED_BUSINESS_ID
        return None


def _business_id(envelope: Envelope) -> str | None:
    value = envelope.data.get(BUSINESS_ID_FIELD)
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


class SourceTable:
    """Maps request paths to sources."""

    def __init__(self, configs: Iterable[SourceConfig]) -> None:
        self._by_path = {
            config.path: Source(
                name=config.name,
                path=config.path,
                signature_header=config.signature_header,
                secrets=config.secret_bytes(),
                allowed_event_types=config.allowed_event_types,
                allowed_business_ids=config.allowed_business_ids,
            )
            for config in configs
        }

    def __iter__(self) -> Iterator[Source]:
        return iter(self._by_path.values())

    def match(self, path: str) -> Source | None:
        """Return the source whose path is exactly ``path``, or None."""
        return self._by_path.get(path)
