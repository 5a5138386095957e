"""``relay subscribe``: register the relay's public URL as a TaskNation webhook endpoint.

TaskNation's API takes ``POST /api/v2/webhooks`` with a Bearer access token
and the JSON object ``{"url", "events", "businessID", "secret"}``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from yarl import URL

from relay import __version__
from relay.config import RelayConfig, SourceConfig, load_config
from relay.errors import ConfigError
from relay.tools.common import (
    DEFAULT_CONFIG_PATH,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    ToolError,
    add_secret_arguments,
    positive_float,
    read_secret,
    read_secret_file,
    run_async,
    run_command,
)
from relay.tools.payloads import routed_event_types

EXIT_UNAUTHORIZED = 4
API_URL_ENV = "TASKNATION_API_URL"
DEFAULT_TOKEN_ENV = "TASKNATION_ACCESS_TOKEN"
WEBHOOKS_PATH = "/api/v2/webhooks"
MAX_RESPONSE_CHARS = 1000
REDACTED = "***"

DESCRIPTION = """\
Register the relay's public URL with TaskNation (POST /api/v2/webhooks with a
Bearer token), so that TaskNation sends the events to the relay. The request
carries the URL (--public-url followed by the source's path), the business
ID, the source's webhook secret and the event types that the routing
configuration publishes.
"""

EPILOG = f"""\
The API base URL has no default: pass --api-url or set {API_URL_ENV}. An
http:// API URL is accepted for loopback hosts only, because the request
carries the access token and the webhook secret.

exit status:
  0  TaskNation registered the webhook (2xx), or --dry-run
  1  TaskNation rejected the request (4xx other than 401, or a redirect)
  2  invalid arguments or configuration, or a missing token or secret
  3  the request timed out or the connection failed, or TaskNation failed (5xx);
     retry later
  4  TaskNation rejected the access token (401)
"""


@dataclass(frozen=True, slots=True)
class Registration:
    """One registration request; ``token`` and ``secret`` never appear in its ``repr``."""

    endpoint: str
    url: str
    events: list[str]
    business_id: str
    token: str = field(repr=False)
    secret: str = field(repr=False)

    def body(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "events": self.events,
            "businessID": self.business_id,
            "secret": self.secret,
        }

    def redact(self, text: str) -> str:
        """Return ``text`` with every occurrence of the token and the secret replaced."""
        for value in (self.token, self.secret):
            text = text.replace(value, REDACTED)
        return text


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "subscribe",
        help="register the relay's public URL with TaskNation's webhook API",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--public-url",
        required=True,
        metavar="URL",
        help="base URL at which TaskNation reaches the relay, such as https://hooks.example.com",
    )
    parser.add_argument("--business-id", required=True, metavar="ID", help="TaskNation business ID")
    parser.add_argument(
        "--api-url",
        default=os.environ.get(API_URL_ENV),
        metavar="URL",
        help=f"TaskNation API base URL (default: ${API_URL_ENV}; no built-in default)",
    )
    _add_credential_arguments(parser)
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG_PATH,
        metavar="FILE",
        help=f"relay configuration (default: {DEFAULT_CONFIG_PATH})",
    )
    parser.add_argument(
        "--source", metavar="NAME", help="configured source to register (default: the only one)"
    )
    _add_request_arguments(parser)
    parser.set_defaults(run_tool=run)


def _add_request_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout-s",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="time allowed for the request, from connecting to the end of the response "
        "(default: 10)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the request with the token and secret masked instead of sending it",
    )


def _add_credential_arguments(parser: argparse.ArgumentParser) -> None:
    tokens = parser.add_mutually_exclusive_group()
    tokens.add_argument(
        "--token-env",
        default=DEFAULT_TOKEN_ENV,
        metavar="VAR",
        help=f"environment variable with the API access token (default: {DEFAULT_TOKEN_ENV})",
    )
    tokens.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="file with the API access token; one trailing newline is stripped",
    )
    # Without either option the source's first secret from the configuration is registered.
    add_secret_arguments(parser, default_env=None)


def run(args: argparse.Namespace) -> int:
    return run_command("subscribe", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    registration = registration_from_args(args)
    if args.dry_run:
        _print_dry_run(registration, sys.stdout)
        return EXIT_OK
    return run_async(subscribe(registration, args.timeout_s, sys.stdout))


def registration_from_args(args: argparse.Namespace) -> Registration:
    """Build the request from the arguments and the configuration, or raise ``ToolError``."""
    endpoint = _webhooks_endpoint(args.api_url)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise ToolError(str(exc)) from None
    source = _pick_source(config, args.source)
    events = routed_event_types(config, source)
    if not events:
        raise ToolError(
            f"the routing publishes no TaskNation event type from source {source.name!r}, "
            "so there is nothing to subscribe to; check routing.routes and the source's "
            "allowed_event_types"
        )
    return Registration(
        endpoint=endpoint,
        url=_public_webhook_url(args.public_url, source.path),
        events=events,
        business_id=_business_id(args.business_id),
        token=_read_token(args),
        secret=_pick_secret(args, source),
    )


def _webhooks_endpoint(api_url: str | None) -> str:
    if not api_url:
        raise ToolError(f"no TaskNation API URL; pass --api-url URL or set {API_URL_ENV}")
    url = URL(api_url)
    if url.scheme not in ("http", "https") or not url.host:
        raise ToolError(f"--api-url {api_url!r}: expected an absolute https:// URL")
    if url.scheme == "http" and not _is_loopback(url.host):
        raise ToolError(
            f"--api-url {api_url!r}: use https://, because the request carries the access "
            "token and the webhook secret (http:// is accepted for loopback hosts only)"
        )
    return str(url).rstrip("/") + WEBHOOKS_PATH


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _pick_source(config: RelayConfig, name: str | None) -> SourceConfig:
    names = [source.name for source in config.sources]
    if name is None:
        if len(config.sources) > 1:
            raise ToolError(f"the configuration has several sources; pass --source, one of {names}")
        return config.sources[0]
    for source in config.sources:
        if source.name == name:
            return source
    raise ToolError(f"--source {name!r} is not configured; configured sources: {names}")


def _public_webhook_url(public_url: str, path: str) -> str:
    url = URL(public_url)
    if url.scheme not in ("http", "https") or not url.host or url.query_string or url.fragment:
        raise ToolError(
            f"--public-url {public_url!r}: expected an absolute http(s) URL without query, "
            "such as https://hooks.example.com"
        )
    return str(url).rstrip("/") + path


def _business_id(value: str) -> str:
    business_id = value.strip()
    if not business_id:
        raise ToolError("--business-id must not be empty")
    return business_id


def _read_token(args: argparse.Namespace) -> str:
    if args.token_file is not None:
        return read_secret_file(args.token_file, "--token-file").decode()
    token = os.environ.get(args.token_env, "")
    if not token:
        raise ToolError(
            f"environment variable {args.token_env} is not set or empty; export the "
            "TaskNation access token in it, or pass --token-env VAR or --token-file FILE"
        )
    return token


def _pick_secret(args: argparse.Namespace, source: SourceConfig) -> str:
    """Return the secret to register, which must be one that the relay accepts."""
    accepted = source.secret_bytes()
    if args.secret_env is None and args.secret_file is None:
        return accepted[0].decode()
    secret = read_secret(args)
    if secret not in accepted:
        # The relay would reject every delivery signed with this secret with 401, and
        # TaskNation disables a webhook after 5 failed deliveries.
        raise ToolError(
            f"the given secret is not one of source {source.name!r}'s secrets in the "
            "configuration, so the relay would reject every delivery; add it to the source first"
        )
    return secret.decode()


def _print_dry_run(registration: Registration, out: TextIO) -> None:
    body = json.dumps(registration.body(), indent=2)
    out.write(f"POST {registration.endpoint}\n")
    out.write(f"Authorization: Bearer {REDACTED}\n")
    out.write("Content-Type: application/json\n\n")
    out.write(registration.redact(body) + "\n")


async def subscribe(registration: Registration, timeout_s: float, out: TextIO) -> int:
    """Send the registration, print the result and return the exit status."""
    headers = {
        "Authorization": f"Bearer {registration.token}",
        "User-Agent": f"relay-subscribe/{__version__}",
    }
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.post(
                registration.endpoint,
                json=registration.body(),
                headers=headers,
                # A redirect could carry the token and the secret to another host.
                allow_redirects=False,
            ) as response,
        ):
            text = registration.redact(await response.text(errors="replace"))
            return _report(registration, response.status, text, out)
    except TimeoutError:
        raise ToolError(
            f"the request to {registration.endpoint} timed out after {timeout_s:g} s; "
            "retry later or raise --timeout-s",
            EXIT_UNAVAILABLE,
        ) from None
    except aiohttp.ClientError as exc:
        raise ToolError(
            f"cannot reach {registration.endpoint}: {registration.redact(str(exc))}",
            EXIT_UNAVAILABLE,
        ) from None


def _report(registration: Registration, status: int, text: str, out: TextIO) -> int:
    """Print what the response means and return the exit status for ``status``."""
    detail = text.strip()[:MAX_RESPONSE_CHARS]
    if 200 <= status < 300:
        out.write(
            f"registered {registration.url} for business {registration.business_id}, "
            f"events {', '.join(registration.events)} (HTTP {status})\n"
        )
        if detail:
            out.write(f"response: {detail}\n")
        return EXIT_OK
    if status == 401:
        message = "TaskNation rejected the access token (HTTP 401); check the token and retry"
        code = EXIT_UNAUTHORIZED
    elif 300 <= status < 400:
        message = (
            f"TaskNation responded with a redirect (HTTP {status}); pass the final URL as --api-url"
        )
        code = EXIT_FAILED
    elif status < 500:
        message = f"TaskNation rejected the registration (HTTP {status}); fix the request"
        code = EXIT_FAILED
    else:
        message = f"TaskNation failed to handle the registration (HTTP {status}); retry later"
        code = EXIT_UNAVAILABLE
    if detail:
        message += f"\nresponse: {detail}"
    raise ToolError(message, code)
