"""Typed configuration of the relay, loaded and validated in one place.

The YAML file is read once at start. Strings may contain ``${VAR}`` or
``${VAR:-default}``, replaced by environment variables before validation;
``$${`` stands for a literal ``${``. Unknown keys are errors. Secrets are
kept as ``SecretStr`` so they never appear in ``repr``, logs or errors.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from relay.errors import ConfigError

# Kafka's default broker `message.max.bytes` is 1048588 and aiokafka's default
# `max_request_size` is 1048576. A body limit of half that leaves room for the
# record headers and the batch overhead, so an accepted body always fits.
DEFAULT_MAX_BODY_BYTES = 512 * 1024
DEFAULT_MAX_REQUEST_SIZE = 1024 * 1024
RECORD_OVERHEAD_BYTES = 16 * 1024

# TaskNation retries a failed delivery after 1 min, 5 min, 30 min, 2 h and 24 h,
# so the last attempt comes 95760 s (26.6 h) after the first one.
RETRY_SCHEDULE_S = (1 + 5 + 30 + 120 + 1440) * 60
DEFAULT_DEDUP_WINDOW_S = 27 * 3600

_ENV_REFERENCE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_WORDS = ("secret", "password", "token")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServerConfig(_Model):
    """The HTTP listener and the limits of one request."""

    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024)
    deadline_s: float = Field(default=5.0, gt=0, le=60)
    retry_after_s: int = Field(default=60, ge=1)
    # An idle connection, or one whose request headers have not all arrived, is
    # closed after this time. Load balancers want it above their own idle timeout.
    keepalive_timeout_s: float = Field(default=75.0, gt=0)
    # On SIGTERM the relay reports not ready and keeps serving this long before
    # it stops accepting, so load balancers can stop sending to it first.
    shutdown_drain_s: float = Field(default=0.0, ge=0, le=300)
    # After it stops accepting, the relay waits this long for in-flight requests,
    # then as long again for the producer to flush.
    shutdown_grace_s: float = Field(default=10.0, ge=0)

    @model_validator(mode="after")
    def _check_grace(self) -> ServerConfig:
        if self.shutdown_grace_s < self.deadline_s:
            raise ValueError(
                f"shutdown_grace_s ({self.shutdown_grace_s}) must be at least deadline_s "
                f"({self.deadline_s}), so that requests in flight at shutdown are answered; "
                "raise server.shutdown_grace_s"
            )
        return self


class KafkaConfig(_Model):
    """The producer's connection and batching settings; `acks=all` is fixed."""

    bootstrap_servers: str
    client_id: str = "tasknation-relay"
    linger_ms: int = Field(default=5, ge=0, le=1000)
    max_request_size: int = Field(default=DEFAULT_MAX_REQUEST_SIZE, ge=1024)
    request_timeout_ms: int = Field(default=30_000, ge=1000)
    metadata_max_age_ms: int = Field(default=300_000, ge=1000)
    reconnect_backoff_s: float = Field(default=1.0, gt=0)

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_servers(cls, value: str) -> str:
        servers = [server.strip() for server in value.split(",") if server.strip()]
        if not servers:
            raise ValueError("expected one or more host:port pairs separated by commas")
        for server in servers:
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port, got {server!r}")
        return ",".join(servers)


class RoutingConfig(_Model):
    """Where records go and which payload fields become the record key."""

    topic_prefix: str = "tasknation."
    unrouted_topic: str = "tasknation.unrouted"
    dead_letter_topic: str = "tasknation.deadletter"
    key_paths: tuple[str, ...] = ("data.leadID", "data.businessID", "id")


class DedupConfig(_Model):
    """Dropping of repeated deliveries of one event id.

    ``window_s`` covers TaskNation's whole retry schedule, so it may not be
    shorter than ``RETRY_SCHEDULE_S``: a retry that arrives after the window
    would be taken for a replay and never published. Each remembered id costs
    about 180 bytes (CPython 3.11, 64-bit), so the default cap of 500000 ids
    takes about 90 MB and covers 27 h of traffic up to about 5 events/s.
    """

    window_s: float = Field(default=DEFAULT_DEDUP_WINDOW_S, ge=RETRY_SCHEDULE_S)
    max_ids: int = Field(default=500_000, ge=1)


