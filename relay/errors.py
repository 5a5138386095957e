"""Exception tree of the relay.

Every error the relay raises on purpose derives from ``RelayError``. A
``Rejection`` ends one request and carries the HTTP status and a short
machine-readable reason. ``retriable`` is True when a later attempt of the
same delivery can succeed.
"""

from __future__ import annotations


class RelayError(Exception):
    """Base class of all errors raised by the relay."""


class ConfigError(RelayError):
    """The configuration file is missing, unreadable or invalid."""


class Rejection(RelayError):
    """A delivery rejected with an error status."""

    status: int = 400
    reason: str = "rejected"
    retriable: bool = False


class BodyTooLarge(Rejection):
    status = 413
    reason = "body_too_large"


class BodyReadTimeout(Rejection):
    status = 408
    reason = "body_read_timeout"
    retriable = True


class BodyMalformed(Rejection):
    """The body's chunked framing or its gzip or deflate encoding is corrupt."""

    status = 400
    reason = "malformed_body"


class BodyIncomplete(Rejection):
    """The connection closed before the whole body arrived, so no one reads the response."""

    status = 400
    reason = "incomplete_body"
    retriable = True


class SignatureError(Rejection):
    """The delivery is not authentic: the signature is missing, malformed or wrong."""

    status = 401
    reason = "invalid_signature"


class SignatureMissing(SignatureError):
    reason = "missing_signature"


class SignatureMalformed(SignatureError):
    reason = "malformed_signature"


class SignatureMismatch(SignatureError):
    reason = "signature_mismatch"


class InvalidEnvelope(RelayError):
    """An authentic body that is not a TaskNation event envelope.

    A retry of the same bytes can never succeed, so the relay sends such a
    delivery to the dead-letter topic instead of answering with an error.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class DeliveryUnavailable(Rejection):
    """Kafka did not acknowledge the record within the deadline."""

    status = 503
    reason = "kafka_unavailable"
    retriable = True


class TopicAdminError(RelayError):
    """A topic lookup or creation on Kafka could not be completed."""


class SpoolError(RelayError):
    """The spool folder cannot be opened, is in use by another process, or failed a write."""


class SpoolFull(Rejection):
    """The spool contains ``spool.max_bytes`` and cannot take another delivery."""

    status = 503
    reason = "spool_full"
    retriable = True


class SpoolUnavailable(Rejection):
    """An earlier write to the spool failed, so it takes no more deliveries."""

    status = 503
    reason = "spool_unavailable"
    retriable = True
