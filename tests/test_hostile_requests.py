"""Hostile and malformed requests: each gets its status, and the relay keeps serving.

Every case is followed by a valid delivery, which must get 200, and the
event topic is read back to check what was published.
"""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import pytest

from relay.config import RelayConfig
from relay.signature import sign
from tests.conftest import TEST_SECRET, make_config
from tests.kafka_records import consume
from tests.raw_http import Part, RawResponse, build_request, send_raw
from tests.test_webhook_kafka import PATH, event_body, signed_headers

EVENT = "lead.created"
SIGNATURE = "X-TaskNation-Signature"


def sig(body: bytes) -> bytes:
    return sign(body, TEST_SECRET.encode()).encode()


def signed(body: bytes, **kwargs: object) -> bytes:
    return build_request(PATH, body, [(SIGNATURE, sig(body))], **kwargs)  # type: ignore[arg-type]


def with_signature(value: bytes, body: bytes | None = None) -> list[Part]:
    body = event_body(EVENT) if body is None else body
    return [build_request(PATH, body, [(SIGNATURE, value)])]


@dataclass(frozen=True)
class Case:
    """One hostile request, the response it must get and what it publishes to the event topic."""

    build: Callable[[RelayConfig], list[Part]]
    status: int | None  # None: the relay closes the connection without a response
    answer_field: str = "error"
    value: str | None = None
    published: Callable[[RelayConfig], bytes] | None = None
    dead_letter_reason: str | None = None
    timed: bool = False  # the response must come within the deadline
    hang_up: bool = False  # the client closes the connection after sending


BODY = event_body(EVENT, event_id="evt_hostile", leadID="L1")
WIDE = (
    b'{"id":"evt_wide","event":"lead.created","timestamp":"2026-02-15T10:30:00Z",'
    b'"data":{"leadID":123456789012345678901234567890,"amount":-98765432109876543210987654321}}'
)
# Valid JSON, but orjson rejects numbers beyond the range of a double.
HUGE_FLOAT = WIDE.replace(b"}}", b',"ratio":1e400}}')
NESTED_OK = (
    b'{"id":"evt_nested","event":"lead.created","timestamp":"2026-02-15T10:30:00Z","data":{"a":'
    + b"[" * 500
    + b"]" * 500
    + b"}}"
)
NESTED_DEEP = NESTED_OK.replace(b"[" * 500, b"[" * 5000).replace(b"]" * 500, b"]" * 5000)
UTF16 = BODY.decode().encode("utf-16")
LATIN1 = BODY.replace(b'"L1"', b'"Z\xfcrich"')
BOMB = gzip.compress(b" " * (20 * 1024 * 1024))


def _chunked_oversize(config: RelayConfig) -> list[Part]:
    body = b"x" * (config.server.max_body_bytes + 1)
    return [build_request(PATH, body, [(SIGNATURE, b"0" * 64)], chunk_bytes=4096)]


def _declared_oversize(config: RelayConfig) -> list[Part]:
    body = b"x" * (config.server.max_body_bytes + 1)
    return [build_request(PATH, body, [(SIGNATURE, sig(body))])]


