"""Typed configuration of the relay, loaded and validated in one place.

The YAML file is read once at start. Strings may contain ``${VAR}`` or
``${VAR:-default}``, replaced by environment variables before validation;
``$${`` stands for a literal ``${``. Unknown keys are errors. Secrets are
kept as ``SecretStr`` so they never appear in ``repr``, logs or errors.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from relay.errors import ConfigError
from relay.kafka_security import create_ssl_context

# Kafka's default broker `message.max.bytes` is 1048588 and aiokafka's default
# `max_request_size` is 1048576. A body limit of half that leaves room for the
# record headers and the batch overhead, so an accepted body always fits.
DEFAULT_MAX_BODY_BYTES = 512 * 1024
DEFAULT_MAX_REQUEST_SIZE = 1024 * 1024
RECORD_OVERHEAD_BYTES = 16 * 1024

# The event types that TaskNation documents. `check-config` and `topics ensure` expand
# `{event}` over these unless `routing.event_types` lists others.
TASKNATION_EVENT_TYPES = (
    "lead.created",
    "lead.updated",
    "lead.expired",
    "message.received",
    "booking.confirmed",
    "booking.cancelled",
    "review.created",
    "payment.received",
)
DEFAULT_TOPIC_PREFIX = "tasknation."

# Kafka's rule for topic names: at most 249 characters of [A-Za-z0-9._-], not "." or "..".
MAX_TOPIC_NAME_CHARS = 249
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}\Z")
_TOPIC_CHARS = re.compile(r"^[A-Za-z0-9._-]*\Z")
_TEMPLATE_FIELD = re.compile(r"\{([^{}]*)\}")
TEMPLATE_FIELDS = ("event", "source")
_KEY_PATH = re.compile(r"^(id|event|data(\.[^.\s]+)+)\Z")
_TOPIC_CONFIG_NAME = re.compile(r"^[A-Za-z0-9._-]+\Z")
# Kafka stores the partition count as a 32-bit and the replication factor as a 16-bit integer.
# The partition bound is far lower, because more partitions on one topic are most likely a typo.
MAX_PARTITIONS = 10_000
MAX_REPLICATION_FACTOR = 32_767

# TaskNation retries a failed delivery after 1 min, 5 min, 30 min, 2 h and 24 h,
# so the last attempt comes 95760 s (26.6 h) after the first one.
RETRY_SCHEDULE_S = (1 + 5 + 30 + 120 + 1440) * 60
DEFAULT_DEDUP_WINDOW_S = 27 * 3600

_ENV_REFERENCE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_WORDS = ("secret", "password", "token")
_BUSINESS_ID = re.compile(r"^\S{1,256}\Z")


def is_valid_topic_name(name: str) -> bool:
    return bool(_TOPIC_NAME.match(name)) and name not in (".", "..")


def is_safe_event_name(event: str) -> bool:
    """Check whether an event type may appear in a topic name, which it may if it is one."""
    return is_valid_topic_name(event)


def event_matches(pattern: str, event: str) -> bool:
    """Match an event type against a glob: ``*`` is any run of characters, ``?`` one character.

    Matching is case-sensitive, and ``*`` also matches dots, so ``lead.*``
    matches ``lead.created`` and ``*`` matches every event type.
    """
    return _compile_glob(pattern).fullmatch(event) is not None


@functools.lru_cache(maxsize=1024)
def _compile_glob(pattern: str) -> re.Pattern[str]:
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL)


def _check_event_pattern(value: str) -> str:
    if not value or not _TOPIC_CHARS.match(value.replace("*", "").replace("?", "")):
        raise ValueError(
            f"invalid event pattern {value!r}: expected an event type such as 'lead.created' "
            "or a glob such as 'lead.*' (A-Z a-z 0-9 . _ - with * and ?)"
        )
    return value


def _check_topic_template(value: str) -> str:
    for name in _TEMPLATE_FIELD.findall(value):
        if name not in TEMPLATE_FIELDS:
            raise ValueError(
                f"invalid topic {value!r}: unknown field {{{name}}}; "
                "expected {event} or {source}"
            )
    literal = _TEMPLATE_FIELD.sub("", value)
    if not value or not _TOPIC_CHARS.match(literal):
        raise ValueError(
            f"invalid topic {value!r}: expected a topic name of A-Z a-z 0-9 . _ - "
            "that may contain {event} and {source}"
        )
    if literal == value and not is_valid_topic_name(value):
        raise ValueError(
            f"invalid topic {value!r}: expected at most {MAX_TOPIC_NAME_CHARS} characters "
            "and neither '.' nor '..'"
        )
    return value


def _check_topic_name(value: str) -> str:
    if not is_valid_topic_name(value):
        raise ValueError(
            f"invalid topic name {value!r}: expected at most {MAX_TOPIC_NAME_CHARS} characters "
            "of A-Z a-z 0-9 . _ -, and neither '.' nor '..'"
        )
    return value


def _check_key_path(value: str) -> str:
    if not _KEY_PATH.match(value):
        raise ValueError(
            f"invalid key path {value!r}: expected 'id', 'event' or a dotted path into "
            "the payload's data such as 'data.leadID'"
        )
    return value


def _check_business_id(value: str) -> str:
    if not _BUSINESS_ID.match(value):
        raise ValueError(
            f"invalid business ID {value!r}: expected 1 to 256 characters without spaces"
        )
    return value


def _wrap_string(value: object) -> object:
    """Accept a single string where a list is expected, as YAML users often write one."""
    return [value] if isinstance(value, str) else value


def _number_to_string(value: object) -> object:
    """Turn a YAML integer into its decimal string; a float would have lost digits already."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        raise ValueError(f"{value!r} is a float; quote the value to keep every digit")
    return value


