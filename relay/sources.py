"""Selection of the webhook source that a request path belongs to."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from relay.config import SourceConfig


@dataclass(frozen=True, slots=True)
class Source:
    """One configured webhook endpoint, with its secrets as bytes."""

    name: str
    path: str
    signature_header: str
    secrets: tuple[bytes, ...] = field(repr=False)


class SourceTable:
    """Maps request paths to sources."""

    def __init__(self, configs: Iterable[SourceConfig]) -> None:
        self._by_path = {
            config.path: Source(
                name=config.name,
                path=config.path,
                signature_header=config.signature_header,
                secrets=config.secret_bytes(),
            )
            for config in configs
        }

    def __iter__(self) -> Iterator[Source]:
        return iter(self._by_path.values())

    def match(self, path: str) -> Source | None:
        """Return the source whose path is exactly ``path``, or None."""
        return self._by_path.get(path)
