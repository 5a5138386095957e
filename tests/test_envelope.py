from datetime import UTC, datetime

import pytest

from relay.envelope import parse_envelope
from relay.errors import InvalidEnvelope

SAMPLE = (
    b'{"id":"evt_abc123","event":"lead.created","timestamp":"2026-02-15T10:30:00Z",'
    b'"data":{"leadID":"299614694480093245","businessID":"468046965846925323"}}'
)


def test_sample_envelope_parsed() -> None:
    envelope = parse_envelope(SAMPLE)
    assert envelope.id == "evt_abc123"
    assert envelope.event == "lead.created"
    assert envelope.timestamp == datetime(2026, 2, 15, 10, 30, tzinfo=UTC)
    assert envelope.data["leadID"] == "299614694480093245"


def test_timestamp_offset_kept() -> None:
    body = SAMPLE.replace(b"2026-02-15T10:30:00Z", b"2026-02-15T12:30:00+02:00")
    assert parse_envelope(body).timestamp == datetime(2026, 2, 15, 10, 30, tzinfo=UTC)


def test_timestamp_without_offset_read_as_utc() -> None:
    body = SAMPLE.replace(b"2026-02-15T10:30:00Z", b"2026-02-15T10:30:00")
    assert parse_envelope(body).timestamp.tzinfo is UTC


def test_extra_fields_ignored() -> None:
    body = SAMPLE[:-1] + b',"apiVersion":"v2"}'
    assert parse_envelope(body).id == "evt_abc123"


def test_wide_integer_in_data_accepted() -> None:
    body = SAMPLE.replace(
        b'"leadID":"299614694480093245"', b'"leadID":123456789012345678901234567890'
    )
    assert parse_envelope(body).id == "evt_abc123"


@pytest.mark.parametrize(
    ("body", "reason", "message"),
    [
        (b"", "empty_body", "empty"),
        (b"not json", "invalid_json", "line 1 column 1"),
        (b'{"id": "\xff"}', "invalid_json", "UTF-8"),
        (b"[1, 2]", "invalid_envelope", "not a JSON object"),
        (
            b'{"event":"lead.created","timestamp":"2026-02-15T10:30:00Z","data":{}}',
            "invalid_envelope",
            "'id'",
        ),
        (
            b'{"id":7,"event":"lead.created","timestamp":"2026-02-15T10:30:00Z","data":{}}',
            "invalid_envelope",
            "'id'",
        ),
        (
            b'{"id":"e","event":"","timestamp":"2026-02-15T10:30:00Z","data":{}}',
            "invalid_envelope",
            "'event'",
        ),
        (b'{"id":"e","event":"lead.created","data":{}}', "invalid_envelope", "'timestamp'"),
        (
            b'{"id":"e","event":"lead.created","timestamp":"yesterday","data":{}}',
            "invalid_envelope",
            "RFC 3339",
        ),
        (
            b'{"id":"e","event":"lead.created","timestamp":"2026-02-15T10:30:00Z"}',
            "invalid_envelope",
            "'data'",
        ),
        (
            b'{"id":"e","event":"lead.created","timestamp":"2026-02-15T10:30:00Z","data":[]}',
            "invalid_envelope",
            "'data'",
        ),
    ],
)
def test_invalid_envelopes_rejected(body: bytes, reason: str, message: str) -> None:
    with pytest.raises(InvalidEnvelope, match=message) as caught:
        parse_envelope(body)
    assert caught.value.reason == reason


def test_long_id_rejected() -> None:
    body = SAMPLE.replace(b"evt_abc123", b"e" * 300)
    with pytest.raises(InvalidEnvelope, match="more than 256"):
        parse_envelope(body)


def test_lowercase_t_and_z_accepted() -> None:
    body = SAMPLE.replace(b"2026-02-15T10:30:00Z", b"2026-02-15t10:30:00z")
    assert parse_envelope(body).timestamp == datetime(2026, 2, 15, 10, 30, tzinfo=UTC)


def test_invalid_timestamp_detail_omits_value() -> None:
    body = SAMPLE.replace(b"2026-02-15T10:30:00Z", b"customer John Doe")
    with pytest.raises(InvalidEnvelope, match="RFC 3339") as caught:
        parse_envelope(body)
    assert "John Doe" not in caught.value.detail