def _config_value_to_string(value: object) -> object:
    """Write a topic config value as Kafka expects it: ``true``/``false`` and plain numbers."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _check_topic_config_name(value: str) -> str:
    if not _TOPIC_CONFIG_NAME.match(value):
        raise ValueError(
            f"invalid topic config name {value!r}: expected a name such as 'retention.ms'"
        )
    return value


TopicConfigName = Annotated[str, AfterValidator(_check_topic_config_name)]
TopicConfigValue = Annotated[str, BeforeValidator(_config_value_to_string)]
BusinessId = Annotated[str, BeforeValidator(_number_to_string), AfterValidator(_check_business_id)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServerConfig(_Model):
    """The HTTP listener and the limits of one request."""

    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    # When set, /healthz, /readyz and /metrics are served only on this port (same
    # host), so they are never exposed together with the webhook paths.
    admin_port: int | None = Field(default=None, ge=0, le=65535)
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


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSslConfig(_Model):
    """TLS toward the brokers: trusted authorities, client certificate, hostname check.

    The files are loaded during validation, so a missing file, a wrong
    ``key_password`` or a key that does not match the certificate stops the
    relay at start with a message naming the setting.
    """

    # PEM certificates of the authorities that sign the brokers' certificates;
    # without it the system trust store is used.
    ca_file: Path | None = None
    # PEM client certificate chain, for brokers that require client authentication.
    cert_file: Path | None = None
    # PEM private key of cert_file; not needed when cert_file contains the key.
    key_file: Path | None = None
    key_password: SecretStr | None = None
    check_hostname: bool = True

    @field_validator("key_password", mode="before")
    @classmethod
    def _resolve_key_password(cls, value: object, info: ValidationInfo) -> object:
        return _resolve_secret(value, _environ(info))

    @model_validator(mode="after")
    def _check_loadable(self) -> KafkaSslConfig:
        if self.cert_file is None and (self.key_file or self.key_password):
            raise ValueError("key_file and key_password need cert_file, the client certificate")
        try:
            create_ssl_context(self)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self


class KafkaSaslConfig(_Model):
    """SASL authentication toward the brokers."""

    mechanism: SaslMechanism
    username: str = Field(min_length=1)
    password: SecretStr

    @field_validator("password", mode="before")
    @classmethod
    def _resolve_password(cls, value: object, info: ValidationInfo) -> object:
        return _resolve_secret(value, _environ(info))

    @field_validator("password")
    @classmethod
    def _check_password(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("the SASL password must not be empty")
        return value


class KafkaConfig(_Model):
    """The producer's connection, security and batching settings; `acks=all` is fixed."""

    bootstrap_servers: str
    client_id: str = "tasknation-relay"
    # Kafka's `security.protocol`: SSL and SASL_SSL encrypt, SASL_* authenticate with `sasl`.
    security_protocol: SecurityProtocol = "PLAINTEXT"
    ssl: KafkaSslConfig | None = None
    sasl: KafkaSaslConfig | None = None
    linger_ms: int = Field(default=5, ge=0, le=1000)
    max_request_size: int = Field(default=DEFAULT_MAX_REQUEST_SIZE, ge=1024)
    request_timeout_ms: int = Field(default=30_000, ge=1000)
    metadata_max_age_ms: int = Field(default=300_000, ge=1000)
    reconnect_backoff_s: float = Field(default=1.0, gt=0)
    # With no acknowledgement for this long, a metadata request checks that the
    # broker still responds. Readiness turns false when it does not respond within that time.
    health_check_interval_s: float = Field(default=5.0, gt=0, le=300)
    # A producer that is replaced gets this long to flush before it is abandoned.
    close_timeout_s: float = Field(default=5.0, ge=0)

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @model_validator(mode="after")
    def _check_security(self) -> KafkaConfig:
        protocol = self.security_protocol
        if self.ssl is not None and not self.uses_ssl:
            raise ValueError(
                f"ssl is set but security_protocol is {protocol}; "
                "set security_protocol to SSL or SASL_SSL, or remove ssl"
            )
        if self.sasl is not None and not self.uses_sasl:
            raise ValueError(
                f"sasl is set but security_protocol is {protocol}; "
                "set security_protocol to SASL_SSL or SASL_PLAINTEXT, or remove sasl"
            )
        if self.sasl is None and self.uses_sasl:
            raise ValueError(
                f"security_protocol {protocol} needs sasl with mechanism, username and password"
            )
        return self

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


