"""The HTTP ceiling: an aiohttp server whose handler only reads the body and responds 200.

It runs with the same aiohttp settings as ``relay serve`` (default event
loop, no access log, the same body size limit), so the gap between the two
is the cost of the relay's own stages and of Kafka.

Run ``python -m bench.noop_server --port 8081``.
"""

from __future__ import annotations

import argparse

from aiohttp import web

from relay.config import DEFAULT_MAX_BODY_BYTES

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="listen port")
    parser.add_argument("--path", default="/webhooks/tasknation", help="POST path to serve")
    args = parser.parse_args()
    web.run_app(create_app(args.path), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
