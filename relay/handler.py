"""The webhook request handler: runs the stages in order and answers.

read body -> pick source -> verify -> parse envelope -> route -> deliver -> answer

Each stage before delivery is a pure function in its own module; this file
only sequences them, applies the deadline and maps errors to answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
from aiohttp import web

from relay.body import read_body
from relay.config import RelayConfig
from relay.delivery import Delivery, DeliveryOutcome
from relay.envelope import parse_envelope
from relay.errors import BodyReadTimeout, DeliveryUnavailable, InvalidEnvelope, Rejection
from relay.routing import Record, route_dead_letter, route_event
from relay.signature import verify_signature
from relay.sources import SourceTable

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class WebhookHandler:
    """Handles ``POST`` on every configured source path."""

    def __init__(
        self,
        config: RelayConfig,
        sources: SourceTable,
        delivery: Delivery,
        clock: Clock = utc_now,
    ) -> None:
        self._config = config
        self._sources = sources
        self._delivery = delivery
        self._clock = clock

    async def handle(self, request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.server.deadline_s
        try:
            return await self._handle(request, deadline)
        except Rejection as exc:
            return self._reject(request, exc)

    async def _handle(self, request: web.Request, deadline: float) -> web.Response:
        received_at = self._clock()
        source = self._sources.match(request.path)
        if source is None:
            raise web.HTTPNotFound()

        try:
            async with asyncio.timeout_at(deadline):
                body = await read_body(request, self._config.server.max_body_bytes)
        except TimeoutError:
            raise BodyReadTimeout("the body did not arrive within the request deadline") from None

        verify_signature(body, request.headers.get(source.signature_header), source.secrets)

        routing = self._config.routing
        event_id: str | None = None
        records: list[Record]
        try:
            envelope = parse_envelope(body)
        except InvalidEnvelope as exc:
            status = "dead_lettered"
            records = [
                route_dead_letter(body, source, routing, exc.reason, exc.detail, received_at)
            ]
            log.info(
                "dead-lettering an authentic delivery: source=%s reason=%s detail=%s",
                source.name,
                exc.reason,
                exc.detail,
            )
        else:
            event_id = envelope.id
            routed = route_event(envelope, body, source, routing, received_at)
            if routed.drop_reason is not None:
                log.info(
                    "not publishing an authentic event: source=%s event_id=%r event=%r reason=%s",
                    source.name,
                    event_id,
                    envelope.event,
                    routed.drop_reason,
                )
                return _json(
                    200, {"status": "dropped", "id": event_id, "reason": routed.drop_reason}
                )
            status = "published"
            records = list(routed.records)

        try:
            async with asyncio.timeout_at(deadline):
                outcome = await self._delivery.deliver(records, deadline)
        except TimeoutError:
            raise DeliveryUnavailable(
                f"Kafka did not acknowledge within {self._config.server.deadline_s} s "
                f"(event_id={event_id})"
            ) from None

        if outcome is DeliveryOutcome.SPOOLED and status == "published":
            status = "spooled"
        return _json(200, {"status": status, "id": event_id})

    def _reject(self, request: web.Request, exc: Rejection) -> web.Response:
        log.info(
            "rejected delivery: path=%s status=%d reason=%s: %s",
            request.path,
            exc.status,
            exc.reason,
            exc,
        )
        headers = {}
        if exc.retriable:
            headers["Retry-After"] = str(self._config.server.retry_after_s)
        return _json(exc.status, {"error": exc.reason, "message": str(exc)}, headers)


def _json(
    status: int, payload: dict[str, object], headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(payload),
        content_type="application/json",
        headers=headers,
    )