ContentMode = Literal["binary", "structured"]


@dataclass(frozen=True, slots=True)
class Destination:
    """The topics, record key paths and CloudEvents content mode of one event type.

    ``route_index`` is None for the unrouted topic. No topics means that the
    matching route drops the event.
    """

    route_index: int | None
    topics: tuple[str, ...]
    key_paths: tuple[str, ...]
    content_mode: ContentMode


EventPattern = Annotated[str, AfterValidator(_check_event_pattern)]
TopicTemplate = Annotated[str, AfterValidator(_check_topic_template)]
KeyPath = Annotated[str, AfterValidator(_check_key_path)]
TopicName = Annotated[str, AfterValidator(_check_topic_name)]


class RouteConfig(_Model):
    """One routing rule: the event types it matches and the topics it writes to."""

    events: tuple[EventPattern, ...] = Field(min_length=1)
    topics: tuple[TopicTemplate, ...] = ()
    drop: bool = False
    key_paths: tuple[KeyPath, ...] | None = None
    content_mode: ContentMode | None = None

    _wrap_single_values = field_validator("events", "topics", "key_paths", mode="before")(
        _wrap_string
    )

    @model_validator(mode="after")
    def _check_action(self) -> RouteConfig:
        if self.drop and (self.topics or self.key_paths is not None or self.content_mode):
            raise ValueError("a route with drop: true takes no topics, key_paths or content_mode")
        if not self.drop and not self.topics:
            raise ValueError("expected topics (one or more topic names) or drop: true")
        return self

    def matches(self, event: str) -> bool:
        return any(event_matches(pattern, event) for pattern in self.events)

    def render_topics(self, event: str, source: str) -> tuple[str, ...]:
        """Return the route's topic names for one event, in order and without repeats."""
        rendered = (
            template.replace("{event}", event).replace("{source}", source)
            for template in self.topics
        )
        return tuple(dict.fromkeys(rendered))


class TopicSettings(_Model):
    """Partitions, replication factor and topic configs for ``relay topics ensure``."""

    partitions: int = Field(default=1, ge=1, le=MAX_PARTITIONS)
    replication_factor: int = Field(default=1, ge=1, le=MAX_REPLICATION_FACTOR)
    configs: dict[TopicConfigName, TopicConfigValue] = Field(default_factory=dict)


