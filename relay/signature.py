"""Verification of the ``X-TaskNation-Signature`` header.

TaskNation signs the raw request body with HMAC-SHA256 and the webhook secret
and sends the digest as lowercase hex. The relay also accepts uppercase hex,
a ``sha256=`` prefix and a comma-separated list of candidates (at most
``MAX_CANDIDATES``), so a sender that signs with several secrets during a
rotation is accepted. Every comparison uses ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from relay.errors import SignatureMalformed, SignatureMismatch, SignatureMissing

MAX_CANDIDATES = 4
MAX_HEADER_CHARS = 1024
_PREFIX = "sha256="
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def sign(body: bytes, secret: bytes) -> str:
    """Return the lowercase hex HMAC-SHA256 of ``body``, as TaskNation sends it."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def parse_signature_header(value: str | None) -> list[bytes]:
    """Return the digests named by a signature header value.

    Raises ``SignatureMissing`` for an absent or blank header and
    ``SignatureMalformed`` for any other shape than 64 hex digits per
    candidate.
    """
    if value is None or not value.strip():
        raise SignatureMissing("the signature header is missing or empty")
    if len(value) > MAX_HEADER_CHARS:
        raise SignatureMalformed(
            f"the signature header has {len(value)} characters, more than {MAX_HEADER_CHARS}"
        )

    candidates = [part.strip() for part in value.split(",")]
    if len(candidates) > MAX_CANDIDATES:
        raise SignatureMalformed(
            f"the signature header has {len(candidates)} candidates, more than {MAX_CANDIDATES}"
        )

    digests = []
    for candidate in candidates:
        if candidate[: len(_PREFIX)].lower() == _PREFIX:
            candidate = candidate[len(_PREFIX) :]
        if len(candidate) != 64 or not _HEX_DIGITS.issuperset(candidate):
            raise SignatureMalformed("each signature must be 64 hex digits, optionally 'sha256='")
        digests.append(bytes.fromhex(candidate))
    return digests


def verify_signature(body: bytes, header_value: str | None, secrets: Sequence[bytes]) -> None:
    """Check that one candidate in the header is the HMAC of ``body`` with one secret.

    Raises a ``SignatureError`` subclass when the delivery is not authentic.
    Every candidate is compared with every secret, so the time taken does not
    depend on which pair matched.
    """
    digests = parse_signature_header(header_value)
    expected = [hmac.digest(secret, body, "sha256") for secret in secrets]

    matched = False
    for digest in digests:
        for candidate in expected:
            matched |= hmac.compare_digest(digest, candidate)
    if not matched:
        raise SignatureMismatch("the signature does not match the body with any configured secret")
