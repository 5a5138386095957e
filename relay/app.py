"""The aiohttp application: routes, shared state and lifetimes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from relay.config import RECORD_OVERHEAD_BYTES, RelayConfig
from relay.delivery import Delivery, Publisher
from relay.handler import Clock, WebhookHandler, utc_now
from relay.sources import SourceTable
from relay.topics import topic_check

log = logging.getLogger(__name__)

CONFIG_KEY = web.AppKey("config", RelayConfig)
PUBLISHER_KEY = web.AppKey("publisher", Publisher)
DELIVERY_KEY = web.AppKey("delivery", Delivery)


def create_app(config: RelayConfig, clock: Clock = utc_now) -> web.Application:
    """Build the relay application; the producer starts with the application."""
    app = web.Application(client_max_size=config.server.max_body_bytes)
    # The largest spooled delivery is one record of at most the body limit plus headers.
    delivery = Delivery.from_config(
        config.kafka, config.spool, config.server.max_body_bytes + RECORD_OVERHEAD_BYTES
    )
    app[CONFIG_KEY] = config
    app[PUBLISHER_KEY] = delivery.publisher
    app[DELIVERY_KEY] = delivery

    sources = SourceTable(config.sources)
    handler = WebhookHandler(config, sources, delivery, clock)
    for source in sources:
        app.router.add_post(source.path, handler.handle)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)

    app.cleanup_ctx.append(_publisher_lifetime)
    app.cleanup_ctx.append(topic_check(config))
    app.cleanup_ctx.append(_spool_lifetime)
    return app


async def _publisher_lifetime(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG_KEY]
    publisher = app[PUBLISHER_KEY]
    await publisher.start()
    log.info(
        "relay serving %s on %s:%d; %d routes; Kafka at %s",
        ", ".join(source.path for source in config.sources),
        config.server.host,
        config.server.port,
        len(config.routing.routes),
        config.kafka.bootstrap_servers,
    )
    yield
    await publisher.stop(timeout_s=config.server.shutdown_grace_s)


async def _spool_lifetime(app: web.Application) -> AsyncIterator[None]:
    # Opened after the producer starts and closed before it stops, so the
    # forwarder's last sends can still be flushed.
    delivery = app[DELIVERY_KEY]
    await delivery.start_spool()
    yield
    await delivery.stop_spool()


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    delivery = request.app[DELIVERY_KEY]
    report: dict[str, object] = {
        "status": "ready" if delivery.ready else "not_ready",
        "kafka": "connected" if delivery.publisher.connected else "not connected",
    }
    stats = delivery.spool_stats()
    if stats is not None:
        report["spool"] = {
            "depth": stats.depth,
            "oldest_age_s": stats.oldest_age_s,
            "used_bytes": stats.used_bytes,
            "max_bytes": stats.max_bytes,
            "full": stats.full,
        }
    return web.json_response(report, status=200 if delivery.ready else 503)
