"""TLS and SASL for the Kafka connections, built from the ``kafka`` settings.

``create_ssl_context`` is the one place that builds the ``ssl.SSLContext``
for Kafka; ``kafka_client_kwargs`` returns the connection arguments that
aiokafka's producer, consumer and admin client accept alike.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relay.errors import ConfigError

if TYPE_CHECKING:
    from relay.config import KafkaConfig, KafkaSslConfig

_SOURCE_LOCATION = re.compile(r"\s*\(_ssl\.c:\d+\)$")


def create_ssl_context(settings: KafkaSslConfig | None) -> ssl.SSLContext:
    """Build a client context that verifies the brokers' certificates.

    Without ``settings`` the system trust store is used and hostnames are
    checked. Raises ``ConfigError`` naming the setting whose file cannot be
    loaded; the message never contains the key password.
    """
    # The default context requires a valid certificate chain, checks the
    # hostname and refuses protocol versions older than TLS 1.2.
    if settings is None or settings.ca_file is None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    else:
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.ca_file)
        except OSError as exc:  # ssl.SSLError is an OSError
            raise ConfigError(f"cannot load ca_file {settings.ca_file}: {_reason(exc)}") from None
    if settings is None:
        return context

    if not settings.check_hostname:
        # The certificate chain is still verified; only the name in it is not compared.
        context.check_hostname = False
    if settings.cert_file is not None:
        _load_client_certificate(context, settings.cert_file, settings)
    return context


def kafka_client_kwargs(config: KafkaConfig) -> dict[str, Any]:
    """Return the connection keyword arguments of aiokafka's clients for ``config``.

    The result contains the SASL password in clear text, as aiokafka expects
    it, so it must never be logged or included in an error.
    """
    kwargs: dict[str, Any] = {
        "bootstrap_servers": config.bootstrap_servers,
        "client_id": config.client_id,
        "security_protocol": config.security_protocol,
    }
    if config.uses_ssl:
        kwargs["ssl_context"] = create_ssl_context(config.ssl)
    if config.sasl is not None:
        kwargs["sasl_mechanism"] = config.sasl.mechanism
        kwargs["sasl_plain_username"] = config.sasl.username
        kwargs["sasl_plain_password"] = config.sasl.password.get_secret_value()
    return kwargs


def _load_client_certificate(
    context: ssl.SSLContext, cert_file: Path, settings: KafkaSslConfig
) -> None:
    # An empty password makes OpenSSL fail on an encrypted key instead of
    # prompting on a terminal that a server does not have.
    password = b""
    if settings.key_password is not None:
        password = settings.key_password.get_secret_value().encode()
    try:
        context.load_cert_chain(cert_file, settings.key_file, password=password)
    except OSError as exc:  # ssl.SSLError is an OSError
        hint = ""
        if isinstance(exc, ssl.SSLError) and settings.key_password is None:
            hint = "; if the key is encrypted, set key_password"
        elif isinstance(exc, ssl.SSLError):
            hint = "; check that key_password is right and that the key matches the certificate"
        raise ConfigError(
            f"cannot load the client certificate cert_file {cert_file} "
            f"with key_file {settings.key_file or cert_file}: {_reason(exc)}{hint}"
        ) from None


def _reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        # Drop the CPython source location, such as "(_ssl.c:3926)", from OpenSSL's message.
        return exc.reason or _SOURCE_LOCATION.sub("", str(exc))
    return exc.strerror or str(exc)