class TopicOverride(_Model):
    """Settings of one topic that replace ``routing.topic_defaults``, with configs merged."""

    partitions: int | None = Field(default=None, ge=1, le=MAX_PARTITIONS)
    replication_factor: int | None = Field(default=None, ge=1, le=MAX_REPLICATION_FACTOR)
    configs: dict[TopicConfigName, TopicConfigValue] = Field(default_factory=dict)


class RoutingConfig(_Model):
    """Routes, record key paths, CloudEvents content mode and topic settings.

    Without ``routes``, one route sends every event to ``topic_prefix`` + the
    event type. With ``routes``, the first route whose ``events`` patterns
    match the event type decides, and an event that no route matches goes to
    ``unrouted_topic``.
    """

    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    routes: tuple[RouteConfig, ...] = Field(min_length=1)
    unrouted_topic: TopicName = "tasknation.unrouted"
    dead_letter_topic: TopicName = "tasknation.deadletter"
    key_paths: tuple[KeyPath, ...] = ("data.leadID", "data.businessID", "id")
    content_mode: ContentMode = "binary"
    event_types: tuple[str, ...] = Field(default=TASKNATION_EVENT_TYPES, min_length=1)
    topic_defaults: TopicSettings = TopicSettings()
    topic_overrides: dict[TopicName, TopicOverride] = Field(default_factory=dict)

    _wrap_single_values = field_validator("key_paths", "event_types", mode="before")(_wrap_string)

    @model_validator(mode="before")
    @classmethod
    def _add_default_route(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        if "routes" in data and "topic_prefix" in data:
            raise ValueError(
                "topic_prefix applies only when routes is not set; "
                "write the prefix into the topics of the routes instead"
            )
        if "routes" in data:
            return data
        prefix = data.get("topic_prefix", DEFAULT_TOPIC_PREFIX)
        if not isinstance(prefix, str) or not _TOPIC_CHARS.match(prefix):
            # The topic_prefix check reports the invalid value; the route uses the default.
            prefix = DEFAULT_TOPIC_PREFIX
        return {**data, "routes": [{"events": ["*"], "topics": [prefix + "{event}"]}]}

    @field_validator("topic_prefix")
    @classmethod
    def _check_topic_prefix(cls, value: str) -> str:
        if not _TOPIC_CHARS.match(value) or len(value) >= MAX_TOPIC_NAME_CHARS:
            raise ValueError(
                f"invalid topic prefix {value!r}: expected at most "
                f"{MAX_TOPIC_NAME_CHARS - 1} characters of A-Z a-z 0-9 . _ -"
            )
        return value

    @field_validator("event_types")
    @classmethod
    def _check_event_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for event in value:
            if not is_safe_event_name(event):
                raise ValueError(
                    f"invalid event type {event!r}: expected a valid Kafka topic name "
                    "(A-Z a-z 0-9 . _ -, at most 249 characters)"
                )
        return value

    def route_for(self, event: str) -> tuple[int, RouteConfig] | None:
        """Return the first route that matches ``event`` and its index, or None."""
        for index, route in enumerate(self.routes):
            if route.matches(event):
                return index, route
        return None

    def destination(self, event: str, source: str) -> Destination:
        """Return where an event of type ``event`` from ``source`` is written.

        An event type that is not a safe topic name, or that no route matches,
        goes to the unrouted topic. So does each rendered topic name that Kafka
        would reject.
        """
        matched = self.route_for(event) if is_safe_event_name(event) else None
        if matched is None:
            return Destination(None, (self.unrouted_topic,), self.key_paths, self.content_mode)

        index, route = matched
        topics = (
            topic if is_valid_topic_name(topic) else self.unrouted_topic
            for topic in route.render_topics(event, source)
        )
        return Destination(
            route_index=index,
            topics=tuple(dict.fromkeys(topics)),
            key_paths=self.key_paths if route.key_paths is None else route.key_paths,
            content_mode=route.content_mode or self.content_mode,
        )

    def settings_for(self, topic: str) -> TopicSettings:
        """Return the creation settings of ``topic``: the defaults with its override applied."""
        override = self.topic_overrides.get(topic)
        if override is None:
            return self.topic_defaults
        defaults = self.topic_defaults
        return TopicSettings(
            partitions=override.partitions or defaults.partitions,
            replication_factor=override.replication_factor or defaults.replication_factor,
            configs={**defaults.configs, **override.configs},
        )


class SpoolConfig(_Model):
    """The on-disk write-ahead spool that takes deliveries Kafka cannot take in time."""

    enabled: bool = False
    # Must be a persistent volume of this replica alone: the spool contains events
    # already answered with 2xx that have not yet reached Kafka.
    path: Path | None = None
    max_bytes: int = Field(default=1024**3, ge=1024 * 1024)
    segment_bytes: int = Field(default=64 * 1024**2, ge=64 * 1024)
    # Time kept from server.deadline_s for the spool write; Kafka gets the rest.
    write_reserve_s: float = Field(default=1.0, gt=0)
    forward_batch_records: int = Field(default=500, ge=1, le=100_000)
    forward_timeout_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _check_sizes(self) -> SpoolConfig:
        if self.enabled and self.path is None:
            raise ValueError("spool.path is required when spool.enabled is true")
        if self.segment_bytes > self.max_bytes:
            raise ValueError(
                f"spool.segment_bytes ({self.segment_bytes}) must not exceed "
                f"spool.max_bytes ({self.max_bytes})"
            )
        return self


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
    """One webhook endpoint: its path, signature header, valid secrets and allow-lists.

    Several secrets are valid at once, so a secret can be rotated without a
    window of rejected deliveries. With ``allowed_event_types`` or
    ``allowed_business_ids`` set, an authentic event outside them gets a 200
    response and is not published.
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    path: str = Field(pattern=r"^/[A-Za-z0-9/_.-]*$")
    signature_header: str = Field(
        default="X-TaskNation-Signature", pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$"
    )
    secrets: tuple[SecretStr, ...] = Field(min_length=1)
    allowed_event_types: tuple[EventPattern, ...] | None = Field(default=None, min_length=1)
    allowed_business_ids: frozenset[BusinessId] | None = Field(default=None, min_length=1)

    @field_validator("secrets", mode="before")
    @classmethod
    def _resolve_secrets(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, list):
            return value
        environ = _environ(info)
        return [_resolve_secret(entry, environ) for entry in value]

    @field_validator("secrets")
    @classmethod
    def _drop_empty_secrets(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        # An empty entry is skipped, so `${NEXT_SECRET:-}` can stand for a rotation
        # secret that is not set. An empty HMAC key would make forging deliveries easy.
        secrets = tuple(secret for secret in value if secret.get_secret_value())
        if not secrets:
            raise ValueError(
                "every webhook secret is empty; expected at least one non-empty secret"
            )
        return secrets

    _wrap_single_values = field_validator("allowed_event_types", mode="before")(_wrap_string)

    def secret_bytes(self) -> tuple[bytes, ...]:
        return tuple(secret.get_secret_value().encode() for secret in self.secrets)

    def allows_event_type(self, event: str) -> bool:
        if self.allowed_event_types is None:
            return True
        return any(event_matches(pattern, event) for pattern in self.allowed_event_types)


class RelayConfig(_Model):
    """The whole relay configuration, as validated from one YAML file."""

    server: ServerConfig = ServerConfig()
    kafka: KafkaConfig
    routing: RoutingConfig = Field(default_factory=lambda: RoutingConfig.model_validate({}))
    spool: SpoolConfig = SpoolConfig()
    dedup: DedupConfig = DedupConfig()
    sources: tuple[SourceConfig, ...] = Field(min_length=1)
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    # text: one human-readable line per record; json: one JSON object per line.
    log_format: Literal["text", "json"] = "text"

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

        if self.spool.enabled:
            self._check_spool()
        return self

    @model_validator(mode="after")
    def _check_topic_overrides(self) -> RelayConfig:
        writable = set(self.writable_topics())
        unknown = sorted(topic for topic in self.routing.topic_overrides if topic not in writable)
        if unknown:
            raise ValueError(
                f"routing.topic_overrides: {unknown} are not topics that the relay writes to; "
                f"expected some of {sorted(writable)}"
            )
        return self

    def writable_topics(self) -> tuple[str, ...]:
        """Return every topic the relay can write to, in a stable order.

        ``{event}`` expands over ``routing.event_types`` and ``{source}`` over
        the sources. An event type outside ``event_types`` that a route sends
        to ``{event}`` writes to a topic that is not listed here.
        """
        routing = self.routing
        topics: dict[str, None] = {}
        for source in self.sources:
            for event in routing.event_types:
                if source.allows_event_type(event):
                    topics.update(dict.fromkeys(routing.destination(event, source.name).topics))
        topics[routing.unrouted_topic] = None
        topics[routing.dead_letter_topic] = None
        return tuple(topics)

    def _check_spool(self) -> None:
        spool = self.spool
        if spool.write_reserve_s >= self.server.deadline_s:
            raise ValueError(
                f"spool.write_reserve_s ({spool.write_reserve_s}) must be less than "
                f"server.deadline_s ({self.server.deadline_s}), so Kafka gets part of the deadline"
            )


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
        hint = ""
        if "alias" in str(exc):
            # YAML reads an unquoted leading '*' as an alias, a common slip in event globs.
            hint = "\nquote a value that starts with '*', for example events: ['*']"
        raise ConfigError(f"{source_name}: invalid YAML: {exc}{hint}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{source_name}: expected a mapping at the top level")

    environment = os.environ if environ is None else environ
    document = _interpolate(document, environment, source_name, "")
    try:
        return RelayConfig.model_validate(document, context={"environ": environment})
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


def _resolve_secret(entry: object, environ: Mapping[str, str]) -> object:
    """Turn ``{env: NAME}`` or ``{file: PATH}`` into the secret string it names.

    Any other value is returned unchanged for the field's own validation.
    """
    if not isinstance(entry, dict):
        return entry
    if set(entry) == {"env"} and isinstance(entry["env"], str):
        name = entry["env"]
        if name not in environ:
            raise ValueError(f"environment variable {name} is not set")
        return environ[name]
    if set(entry) == {"file"} and isinstance(entry["file"], str):
        try:
            content = Path(entry["file"]).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read secret file {entry['file']}: {exc.strerror}") from None
        # Files written by editors and `echo` end with one newline that is not part of the secret.
        return content[:-1] if content.endswith("\n") else content
    raise ValueError("expected a string, {env: NAME} or {file: PATH}")


def _environ(info: ValidationInfo) -> Mapping[str, str]:
    """Return the environment that ``parse_config`` validates against."""
    environ: Mapping[str, str] = (info.context or {}).get("environ", os.environ)
    return environ


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe_validation_error(exc: ValidationError, source_name: str) -> str:
    lines = [f"{source_name}: invalid configuration:"]
    errors = exc.errors()
    locations = [error["loc"] for error in errors]
    for error in errors:
        loc = error["loc"]
        if error["type"] == "too_short" and any(
            other[: len(loc)] == loc and len(other) > len(loc) for other in locations
        ):
            # A list whose items failed is also "too short"; the item errors say why.
            continue
        location = ""
        for part in loc:
            location = f"{location}[{part}]" if isinstance(part, int) else _join(location, part)
        message = error["msg"].removeprefix("Value error, ")
        # Errors of the whole model start with the YAML path they concern.
        line = f"  {location}: {message}" if location else f"  {message}"
        lines.append(line + _describe_input(error["type"], location, error["input"]))
    return "\n".join(lines)


def _describe_input(error_type: str, location: str, value: object) -> str:
    """Return `` (got VALUE)`` for a scalar input that is safe to show, else an empty string.

    A list or mapping may contain a secret further down, so only scalars are shown.
    """
    if error_type in ("missing", "value_error") or isinstance(value, dict | list | tuple):
        return ""
    if any(word in location.lower() for word in _SECRET_WORDS):
        return ""
    return f" (got {value!r:.80})"
