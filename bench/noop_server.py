"""The HTTP ceiling: an aiohttp server whose handler only reads the body and responds 200.

It runs with the same aiohttp settings as ``relay serve`` (the same event
loop choice, no access log, the same body size limit) and, with
``--workers N``, the same number of processes sharing the port, so the gap
between the two is the cost of the relay's own stages and of Kafka.

Run ``python -m bench.noop_server --port 8081``.
"""

from __future__ import annotations

import argparse
import sys

from aiohttp import web

from relay.config import DEFAULT_MAX_BODY_BYTES
from relay.event_loop import LOOP_CHOICES, event_loop_factory
from relay.workers import run_workers

_RESPONSE = b'{"status":"published","id":null}'


async def _read_and_respond(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=_RESPONSE, content_type="application/json")


async def _ready(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ready"}', content_type="application/json")


def create_app(path: str, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes)
    app.router.add_post(path, _read_and_respond)
    app.router.add_get("/readyz", _ready)
    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="listen port")
    parser.add_argument("--path", default="/webhooks/tasknation", help="POST path to serve")
    parser.add_argument("--loop", choices=LOOP_CHOICES, default="auto", help="as relay serve")
    parser.add_argument("--workers", type=int, default=1, help="processes (default: 1)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.workers > 1 and not args.worker:
        command = [sys.executable, "-m", "bench.noop_server", *sys.argv[1:], "--worker"]
        return run_workers(lambda index: command, args.workers)
    loop_factory = event_loop_factory(args.loop)
    web.run_app(
        create_app(args.path),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        reuse_port=args.worker or None,
        loop=None if loop_factory is None else loop_factory(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