class SourceConfig(_Model):
    """One webhook endpoint: its path, signature header and valid secrets."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    path: str = Field(pattern=r"^/[A-Za-z0-9/_.-]*$")
    signature_header: str = Field(default="X-TaskNation-Signature", min_length=1)
    secrets: tuple[SecretStr, ...] = Field(min_length=1)

    @field_validator("secrets", mode="before")
    @classmethod
    def _resolve_secrets(cls, value: object) -> object:
        if not isinstance(value, list):
            return value
        return [_resolve_secret(entry) for entry in value]

    @field_validator("secrets")
    @classmethod
    def _check_secrets(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for secret in value:
            if not secret.get_secret_value():
                raise ValueError("a webhook secret must not be empty")
        return value

    def secret_bytes(self) -> tuple[bytes, ...]:
        return tuple(secret.get_secret_value().encode() for secret in self.secrets)


class RelayConfig(_Model):
    """The whole relay configuration, as validated from one YAML file."""

    server: ServerConfig = ServerConfig()
    kafka: KafkaConfig
    routing: RoutingConfig = RoutingConfig()
    dedup: DedupConfig = DedupConfig()
    sources: tuple[SourceConfig, ...] = Field(min_length=1)
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")

    @model_validator(mode="after")
    def _check_consistency(self) -> RelayConfig:
        for field in ("name", "path"):
            values = [getattr(source, field) for source in self.sources]
            duplicates = sorted({value for value in values if values.count(value) > 1})
            if duplicates:
                raise ValueError(f"sources: each {field} must be unique, repeated: {duplicates}")

        needed = self.server.max_body_bytes + RECORD_OVERHEAD_BYTES
        if self.kafka.max_request_size < needed:
            raise ValueError(
                f"kafka.max_request_size ({self.kafka.max_request_size}) must be at least "
                f"server.max_body_bytes + {RECORD_OVERHEAD_BYTES} ({needed}); "
                "raise kafka.max_request_size or lower server.max_body_bytes"
            )
        return self


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> RelayConfig:
    """Read, interpolate and validate the YAML file at ``path``.

    Raises ``ConfigError`` naming the file, the YAML path of the offending key
    and what is expected.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file: {exc.strerror}") from None
    return parse_config(text, source_name=str(path), environ=environ)


def parse_config(
    text: str, source_name: str = "<config>", environ: Mapping[str, str] | None = None
) -> RelayConfig:
    """Validate configuration YAML given as text; see ``load_config``."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source_name}: invalid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{source_name}: expected a mapping at the top level")

    environment = os.environ if environ is None else environ
    document = _interpolate(document, environment, source_name, "")
    try:
        return RelayConfig.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, source_name)) from None


def _interpolate(value: Any, environ: Mapping[str, str], source_name: str, path: str) -> Any:
    if isinstance(value, dict):
        return {
            key: _interpolate(item, environ, source_name, _join(path, str(key)))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [
            _interpolate(item, environ, source_name, f"{path}[{index}]")
            for index, item in enumerate(value)
        ]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        escaped, name, default = match.groups()
        if escaped:
            return match.group(0)[1:]
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{source_name}: {path}: environment variable {name} is not set; "
            f"set it or write ${{{name}:-default}}"
        )

    return _ENV_REFERENCE.sub(replace, value)


def _resolve_secret(entry: object) -> object:
    """Turn ``{env: NAME}`` or ``{file: PATH}`` into the secret string it names."""
    if not isinstance(entry, dict):
        return entry
    if set(entry) == {"env"} and isinstance(entry["env"], str):
        name = entry["env"]
        if name not in os.environ:
            raise ValueError(f"environment variable {name} is not set")
        return os.environ[name]
    if set(entry) == {"file"} and isinstance(entry["file"], str):
        try:
            content = Path(entry["file"]).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read secret file {entry['file']}: {exc.strerror}") from None
        # Files written by editors and `echo` end with one newline that is not part of the secret.
        return content[:-1] if content.endswith("\n") else content
    raise ValueError("expected a string, {env: NAME} or {file: PATH}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe_validation_error(exc: ValidationError, source_name: str) -> str:
    lines = [f"{source_name}: invalid configuration:"]
    for error in exc.errors():
        location = ""
        for part in error["loc"]:
            location = f"{location}[{part}]" if isinstance(part, int) else _join(location, part)
        message = error["msg"].removeprefix("Value error, ")
        line = f"  {location or '(top level)'}: {message}"
        is_secret = any(word in location.lower() for word in _SECRET_WORDS)
        if error["type"] not in ("missing", "value_error") and not is_secret:
            line += f" (got {error['input']!r:.80})"
        lines.append(line)
    return "\n".join(lines)
