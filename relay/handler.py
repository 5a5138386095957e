"""The webhook request handler: runs the stages in order and responds.

read body -> pick source -> verify -> parse envelope -> drop duplicate ->
route -> check record size -> deliver -> answer

Each stage before delivery is a pure function or object in its own module;
this file only sequences them, applies the deadline, lets concurrent
deliveries of one event id wait for each other and maps errors to responses.

One timer bounds the whole request: ``_Report.stage`` names the stage that
was waiting when the deadline passed, which picks the error and its status.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson
from aiohttp import web
from prometheus_client import Counter

from relay.body import read_body
from relay.clock import Clock, utc_now
from relay.config import RelayConfig
from relay.dedup import DedupWindow, Verdict
from relay.delivery import Delivery, DeliveryOutcome
from relay.envelope import Envelope, parse_envelope
from relay.errors import BodyReadTimeout, DeliveryUnavailable, InvalidEnvelope, Rejection
from relay.metrics import RelayMetrics, event_type_label
from relay.record_size import dead_letter_oversized, estimated_batch_bytes
from relay.routing import Record, Router, route_dead_letter
from relay.signature import verify_signature
from relay.sources import Source, SourceTable

__all__ = ["Clock", "WebhookHandler", "utc_now"]

log = logging.getLogger(__name__)


class WebhookHandler:
    """Handles ``POST`` on every configured source path."""

    def __init__(
        self,
        config: RelayConfig,
        sources: SourceTable,
        delivery: Delivery,
        dedup: DedupWindow,
        clock: Clock = utc_now,
        metrics: RelayMetrics | None = None,
    ) -> None:
        self._config = config
        self._metrics = metrics or RelayMetrics()
        self._sources = sources
        self._delivery = delivery
        self._dedup = dedup
        self._clock = clock
        self._router = Router(config.routing)
        # Requests being handled. RelayMetrics reads it at each scrape.
        self.in_flight = 0
        # (source name, event id) -> set once the delivery being published ends
        self._publishing: dict[tuple[str, str], asyncio.Event] = {}
        self._counters: dict[tuple[str | None, str | None, int, str], tuple[Counter, ...]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        deadline = asyncio.get_running_loop().time() + self._config.server.deadline_s
        report = _Report()
        self.in_flight += 1
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    response = await self._handle(request, deadline, report)
            except TimeoutError:
                raise self._deadline_error(report) from None
        except Rejection as exc:
            response = self._reject(request, exc, report)
        finally:
            self.in_flight -= 1
        self._count(report, response.status)
        return response

    def _deadline_error(self, report: _Report) -> Rejection:
        """Return the error for a request whose deadline passed while ``report.stage`` waited."""
        deadline_s = self._config.server.deadline_s
        if report.stage is _Stage.BODY:
            return BodyReadTimeout("the body did not arrive within the request deadline")
        if report.stage is _Stage.ADMIT:
            return DeliveryUnavailable(
                f"another delivery of event_id={report.event_id} was still being published "
                f"after {deadline_s} s"
            )
        return DeliveryUnavailable(
            f"Kafka did not acknowledge within {deadline_s} s (event_id={report.event_id})"
        )

    def _count(self, report: _Report, status: int) -> None:
        # Label children are looked up once per combination: labels() costs a lock and a hash.
        key = (report.source, report.event, status, report.outcome)
        counters = self._counters.get(key)
        if counters is None:
            counters = self._counters[key] = self._new_counters(report, status)
        for counter in counters:
            counter.inc()

    def _new_counters(self, report: _Report, status: int) -> tuple[Counter, ...]:
        source = report.source or "unknown"
        event_type = event_type_label(report.event)
        counters = [self._metrics.deliveries.labels(source, event_type, str(status))]
        if report.outcome not in _PUBLISHED_OUTCOMES:
            counters.append(self._metrics.rejections.labels(source, report.outcome))
        if len(self._counters) >= _MAX_CACHED_COUNTERS:
            self._counters.clear()
        return tuple(counters)

    async def _handle(self, request: web.Request, deadline: float, report: _Report) -> web.Response:
        received_at = self._clock()
        source = self._sources.match(request.path)
        if source is None:
            raise web.HTTPNotFound()
        report.source = source.name

        body = await read_body(request, self._config.server.max_body_bytes)
        report.stage = _Stage.ADMIT

        verify_signature(body, _signature_header(request, source), source.secrets)

        try:
            envelope = parse_envelope(body)
        except InvalidEnvelope as exc:
            log.info(
                "dead-lettering an authentic delivery: source=%s reason=%s detail=%s",
                source.name,
                exc.reason,
                exc.detail,
                extra={"source": source.name, "reason": exc.reason},
            )
            routing = self._config.routing
            record = route_dead_letter(body, source, routing, exc.reason, exc.detail, received_at)
            report.stage = _Stage.DELIVER
            status = await self._deliver([record], deadline, event_id=None)
            return report.answer(200, {"status": status, "id": None})

        report.event = envelope.event
        report.event_id = envelope.id
        return await self._handle_event(envelope, body, source, received_at, deadline, report)

    async def _handle_event(
        self,
        envelope: Envelope,
        body: bytes,
        source: Source,
        received_at: datetime,
        deadline: float,
        report: _Report,
    ) -> web.Response:
        verdict = await self._admit(envelope, source)
        report.stage = _Stage.DELIVER
        if verdict is not Verdict.NEW:
            return report.answer(200, {"status": verdict.value, "id": envelope.id})

        done = asyncio.Event()
        self._publishing[(source.name, envelope.id)] = done
        acknowledged = False
        try:
            routed = self._router.route(envelope, body, source, received_at)
            if routed.drop_reason is not None:
                log.info(
                    "not publishing an authentic event: source=%s event_id=%r event=%r reason=%s",
                    source.name,
                    envelope.id,
                    envelope.event,
                    routed.drop_reason,
                )
                return report.answer(
                    200, {"status": "dropped", "id": envelope.id, "reason": routed.drop_reason}
                )
            status = await self._deliver(routed.records, deadline, envelope.id)
            acknowledged = True
        finally:
            if acknowledged:
                self._dedup.acknowledged(source.name, envelope.id)
            else:
                self._dedup.abandoned(source.name, envelope.id)
            del self._publishing[(source.name, envelope.id)]
            done.set()
        return report.answer(200, {"status": status, "id": envelope.id})

    async def _admit(self, envelope: Envelope, source: Source) -> Verdict:
        """Return the dedup verdict, after waiting for a delivery of the same id in flight.

        When the delivery in flight fails, the next waiter to ask is admitted
        as ``NEW`` and publishes the event itself.
        """
        while True:
            verdict = self._dedup.admit(source.name, envelope.id, envelope.timestamp)
            if verdict is not Verdict.IN_FLIGHT:
                break
            await self._publishing[(source.name, envelope.id)].wait()

        if verdict is Verdict.DUPLICATE:
            log.info("dropping a duplicate: source=%s event_id=%r", source.name, envelope.id)
        elif verdict is Verdict.REPLAY:
            log.info(
                "dropping a replay older than dedup.window_s: source=%s event_id=%r timestamp=%s",
                source.name,
                envelope.id,
                envelope.timestamp.isoformat(),
            )
        return verdict

    async def _deliver(
        self, records: Sequence[Record], deadline: float, event_id: str | None
    ) -> str:
        """Publish ``records`` and return the status for the response.

        The caller's timer bounds the wait. At ``deadline`` minus the spool's
        reserve, the spool takes over.
        """
        status = "dead_lettered" if event_id is None else "published"
        checked = []
        for record in records:
            fitting = self._fit(record, event_id)
            if fitting is not record:
                status = "dead_lettered"
            checked.append(fitting)

        outcome = await self._delivery.deliver(checked, deadline)
        if outcome is DeliveryOutcome.SPOOLED and status == "published":
            status = "spooled"
        return status

    def _fit(self, record: Record, event_id: str | None) -> Record:
        """Return ``record``, or its truncated dead-letter stand-in when it cannot be sent."""
        size = estimated_batch_bytes(record)
        limit = self._config.kafka.max_request_size
        if size <= limit:
            return record
        dead_letter_topic = self._config.routing.dead_letter_topic
        log.warning(
            "refusing a record of %d bytes for %s, more than kafka.max_request_size (%d): "
            "event_id=%r; sending a truncated copy to %s instead",
            size,
            record.topic,
            limit,
            event_id,
            dead_letter_topic,
        )
        return dead_letter_oversized(record, size, limit, dead_letter_topic)

    def _reject(self, request: web.Request, exc: Rejection, report: _Report) -> web.Response:
        log.info(
            "rejected delivery: path=%s status=%d reason=%s: %s",
            request.path,
            exc.status,
            exc.reason,
            exc,
            extra={
                "source": report.source,
                "event_id": report.event_id,
                "event_type": report.event,
                "reason": exc.reason,
                "status": exc.status,
            },
        )
        headers = {}
        if exc.retriable:
            headers["Retry-After"] = str(self._config.server.retry_after_s)
        report.outcome = exc.reason
        return _json(exc.status, {"error": exc.reason, "message": str(exc)}, headers)


# Outcomes that put the event in Kafka or the spool; every other outcome counts as a rejection.
_PUBLISHED_OUTCOMES = frozenset({"published", "spooled"})
# Bounds the cache of metric label children; event types come from senders.
_MAX_CACHED_COUNTERS = 4096


class _Stage(enum.Enum):
    """The step a request is waiting on. At the deadline it decides the error status."""

    BODY = "body"
    ADMIT = "admit"
    DELIVER = "deliver"


@dataclass(slots=True)
class _Report:
    """Source, event and outcome of one request, for metrics and log context."""

    source: str | None = None
    event: str | None = None
    event_id: str | None = None
    outcome: str = "unknown"
    stage: _Stage = _Stage.BODY

    def answer(self, status: int, payload: dict[str, object]) -> web.Response:
        """Return the JSON response, recording its ``status`` field as the outcome."""
        self.outcome = str(payload["status"])
        return _json(status, payload)


def _signature_header(request: web.Request, source: Source) -> str | None:
    """Return the signature header, with repeated header lines joined by commas (RFC 9110)."""
    values = request.headers.getall(source.signature_header, [])
    return ",".join(values) if values else None


def _json(
    status: int, payload: dict[str, object], headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(payload),
        content_type="application/json",
        headers=headers,
    )
