"""Size check of Kafka records before they are sent.

aiokafka rejects a record whose estimated batch size exceeds the producer's
``max_request_size``, and a broker rejects a batch over the topic's
``max.message.bytes`` (broker default ``message.max.bytes``: 1048588 bytes).
The relay computes aiokafka's estimate first. A record over
``kafka.max_request_size`` could never be sent, and every retry of it would
fail the same way. So it is replaced by a dead-letter record that carries
the first ``TRUNCATED_VALUE_BYTES`` of the value, the original size and its
SHA-256, and the original headers, which include ``ce_id``.
"""

from __future__ import annotations

import hashlib

from relay.routing import HEADER_DEAD_LETTER_DETAIL, HEADER_DEAD_LETTER_REASON, Record

# Kafka's record batch format v2: a 61-byte batch header, and at most 21
# bytes of per-record fields besides the varint-prefixed key, value and headers.
BATCH_HEADER_BYTES = 61
MAX_RECORD_OVERHEAD_BYTES = 21
# Small enough to fit any max_request_size the configuration allows (at least
# 17 KiB) together with the headers.
TRUNCATED_VALUE_BYTES = 8 * 1024

REASON_RECORD_TOO_LARGE = "record_too_large"
HEADER_ORIGINAL_BYTES = "relay_original_bytes"
HEADER_ORIGINAL_SHA256 = "relay_original_sha256"


def estimated_batch_bytes(record: Record) -> int:
    """Return the size of a batch holding only ``record``, as aiokafka estimates it."""
    size = BATCH_HEADER_BYTES + MAX_RECORD_OVERHEAD_BYTES
    size += _field_bytes(record.key)
    size += _field_bytes(record.value)
    size += _varint_bytes(len(record.headers))
    for name, value in record.headers:
        size += _field_bytes(name.encode())
        size += _field_bytes(value)
    return size


def dead_letter_oversized(record: Record, size: int, limit: int, dead_letter_topic: str) -> Record:
    """Return the dead-letter record that stands for ``record``, which is ``size`` bytes."""
    detail = (
        f"the record for {record.topic} is {size} bytes, more than kafka.max_request_size "
        f"({limit}); the value holds the first {TRUNCATED_VALUE_BYTES} bytes of the body"
    )
    replaced = (HEADER_DEAD_LETTER_REASON, HEADER_DEAD_LETTER_DETAIL)
    headers = tuple(header for header in record.headers if header[0] not in replaced)
    headers += (
        (HEADER_DEAD_LETTER_REASON, REASON_RECORD_TOO_LARGE.encode()),
        (HEADER_DEAD_LETTER_DETAIL, detail.encode()),
        (HEADER_ORIGINAL_BYTES, str(len(record.value)).encode()),
        (HEADER_ORIGINAL_SHA256, hashlib.sha256(record.value).hexdigest().encode()),
    )
    return Record(
        topic=dead_letter_topic,
        key=None,
        value=record.value[:TRUNCATED_VALUE_BYTES],
        headers=headers,
    )


def _field_bytes(data: bytes | None) -> int:
    if data is None:
        return 1
    return _varint_bytes(len(data)) + len(data)


def _varint_bytes(value: int) -> int:
    """Return the length of ``value`` as a zigzag varint, the encoding Kafka uses for lengths."""
    encoded = (value << 1) ^ (value >> 63)
    length = 1
    while encoded > 0x7F:
        encoded >>= 7
        length += 1
    return length
