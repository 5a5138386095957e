"""The aiohttp application: routes, shared state, lifetimes and graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator

from aiohttp import web

from relay.clock import Clock, utc_now
from relay.config import RelayConfig
from relay.dedup import DedupWindow
from relay.delivery import Publisher
from relay.handler import WebhookHandler
from relay.sources import SourceTable

log = logging.getLogger(__name__)

CONFIG_KEY = web.AppKey("config", RelayConfig)
PUBLISHER_KEY = web.AppKey("publisher", Publisher)
DEDUP_KEY = web.AppKey("dedup", DedupWindow)
# Set when shutdown begins: /readyz answers 503 and every answer closes its connection.
STOPPING_KEY = web.AppKey("stopping", asyncio.Event)


def create_app(config: RelayConfig, clock: Clock = utc_now) -> web.Application:
    """Build the relay application; the producer starts with the application."""
    app = web.Application(client_max_size=config.server.max_body_bytes)
    publisher = Publisher(config.kafka)
    dedup = DedupWindow(config.dedup, clock)
    app[CONFIG_KEY] = config
    app[PUBLISHER_KEY] = publisher
    app[DEDUP_KEY] = dedup
    app[STOPPING_KEY] = asyncio.Event()

    sources = SourceTable(config.sources)
    handler = WebhookHandler(config, sources, publisher, dedup, clock)
    for source in sources:
        app.router.add_post(source.path, handler.handle)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)

    app.on_response_prepare.append(_close_connection_when_stopping)
    app.cleanup_ctx.append(_publisher_lifetime)
    return app


async def serve(config: RelayConfig, clock: Clock = utc_now) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully.

    Shutdown: report not ready and keep serving for ``shutdown_drain_s``;
    stop accepting connections and close idle ones; wait up to
    ``shutdown_grace_s`` for requests in flight; flush and stop the producer
    within ``shutdown_grace_s`` more.
    """
    server = config.server
    app = create_app(config, clock)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        keepalive_timeout=server.keepalive_timeout_s,
        shutdown_timeout=server.shutdown_grace_s,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, server.host, server.port)
        await site.start()
        signal_name = await _wait_for_stop_signal()

        app[STOPPING_KEY].set()
        log.info(
            "received %s: not ready; serving %.1f s more, then up to %.1f s for requests "
            "in flight and up to %.1f s for the producer",
            signal_name,
            server.shutdown_drain_s,
            server.shutdown_grace_s,
            server.shutdown_grace_s,
        )
        await asyncio.sleep(server.shutdown_drain_s)
    finally:
        await runner.cleanup()
    log.info("relay stopped")


async def _wait_for_stop_signal() -> str:
    loop = asyncio.get_running_loop()
    received: asyncio.Future[str] = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        name = signal.Signals(signum).name
        loop.add_signal_handler(signum, _resolve_once, received, name)
    try:
        return await received
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def _resolve_once(future: asyncio.Future[str], value: str) -> None:
    if not future.done():
        future.set_result(value)


async def _publisher_lifetime(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG_KEY]
    publisher = app[PUBLISHER_KEY]
    await publisher.start()
    log.info(
        "relay serving %s on %s:%d; topics %s<event>; Kafka at %s",
        ", ".join(source.path for source in config.sources),
        config.server.host,
        config.server.port,
        config.routing.topic_prefix,
        config.kafka.bootstrap_servers,
    )
    yield
    await publisher.stop(timeout_s=config.server.shutdown_grace_s)


async def _close_connection_when_stopping(
    request: web.Request, response: web.StreamResponse
) -> None:
    # `Connection: close` tells the client not to send another request on a
    # connection that the relay is about to close.
    if request.app[STOPPING_KEY].is_set():
        response.force_close()


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    if request.app[STOPPING_KEY].is_set():
        return web.json_response({"status": "shutting_down"}, status=503)
    if request.app[PUBLISHER_KEY].connected:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "not_ready", "kafka": "not connected"}, status=503)
