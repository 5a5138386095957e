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
    with pytest.raises(ConfigError, match=r"sources\[0\]\.secrets: every webhook secret is empty"):
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


def with_routing(routing: str) -> str:
    return MINIMAL + "routing:\n" + routing


@pytest.mark.parametrize(
    ("routing", "message"),
    [
        (
            "  routes:\n    - events: lead.*\n      topics: ['t.{lead}']\n",
            r"routing\.routes\[0\]\.topics\[0\]: invalid topic 't\.\{lead\}': unknown field",
        ),
        (
            "  routes:\n    - events: lead.*\n      topics: ['t/x']\n",
            r"routing\.routes\[0\]\.topics\[0\]: invalid topic 't/x': expected a topic name",
        ),
        (
            "  routes:\n    - events: lead.*\n      topics: ['..']\n",
            r"routing\.routes\[0\]\.topics\[0\]: invalid topic '\.\.': .*neither",
        ),
        (
            "  routes:\n    - events: 'lead created'\n      topics: [t]\n",
            r"routing\.routes\[0\]\.events\[0\]: invalid event pattern 'lead created'",
        ),
        (
            "  routes:\n    - events: lead.*\n",
            r"routing\.routes\[0\]: expected topics \(one or more topic names\) or drop: true",
        ),
        (
            "  routes:\n    - events: lead.*\n      topics: [t]\n      drop: true\n",
            r"routing\.routes\[0\]: a route with drop: true takes no topics",
        ),
        (
            "  routes:\n    - events: lead.*\n      topics: [t]\n      colour: red\n",
            r"routing\.routes\[0\]\.colour: Extra inputs are not permitted \(got 'red'\)",
        ),
        ("  routes: []\n", r"routing\.routes: .*at least 1 item"),
        (
            "  topic_prefix: a.\n  routes:\n    - events: '*'\n      topics: [t]\n",
            r"routing: topic_prefix applies only when routes is not set",
        ),
        ("  topic_prefix: 'a/'\n", r"routing\.topic_prefix: invalid topic prefix 'a/'"),
        ("  unrouted_topic: 'a b'\n", r"routing\.unrouted_topic: invalid topic name 'a b'"),
        ("  key_paths: [leadID]\n", r"routing\.key_paths\[0\]: invalid key path 'leadID'"),
        (
            "  content_mode: json\n",
            r"routing\.content_mode: Input should be 'binary' or 'structured' \(got 'json'\)",
        ),
        (
            "  event_types: [lead.created, 'lead/x']\n",
            r"routing\.event_types: invalid event type 'lead/x'",
        ),
        (
            "  topic_defaults: {partitions: 0}\n",
            r"routing\.topic_defaults\.partitions: .*greater than or equal to 1 \(got 0\)",
        ),
        (
            "  topic_defaults: {configs: {'retention ms': 1}}\n",
            r"invalid topic config name 'retention ms'",
        ),
        (
            "  topic_overrides: {tasknation.leads: {partitions: 3}}\n",
            r"routing\.topic_overrides: \['tasknation\.leads'\] are not topics that the relay "
            r"writes to; expected some of \[.*'tasknation\.lead\.created'",
        ),
    ],
)
def test_invalid_routing_names_path(routing: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(with_routing(routing), environ=ENV)


def test_item_errors_hide_length_error() -> None:
    text = with_routing("  routes:\n    - events: lead.*\n      topics: ['t/x']\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ=ENV)
    assert "at least 1 item" not in str(caught.value)


def test_unquoted_star_gets_hint() -> None:
    text = with_routing("  routes:\n    - events: *\n      topics: [t]\n")
    with pytest.raises(ConfigError, match=r"quote a value that starts with '\*'"):
        parse_config(text, environ=ENV)


def test_single_strings_become_lists() -> None:
    text = with_routing(
        "  key_paths: data.leadID\n  routes:\n    - events: lead.*\n      topics: t.{event}\n"
    )
    config = parse_config(text, environ=ENV)
    assert config.routing.key_paths == ("data.leadID",)
    assert config.routing.routes[0].events == ("lead.*",)
    assert config.routing.routes[0].topics == ("t.{event}",)


def test_topic_settings_merge_override() -> None:
    text = with_routing(
        "  topic_defaults:\n"
        "    partitions: 6\n"
        "    replication_factor: '3'\n"
        "    configs: {retention.ms: 604800000, unclean.leader.election.enable: false}\n"
        "  topic_overrides:\n"
        "    tasknation.deadletter: {partitions: 1, configs: {retention.ms: 2592000000}}\n"
    )
    routing = parse_config(text, environ=ENV).routing

    dead_letter = routing.settings_for("tasknation.deadletter")
    other = routing.settings_for("tasknation.lead.created")

    assert dead_letter.partitions == 1
    assert dead_letter.replication_factor == 3
    assert dead_letter.configs == {
        "retention.ms": "2592000000",
        "unclean.leader.election.enable": "false",
    }
    assert other.partitions == 6
    assert other.configs["retention.ms"] == "604800000"


def test_secret_env_entry_uses_environ() -> None:
    text = MINIMAL.replace('["${SECRET}"]', "[{env: NEXT_SECRET}, old-secret]")
    config = parse_config(text, environ={**ENV, "NEXT_SECRET": "next"})
    assert config.sources[0].secret_bytes() == (b"next", b"old-secret")


def test_missing_secret_env_named() -> None:
    text = MINIMAL.replace('["${SECRET}"]', "[{env: NEXT_SECRET}]")
    with pytest.raises(
        ConfigError, match=r"sources\[0\]\.secrets: .*environment variable NEXT_SECRET is not set"
    ):
        parse_config(text, environ=ENV)


def test_unset_rotation_secret_skipped() -> None:
    text = MINIMAL.replace('["${SECRET}"]', '["${SECRET}", "${PREVIOUS_SECRET:-}"]')
    config = parse_config(text, environ=ENV)
    assert config.sources[0].secret_bytes() == (b"very-secret-value",)


def test_allow_lists_parsed() -> None:
    text = MINIMAL + (
        "    allowed_event_types: lead.*\n    allowed_business_ids: [468046965846925323, 'B-2']\n"
    )
    source = parse_config(text, environ=ENV).sources[0]
    assert source.allowed_event_types == ("lead.*",)
    assert source.allowed_business_ids == frozenset({"468046965846925323", "B-2"})
    assert source.allows_event_type("lead.created")
    assert not source.allows_event_type("payment.received")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            "    allowed_business_ids: [4.68e+17]\n",
            r"sources\[0\]\.allowed_business_ids\[0\]: 4\.68e\+17 is a float; quote the value",
        ),
        ("    allowed_business_ids: []\n", r"sources\[0\]\.allowed_business_ids: .*at least 1"),
        ("    allowed_business_ids: ['a b']\n", r"invalid business ID 'a b'"),
        ("    allowed_event_types: ['lead/x']\n", r"invalid event pattern 'lead/x'"),
        (
            "    signature_header: 'X Signature'\n",
            r"sources\[0\]\.signature_header: String should match pattern",
        ),
    ],
)
def test_invalid_source_names_path(lines: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(MINIMAL + lines, environ=ENV)


def test_list_input_never_shown() -> None:
    text = MINIMAL.replace("    path: /webhooks/tasknation\n", "    path: [/a]\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(text + "  - name: other\n", environ=ENV)
    assert "very-secret-value" not in str(caught.value)
    assert "sources[1].path: Field required" in str(caught.value)


def test_spool_disabled_by_default() -> None:
    config = parse_config(MINIMAL, environ=ENV)
    assert config.spool.enabled is False
    assert config.kafka.health_check_interval_s == 5.0


def test_enabled_spool_needs_path() -> None:
    text = MINIMAL + "spool:\n  enabled: true\n"
    with pytest.raises(ConfigError, match=r"spool\.path is required when spool\.enabled is true"):
        parse_config(text, environ=ENV)


def test_spool_reserve_below_deadline() -> None:
    text = MINIMAL + "server:\n  deadline_s: 2\nspool:\n  enabled: true\n  path: /tmp/s\n"
    text += "  write_reserve_s: 2\n"
    with pytest.raises(ConfigError, match=r"spool.write_reserve_s \(2.0\) must be less than"):
        parse_config(text, environ=ENV)


def test_spool_segment_within_max_bytes() -> None:
    text = MINIMAL + "spool:\n  max_bytes: 1048576\n  segment_bytes: 2097152\n"
    with pytest.raises(ConfigError, match=r"spool.segment_bytes \(2097152\) must not exceed"):
        parse_config(text, environ=ENV)


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
