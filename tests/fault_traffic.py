"""Signed webhook traffic for fault tests, recording every answer."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
import orjson

from relay.signature import sign
from tests.conftest import TEST_SECRET


@dataclass(frozen=True)
class Answer:
    """One delivery and how the relay answered it; status 0 is a failed connection."""

    event_id: str
    key: str
    status: int
    outcome: str | None
    elapsed_s: float


def delivery(event_id: str, event: str, key: str) -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps(
        {
            "id": event_id,
            "event": event,
            # The current time, so that relays on the real clock never take it for a replay.
            "timestamp": datetime.now(UTC).isoformat(),
            "data": {"leadID": key, "note": "fault test"},
        }
    )
    return body, {"X-TaskNation-Signature": sign(body, TEST_SECRET.encode())}


@dataclass
class Traffic:
    """Posts deliveries from ``workers`` concurrent senders until ``stop``.

    Event ids are ``<prefix>-<n>`` in sending order; keys rotate over ``keys``.
    """

    url: str
    event: str
    prefix: str
    keys: Sequence[str] = ("lead-a", "lead-b", "lead-c")
    workers: int = 4
    pause_s: float = 0.05
    answers: list[Answer] = field(default_factory=list)
    _counter: itertools.count[int] = field(default_factory=itertools.count)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _running: bool = False

    async def start(self, session: aiohttp.ClientSession) -> None:
        self._running = True
        self._tasks = [asyncio.create_task(self._send_loop(session)) for _ in range(self.workers)]

    async def stop(self) -> None:
        self._running = False
        await asyncio.gather(*self._tasks)

    async def send_one(self, session: aiohttp.ClientSession) -> Answer:
        number = next(self._counter)
        event_id = f"{self.prefix}-{number:06d}"
        key = self.keys[number % len(self.keys)]
        body, headers = delivery(event_id, self.event, key)
        started = time.monotonic()
        try:
            async with session.post(self.url, data=body, headers=headers) as response:
                payload = orjson.loads(await response.read())
                answer = Answer(
                    event_id,
                    key,
                    response.status,
                    payload.get("status"),
                    time.monotonic() - started,
                )
        except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError):
            answer = Answer(event_id, key, 0, None, time.monotonic() - started)
        self.answers.append(answer)
        return answer

    def accepted(self) -> list[Answer]:
        return [answer for answer in self.answers if 200 <= answer.status < 300]

    def count(self, status: int) -> int:
        return sum(1 for answer in self.answers if answer.status == status)

    def accepted_since(self, index: int) -> int:
        return sum(1 for answer in self.answers[index:] if 200 <= answer.status < 300)

    async def wait_accepted_since(self, index: int, timeout_s: float = 60.0) -> None:
        """Wait until a delivery sent after answer ``index`` got 2xx."""
        deadline = time.monotonic() + timeout_s
        while self.accepted_since(index) == 0:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no delivery got 2xx within {timeout_s} s; "
                    f"statuses since: {[answer.status for answer in self.answers[index:]][-20:]}"
                )
            await asyncio.sleep(0.1)

    async def _send_loop(self, session: aiohttp.ClientSession) -> None:
        while self._running:
            await self.send_one(session)
            await asyncio.sleep(self.pause_s)


def missing_ids(accepted: Sequence[Answer], seen: Sequence[str]) -> list[str]:
    seen_set = set(seen)
    return [answer.event_id for answer in accepted if answer.event_id not in seen_set]


def first_occurrences(seen: Sequence[str]) -> list[str]:
    """Return ``seen`` without repeats, keeping the first position of each id."""
    return list(dict.fromkeys(seen))
