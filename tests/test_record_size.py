"""Record size estimate and the dead-letter copy of a record that does not fit."""

from __future__ import annotations

import hashlib

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from relay.record_size import (
    TRUNCATED_VALUE_BYTES,
    dead_letter_oversized,
    estimated_batch_bytes,
)
from relay.routing import Record

HEADERS = (("ce_id", b"evt_1"), ("ce_type", b"lead.created"), ("relay_source", b"tasknation"))


@pytest.mark.parametrize(
    ("key", "value", "headers"),
    [
        (None, b"", ()),
        (b"L1", b"{}", HEADERS),
        (b"k" * 200, b"v" * 70_000, HEADERS),
        (None, b"v" * 3_000_000, (("h" * 130, b"x" * 20_000),)),
        (b"", b"v" * 127, (("n\u00e9", b""),)),
    ],
)
def test_estimate_matches_aiokafka(key, value, headers) -> None:
    record = Record(topic="t", key=key, value=value, headers=headers)
    expected = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, list(headers))
    assert estimated_batch_bytes(record) == expected


def test_oversized_copy_truncated() -> None:
    value = b'{"id":"evt_1"' + b" " * 100_000 + b"}"
    record = Record(topic="tasknation.lead.created", key=b"L1", value=value, headers=HEADERS)

    copy = dead_letter_oversized(record, 100_100, 65_536, "tasknation.deadletter")

    assert copy.topic == "tasknation.deadletter"
    assert copy.key is None
    assert copy.value == value[:TRUNCATED_VALUE_BYTES]
    headers = dict(copy.headers)
    assert headers["ce_id"] == b"evt_1"
    assert headers["relay_dead_letter_reason"] == b"record_too_large"
    assert b"100100 bytes" in headers["relay_dead_letter_detail"]
    assert b"kafka.max_request_size (65536)" in headers["relay_dead_letter_detail"]
    assert headers["relay_original_bytes"] == str(len(value)).encode()
    assert headers["relay_original_sha256"] == hashlib.sha256(value).hexdigest().encode()


def test_oversized_copy_fits_small_limit() -> None:
    record = Record(topic="t", key=b"k" * 50_000, value=b"v" * 900_000, headers=HEADERS)
    copy = dead_letter_oversized(record, estimated_batch_bytes(record), 17 * 1024, "dlq")
    assert estimated_batch_bytes(copy) <= 17 * 1024


def test_oversized_dead_letter_reason_replaced() -> None:
    headers = (("relay_dead_letter_reason", b"invalid_json"), ("relay_source", b"tasknation"))
    record = Record(topic="dlq", key=None, value=b"x" * 100, headers=headers)

    copy = dead_letter_oversized(record, 2_000_000, 1_048_576, "dlq")

    reasons = [value for name, value in copy.headers if name == "relay_dead_letter_reason"]
    assert reasons == [b"record_too_large"]