def _trickle(pieces: int, pause_s: float) -> Callable[[RelayConfig], list[Part]]:
    def build(config: RelayConfig) -> list[Part]:
        request = signed(BODY)
        head, _, body = request.partition(b"\r\n\r\n")
        step = -(-len(body) // pieces)
        parts: list[Part] = [head + b"\r\n\r\n"]
        for start in range(0, len(body), step):
            parts += [pause_s, body[start : start + step]]
        return parts

    return build


def _compressed(compress: Callable[[bytes], bytes], encoding: bytes, sign_wire: bool = False):
    def build(config: RelayConfig) -> list[Part]:
        wire = compress(BODY)
        signature = sig(wire if sign_wire else BODY)
        headers = [(SIGNATURE, signature), ("Content-Encoding", encoding)]
        return [build_request(PATH, wire, headers)]

    return build


def _typed(body: bytes, content_type: bytes | None) -> Callable[[RelayConfig], list[Part]]:
    def build(config: RelayConfig) -> list[Part]:
        headers = [(SIGNATURE, sig(body))]
        if content_type is not None:
            headers.append(("Content-Type", content_type))
        return [build_request(PATH, body, headers)]

    return build


def _same(body: bytes) -> Callable[[RelayConfig], bytes]:
    return lambda config: body


CASES: dict[str, Case] = {
    "signature missing": Case(
        lambda c: [build_request(PATH, BODY)], 401, value="missing_signature"
    ),
    "signature empty": Case(lambda c: with_signature(b""), 401, value="missing_signature"),
    "signature blank": Case(lambda c: with_signature(b"   "), 401, value="missing_signature"),
    "signature short": Case(lambda c: with_signature(b"abc123"), 401, value="malformed_signature"),
    "signature one digit long": Case(
        lambda c: with_signature(sig(BODY) + b"0"), 401, value="malformed_signature"
    ),
    "signature 8 KB long": Case(
        lambda c: with_signature(b"a" * 8000), 401, value="malformed_signature"
    ),
    "signature not hex": Case(
        lambda c: with_signature(b"z" * 64), 401, value="malformed_signature"
    ),
    "signature UTF-8 non-ASCII": Case(
        lambda c: with_signature("é".encode() * 32), 401, value="malformed_signature"
    ),
    "signature Latin-1 bytes": Case(
        lambda c: with_signature(b"\xe9" * 64), 401, value="malformed_signature"
    ),
    "signature full-width digits": Case(
        lambda c: with_signature("\uff10".encode() * 64), 401, value="malformed_signature"
    ),
    "signature of other body": Case(
        lambda c: with_signature(sig(b"{}")), 401, value="signature_mismatch"
    ),
    "five candidates": Case(
        lambda c: with_signature(b",".join([b"0" * 64] * 4 + [sig(BODY)]), BODY),
        401,
        value="malformed_signature",
    ),
    "hundred candidates": Case(
        lambda c: with_signature(b",".join([b"0" * 64] * 100)), 401, value="malformed_signature"
    ),
    "header line over 8 KiB": Case(lambda c: with_signature(b"0" * 9000), 400),
    "two candidates one valid": Case(
        lambda c: with_signature(b"0" * 64 + b", sha256=" + sig(BODY).upper(), BODY),
        200,
        answer_field="status",
        value="published",
        published=_same(BODY),
    ),
    "repeated header lines": Case(
        lambda c: [build_request(PATH, BODY, [(SIGNATURE, b"0" * 64), (SIGNATURE, sig(BODY))])],
        200,
        answer_field="status",
        value="published",
        published=_same(BODY),
    ),
    "over limit with Content-Length": Case(_declared_oversize, 413, value="body_too_large"),
    "over limit declared only": Case(
        lambda c: [signed(b"", content_length=c.server.max_body_bytes + 1)],
        413,
        value="body_too_large",
    ),
    "over limit chunked": Case(_chunked_oversize, 413, value="body_too_large"),
    "chunked in small chunks": Case(
        lambda c: [signed(BODY, chunk_bytes=7)],
        200,
        answer_field="status",
        value="published",
        published=_same(BODY),
    ),
    "chunked framing broken": Case(
        lambda c: [signed(BODY, chunk_bytes=7).replace(b"\r\n7\r\n", b"\r\nzz\r\n", 1)], 400
    ),
    "gzip signed decoded": Case(
        _compressed(gzip.compress, b"gzip"),
        200,
        answer_field="status",
        value="published",
        published=_same(BODY),
    ),
    "deflate signed decoded": Case(
        _compressed(zlib.compress, b"deflate"),
        200,
        answer_field="status",
        value="published",
        published=_same(BODY),
    ),
    "gzip signed on wire": Case(
        _compressed(gzip.compress, b"gzip", sign_wire=True), 401, value="signature_mismatch"
    ),
    "gzip corrupt": Case(
        _compressed(lambda body: b"\x1f\x8b" + body, b"gzip"), 400, value="malformed_body"
    ),
    "gzip bomb": Case(
        lambda c: [
            build_request(PATH, BOMB, [(SIGNATURE, b"0" * 64), ("Content-Encoding", b"gzip")])
        ],
        413,
        value="body_too_large",
    ),
    "brotli not supported": Case(_compressed(lambda body: body, b"br"), 400),
    "slow sender within deadline": Case(
        _trickle(pieces=4, pause_s=0.3),
        200,
        answer_field="status",
        value="published",
        published=_same(BODY),
    ),
    "slow sender past deadline": Case(
        _trickle(pieces=20, pause_s=1.0), 408, value="body_read_timeout", timed=True
    ),
    "client leaves mid-body": Case(lambda c: [signed(BODY)[:-10], 0.2], None, hang_up=True),
    "invalid UTF-8": Case(
        _typed(LATIN1, b"application/json"),
        200,
        answer_field="status",
        value="dead_lettered",
        dead_letter_reason="invalid_json",
    ),
    "UTF-16 with charset": Case(
        _typed(UTF16, b"application/json; charset=utf-16"),
        200,
        answer_field="status",
        value="dead_lettered",
        dead_letter_reason="invalid_json",
    ),
    "charset iso-8859-1 ASCII body": Case(
        _typed(BODY, b"application/json; charset=iso-8859-1"),
        200,
        answer_field="status",
        value="published",
        published=_same(BODY),
    ),
    "form content type": Case(
        _typed(BODY, b"application/x-www-form-urlencoded"),
        200,
        answer_field="status",
        value="published",
        published=_same(BODY),
    ),
    "no content type": Case(
        _typed(BODY, None), 200, answer_field="status", value="published", published=_same(BODY)
    ),
    "nesting 500 deep": Case(
        _typed(NESTED_OK, b"application/json"),
        200,
        answer_field="status",
        value="published",
        published=_same(NESTED_OK),
    ),
    "nesting 5000 deep": Case(
        _typed(NESTED_DEEP, b"application/json"),
        200,
        answer_field="status",
        value="dead_lettered",
        dead_letter_reason="invalid_json",
    ),
    "number beyond double range": Case(
        _typed(HUGE_FLOAT, b"application/json"),
        200,
        answer_field="status",
        value="dead_lettered",
        dead_letter_reason="invalid_json",
    ),
    "integers wider than 64 bits": Case(
        _typed(WIDE, b"application/json"),
        200,
        answer_field="status",
        value="published",
        published=_same(WIDE),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_hostile_request_answered(
    name, kafka_bootstrap, topic_prefix, relay_client_factory
) -> None:
    case = CASES[name]
    config = make_config(kafka_bootstrap, topic_prefix)
    client = await relay_client_factory(config)
    port = client.port

    started = time.monotonic()
    answer = await send_raw(port, case.build(config), hang_up=case.hang_up)
    elapsed = time.monotonic() - started

    if case.status is None:
        assert answer is None
    else:
        assert answer is not None
        assert answer.status == case.status
        if case.value is not None:
            assert answer.json()[case.answer_field] == case.value
        if answer.status in (408, 503):
            assert answer.headers["retry-after"] == str(config.server.retry_after_s)
    if case.timed:
        assert elapsed < config.server.deadline_s + 3.0

    sentinel = event_body(EVENT, leadID="L2")
    follow_up = await send_raw(port, [signed(sentinel)])
    assert follow_up is not None
    assert follow_up.status == 200
    assert follow_up.json()["status"] == "published"

    expected = [] if case.published is None else [case.published(config)]
    records = await consume(kafka_bootstrap, [topic_prefix + EVENT], count=len(expected) + 1)
    assert [record.value for record in records] == [*expected, sentinel]

    if case.dead_letter_reason is not None:
        dead = await consume(kafka_bootstrap, [f"{topic_prefix}deadletter"], count=1)
        assert len(dead) == 1
        assert dict(dead[0].headers)["relay_dead_letter_reason"] == case.dead_letter_reason.encode()


async def test_many_connections_leave_mid_body(
    kafka_bootstrap, topic_prefix, relay_client_factory, caplog
) -> None:
    client = await relay_client_factory(make_config(kafka_bootstrap, topic_prefix))
    partial = signed(BODY)[:-10]

    answers = await asyncio.gather(
        *(send_raw(client.port, [partial, 0.2], hang_up=True) for _ in range(50))
    )
    await asyncio.sleep(0.5)

    assert answers == [None] * 50
    sentinel = event_body(EVENT, leadID="L2")
    follow_up = await send_raw(client.port, [signed(sentinel)])
    assert isinstance(follow_up, RawResponse)
    assert follow_up.status == 200
    assert "Error handling request" not in caplog.text


def test_sample_bodies_have_expected_shape() -> None:
    """Check that the table's bodies match their names, so each case tests what it claims."""
    assert len(BOMB) < 64 * 1024
    assert orjson.loads(NESTED_OK)["id"] == "evt_nested"
    with pytest.raises(orjson.JSONDecodeError, match="depth"):
        orjson.loads(NESTED_DEEP)
    with pytest.raises(orjson.JSONDecodeError, match="UTF-8"):
        orjson.loads(LATIN1)


ENVELOPE_CASES = {
    "empty body": (b"", "empty_body"),
    "not JSON": (b"event=lead.created&id=evt_1", "invalid_json"),
    "truncated JSON": (BODY[:-5], "invalid_json"),
    "JSON array": (b'[{"id":"evt_1"}]', "invalid_envelope"),
    "JSON string": (b'"evt_1"', "invalid_envelope"),
    "id missing": (BODY.replace(b'"id":"evt_hostile",', b""), "invalid_envelope"),
    "id an integer": (BODY.replace(b'"evt_hostile"', b"42"), "invalid_envelope"),
    "event missing": (BODY.replace(b'"event":"lead.created",', b""), "invalid_envelope"),
    "event null": (BODY.replace(b'"lead.created"', b"null"), "invalid_envelope"),
    "timestamp not a date": (BODY.replace(b"2026-02-15T10:30:00Z", b"soon"), "invalid_envelope"),
    "timestamp a number": (
        BODY.replace(b'"2026-02-15T10:30:00Z"', b"1771151400"),
        "invalid_envelope",
    ),
    "data a list": (BODY.replace(b'{"leadID":"L1"}', b'["L1"]'), "invalid_envelope"),
}


@pytest.mark.parametrize("name", list(ENVELOPE_CASES))
async def test_invalid_envelope_dead_lettered_end_to_end(
    name, kafka_bootstrap, topic_prefix, relay_client_factory
) -> None:
    body, reason = ENVELOPE_CASES[name]
    assert body != BODY
    client = await relay_client_factory(make_config(kafka_bootstrap, topic_prefix))

    answer = await send_raw(client.port, [signed(body)])

    assert answer is not None
    assert answer.status == 200
    assert answer.json() == {"status": "dead_lettered", "id": None}
    records = await consume(kafka_bootstrap, [f"{topic_prefix}deadletter"], count=1)
    assert len(records) == 1
    assert records[0].value == body
    headers = dict(records[0].headers)
    assert headers["relay_dead_letter_reason"] == reason.encode()
    assert headers["relay_source"] == b"tasknation"


async def test_expect_continue_oversize_gets_413(
    kafka_bootstrap, topic_prefix, relay_client_factory
):
    config = make_config(kafka_bootstrap, topic_prefix)
    client = await relay_client_factory(config)
    declared = config.server.max_body_bytes + 1
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
        f"Content-Length: {declared}\r\nX-TaskNation-Signature: {'0' * 64}\r\n\r\n"
    ).encode()

    answer = await send_raw(client.port, [head])

    assert answer is not None
    assert answer.status == 413
    assert answer.json()["error"] == "body_too_large"


async def test_expect_continue_within_limit_published(
    kafka_bootstrap, topic_prefix, relay_client_factory
):
    client = await relay_client_factory(make_config(kafka_bootstrap, topic_prefix))
    body = event_body("lead.created", leadID="L7")

    response = await client.post(
        PATH, data=body, headers={**signed_headers(body), "Expect": "100-continue"}
    )

    assert response.status == 200
    assert (await response.json())["status"] == "published"
