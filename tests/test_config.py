import pytest

from relay.config import RECORD_OVERHEAD_BYTES, RETRY_SCHEDULE_S, load_config, parse_config
from relay.errors import ConfigError

MINIMAL = """
kafka:
  bootstrap_servers: ${BROKERS}
sources:
  - name: tasknation
    path: /webhooks/tasknation
    secrets: ["${SECRET}"]
"""
ENV = {"BROKERS": "127.0.0.1:9092", "SECRET": "very-secret-value"}


def test_minimal_config_gets_defaults() -> None:
    config = parse_config(MINIMAL, environ=ENV)
    assert config.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert config.server.port == 8080
    assert config.routing.topic_prefix == "tasknation."
    assert config.sources[0].signature_header == "X-TaskNation-Signature"
    assert config.sources[0].secret_bytes() == (b"very-secret-value",)


def test_example_config_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKNATION_WEBHOOK_SECRET", "example")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    config = load_config("config/relay.yaml")
    assert config.kafka.bootstrap_servers == "kafka:9092"


def test_secret_absent_from_repr_and_errors() -> None:
    config = parse_config(MINIMAL, environ=ENV)
    assert "very-secret-value" not in repr(config)
    assert "very-secret-value" not in str(config)
    broken = MINIMAL.replace('secrets: ["${SECRET}"]', 'secrets: ["${SECRET}"]\n    extra: 1')
    with pytest.raises(ConfigError) as caught:
        parse_config(broken, environ=ENV)
    assert "very-secret-value" not in str(caught.value)


def test_missing_variable_named() -> None:
    with pytest.raises(
        ConfigError, match=r"sources\[0\]\.secrets\[0\]: environment variable SECRET"
    ):
        parse_config(MINIMAL, environ={"BROKERS": "b:1"})


def test_variable_default_used() -> None:
    text = MINIMAL.replace("${BROKERS}", "${BROKERS:-kafka:9092}")
    config = parse_config(text, environ={"SECRET": "s"})
    assert config.kafka.bootstrap_servers == "kafka:9092"


def test_escaped_reference_kept_literal() -> None:
    text = MINIMAL.replace('["${SECRET}"]', '["$${NOT_A_VAR}"]')
    config = parse_config(text, environ=ENV)
    assert config.sources[0].secret_bytes() == (b"${NOT_A_VAR}",)


def test_unknown_key_rejected() -> None:
    with pytest.raises(ConfigError, match=r"server\.prot: Extra inputs are not permitted"):
        parse_config(MINIMAL + "server:\n  prot: 8080\n", environ=ENV)


def test_wrong_type_names_key_and_value() -> None:
    with pytest.raises(ConfigError, match=r"server\.port: .*integer.*'eighty'"):
        parse_config(MINIMAL + "server:\n  port: eighty\n", environ=ENV)


def test_empty_secret_rejected() -> None:
    with pytest.raises(
        ConfigError, match=r"sources\[0\]\.secrets: a webhook secret must not be empty"
    ):
        parse_config(MINIMAL, environ={**ENV, "SECRET": ""})


def test_invalid_bootstrap_rejected() -> None:
    with pytest.raises(ConfigError, match=r"kafka\.bootstrap_servers: expected host:port"):
        parse_config(MINIMAL, environ={**ENV, "BROKERS": "localhost"})


def test_duplicate_source_paths_rejected() -> None:
    text = MINIMAL + "  - name: second\n    path: /webhooks/tasknation\n    secrets: [x]\n"
    with pytest.raises(ConfigError, match="each path must be unique"):
        parse_config(text, environ=ENV)


def test_body_limit_must_fit_request_size() -> None:
    text = MINIMAL + "server:\n  max_body_bytes: 1048576\n"
    with pytest.raises(ConfigError, match=rf"max_request_size .* \+ {RECORD_OVERHEAD_BYTES}"):
        parse_config(text, environ=ENV)


def test_secret_from_file_strips_one_newline(tmp_path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-file\n\n")
    text = MINIMAL.replace('["${SECRET}"]', f"[{{file: {secret_file}}}]")
    config = parse_config(text, environ=ENV)
    assert config.sources[0].secret_bytes() == (b"from-file\n",)


def test_unreadable_secret_file_named(tmp_path) -> None:
    text = MINIMAL.replace('["${SECRET}"]', f"[{{file: {tmp_path}/absent}}]")
    with pytest.raises(ConfigError, match=r"cannot read secret file .*absent"):
        parse_config(text, environ=ENV)


def test_invalid_yaml_rejected() -> None:
    with pytest.raises(ConfigError, match="invalid YAML"):
        parse_config("kafka: [unclosed", environ=ENV)


def test_missing_file_named(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load_config(tmp_path / "absent.yaml")


def test_dedup_defaults_cover_retries() -> None:
    config = parse_config(MINIMAL, environ=ENV)
    assert config.dedup.window_s == 27 * 3600
    assert config.dedup.window_s >= RETRY_SCHEDULE_S
    assert config.dedup.max_ids == 500_000


def test_short_dedup_window_rejected() -> None:
    with pytest.raises(ConfigError, match=r"dedup\.window_s: .*greater than or equal to 95760"):
        parse_config(MINIMAL + "dedup:\n  window_s: 3600\n", environ=ENV)


def test_grace_shorter_than_deadline_rejected() -> None:
    text = MINIMAL + "server:\n  deadline_s: 5\n  shutdown_grace_s: 2\n"
    with pytest.raises(ConfigError, match=r"server: shutdown_grace_s \(2\.0\) must be at least"):
        parse_config(text, environ=ENV)


def test_server_timeouts_configurable() -> None:
    text = MINIMAL + "server:\n  keepalive_timeout_s: 30\n  shutdown_drain_s: 5\n"
    config = parse_config(text, environ=ENV)
    assert config.server.keepalive_timeout_s == 30
    assert config.server.shutdown_drain_s == 5
