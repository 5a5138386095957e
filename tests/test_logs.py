import logging
import sys

import orjson

from relay.logs import InvalidHttpFilter, JsonFormatter, RepeatFilter, TextFormatter


def make_record(msg: str = "rejected delivery: %s", args: tuple[object, ...] = ("x",), **extra):
    record = logging.LogRecord("relay.handler", logging.INFO, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_text_format_appends_context() -> None:
    line = TextFormatter().format(make_record(event_id="evt_1", source="tasknation"))
    assert line.endswith("relay.handler: rejected delivery: x event_id=evt_1 source=tasknation")


def test_text_format_without_context() -> None:
    line = TextFormatter().format(make_record())
    assert line.endswith("relay.handler: rejected delivery: x")


def test_json_format_one_object_per_line() -> None:
    line = JsonFormatter().format(make_record(event_id="evt_1", reason="signature_mismatch"))
    document = orjson.loads(line)
    assert "\n" not in line
    assert document["message"] == "rejected delivery: x"
    assert document["level"] == "INFO"
    assert document["logger"] == "relay.handler"
    assert document["event_id"] == "evt_1"
    assert document["reason"] == "signature_mismatch"
    assert "source" not in document


def test_json_format_includes_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "relay", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    document = orjson.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in document["exception"]


def test_repeat_filter_limits_burst_and_reports() -> None:
    now = [0.0]
    repeat_filter = RepeatFilter(burst=3, interval_s=60, clock=lambda: now[0])

    passed = [repeat_filter.filter(make_record()) for _ in range(10)]
    assert passed == [True] * 3 + [False] * 7

    now[0] = 61.0
    record = make_record()
    assert repeat_filter.filter(record)
    assert record.getMessage() == "rejected delivery: x (suppressed 7 similar messages)"


def test_repeat_filter_counts_templates_apart() -> None:
    repeat_filter = RepeatFilter(burst=1, interval_s=60, clock=lambda: 0.0)
    assert repeat_filter.filter(make_record("first %s"))
    assert repeat_filter.filter(make_record("second %s"))
    assert not repeat_filter.filter(make_record("first %s"))


def test_invalid_http_record_loses_raw_bytes() -> None:
    from aiohttp.http_exceptions import BadHttpMessage

    try:
        raise BadHttpMessage('Expected LF after chunk data: b\'{"id": "evt_secret_body"}\'')
    except BadHttpMessage:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s",
        ("127.0.0.1",), exc_info,
    )  # fmt: skip

    assert InvalidHttpFilter().filter(record)

    line = TextFormatter().format(record)
    assert "evt_secret_body" not in line
    assert "BadHttpMessage (status 400)" in line
    assert record.levelno == logging.INFO


def test_own_exceptions_keep_traceback() -> None:
    try:
        raise ValueError("a bug")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "aiohttp.server", logging.ERROR, __file__, 1, "Error handling request", (), exc_info
    )

    assert InvalidHttpFilter().filter(record)

    assert record.exc_info is exc_info
    assert record.levelno == logging.ERROR
