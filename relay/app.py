"""The aiohttp application: routes, shared state and lifetimes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from relay.config import RelayConfig
from relay.delivery import Publisher
from relay.handler import Clock, WebhookHandler, utc_now
from relay.sources import SourceTable
from relay.topics import topic_check

log = logging.getLogger(__name__)

CONFIG_KEY = web.AppKey("config", RelayConfig)
PUBLISHER_KEY = web.AppKey("publisher", Publisher)


def create_app(config: RelayConfig, clock: Clock = utc_now) -> web.Application:
    """Build the relay application; the producer starts with the application."""
    app = web.Application(client_max_size=config.server.max_body_bytes)
    publisher = Publisher(config.kafka)
    app[CONFIG_KEY] = config
    app[PUBLISHER_KEY] = publisher

    sources = SourceTable(config.sources)
    handler = WebhookHandler(config, sources, publisher, clock)
    for source in sources:
        app.router.add_post(source.path, handler.handle)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)

    app.cleanup_ctx.append(_publisher_lifetime)
    app.cleanup_ctx.append(topic_check(config))
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


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    if request.app[PUBLISHER_KEY].connected:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "not_ready", "kafka": "not connected"}, status=503)
