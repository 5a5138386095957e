"""The ``kafka`` security settings: validation, secrets, SSL context and client arguments."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from relay.config import KafkaSslConfig, parse_config
from relay.errors import ConfigError
from relay.kafka_security import create_ssl_context, kafka_client_kwargs
from tests.kafka_tls import TestPki, make_test_pki

SASL_PASSWORD = "sasl-password-value"
SOURCES = "sources: [{name: tasknation, path: /webhooks/tasknation, secrets: [s]}]\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def kafka_yaml(*lines: str) -> str:
    body = "".join(f"  {line}\n" for line in lines)
    return f"kafka:\n  bootstrap_servers: 127.0.0.1:9093\n{body}{SOURCES}"


def client_certificate_lines(pki: TestPki, password: str | None) -> list[str]:
    lines = [
        "ssl:",
        f"  ca_file: {pki.ca_file}",
        f"  cert_file: {pki.client_cert_file}",
        f"  key_file: {pki.client_key_file}",
    ]
    if password is not None:
        lines.append(f"  key_password: {password}")
    return lines


SCRAM_LINES = [
    "security_protocol: SASL_SSL",
    "sasl:",
    "  mechanism: SCRAM-SHA-512",
    "  username: relay",
    f"  password: {SASL_PASSWORD}",
]


def test_plaintext_is_default() -> None:
    config = parse_config(kafka_yaml())

    kwargs = kafka_client_kwargs(config.kafka)

    assert kwargs == {
        "bootstrap_servers": "127.0.0.1:9093",
        "client_id": "tasknation-relay",
        "security_protocol": "PLAINTEXT",
    }


def test_scram_over_ssl_kwargs(pki: TestPki) -> None:
    config = parse_config(kafka_yaml(*SCRAM_LINES, "ssl:", f"  ca_file: {pki.ca_file}"))

    kwargs = kafka_client_kwargs(config.kafka)

    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "relay"
    assert kwargs["sasl_plain_password"] == SASL_PASSWORD
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_ssl_without_section_uses_defaults() -> None:
    config = parse_config(kafka_yaml("security_protocol: SSL"))

    context = kafka_client_kwargs(config.kafka)["ssl_context"]

    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_ca_file_is_only_trust_anchor(pki: TestPki) -> None:
    context = create_ssl_context(KafkaSslConfig(ca_file=pki.ca_file))

    subjects = [cert["subject"] for cert in context.get_ca_certs()]

    assert subjects == [((("commonName", "relay test CA"),),)]


def test_hostname_check_can_be_disabled(pki: TestPki) -> None:
    context = create_ssl_context(KafkaSslConfig(ca_file=pki.ca_file, check_hostname=False))

    assert context.check_hostname is False
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_client_certificate_with_key_password(pki: TestPki) -> None:
    text = kafka_yaml("security_protocol: SSL", *client_certificate_lines(pki, "${KEY_PW}"))

    config = parse_config(text, environ={"KEY_PW": pki.client_key_password})

    assert config.kafka.ssl is not None
    assert config.kafka.ssl.cert_file == pki.client_cert_file


def test_key_password_from_file(pki: TestPki, tmp_path: Path) -> None:
    password_file = tmp_path / "key-password"
    password_file.write_text(pki.client_key_password + "\n")
    lines = client_certificate_lines(pki, f"{{file: {password_file}}}")

    config = parse_config(kafka_yaml("security_protocol: SSL", *lines))

    assert config.kafka.ssl is not None
    assert config.kafka.ssl.key_password is not None
    assert config.kafka.ssl.key_password.get_secret_value() == pki.client_key_password


def test_sasl_password_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "from-environment")
    lines = [*SCRAM_LINES[:-1], "  password: {env: KAFKA_SASL_PASSWORD}"]

    config = parse_config(kafka_yaml(*lines))

    assert kafka_client_kwargs(config.kafka)["sasl_plain_password"] == "from-environment"


def test_sasl_password_from_file(tmp_path: Path) -> None:
    password_file = tmp_path / "sasl-password"
    password_file.write_text("from-file\n")
    lines = [*SCRAM_LINES[:-1], f"  password: {{file: {password_file}}}"]

    config = parse_config(kafka_yaml(*lines))

    assert kafka_client_kwargs(config.kafka)["sasl_plain_password"] == "from-file"


def test_secrets_absent_from_repr(pki: TestPki) -> None:
    lines = [*SCRAM_LINES, *client_certificate_lines(pki, pki.client_key_password)]

    config = parse_config(kafka_yaml(*lines))

    for text in (repr(config), str(config), repr(config.kafka.sasl), repr(config.kafka.ssl)):
        assert SASL_PASSWORD not in text
        assert pki.client_key_password not in text


def test_wrong_key_password_named(pki: TestPki) -> None:
    text = kafka_yaml("security_protocol: SSL", *client_certificate_lines(pki, "wrong-password"))

    with pytest.raises(ConfigError, match=r"kafka\.ssl: cannot load the client certificate") as err:
        parse_config(text)

    assert "check that key_password is right" in str(err.value)
    assert "wrong-password" not in str(err.value)


def test_encrypted_key_needs_password(pki: TestPki) -> None:
    text = kafka_yaml("security_protocol: SSL", *client_certificate_lines(pki, None))

    with pytest.raises(ConfigError, match="if the key is encrypted, set key_password"):
        parse_config(text)


def test_missing_ca_file_named(tmp_path: Path) -> None:
    text = kafka_yaml("security_protocol: SSL", "ssl:", f"  ca_file: {tmp_path}/absent.pem")

    with pytest.raises(
        ConfigError, match=r"kafka\.ssl: cannot load ca_file .*absent\.pem: No such file"
    ):
        parse_config(text)


def test_key_without_certificate_rejected(pki: TestPki) -> None:
    text = kafka_yaml("security_protocol: SSL", "ssl:", f"  key_file: {pki.client_key_file}")

    with pytest.raises(ConfigError, match=r"kafka\.ssl: key_file and key_password need cert_file"):
        parse_config(text)


def test_ssl_section_needs_ssl_protocol(pki: TestPki) -> None:
    text = kafka_yaml("ssl:", f"  ca_file: {pki.ca_file}")

    with pytest.raises(ConfigError, match="ssl is set but security_protocol is PLAINTEXT"):
        parse_config(text)


def test_sasl_section_needs_sasl_protocol() -> None:
    lines = ["security_protocol: SSL", *SCRAM_LINES[1:]]

    with pytest.raises(ConfigError, match="sasl is set but security_protocol is SSL"):
        parse_config(kafka_yaml(*lines))


def test_sasl_protocol_needs_sasl_section() -> None:
    with pytest.raises(ConfigError, match="security_protocol SASL_PLAINTEXT needs sasl"):
        parse_config(kafka_yaml("security_protocol: SASL_PLAINTEXT"))


def test_unknown_mechanism_rejected() -> None:
    lines = [line.replace("SCRAM-SHA-512", "GSSAPI") for line in SCRAM_LINES]

    with pytest.raises(ConfigError, match=r"kafka\.sasl\.mechanism: .*'SCRAM-SHA-256'.*'GSSAPI'"):
        parse_config(kafka_yaml(*lines))


def test_unknown_protocol_rejected() -> None:
    with pytest.raises(ConfigError, match=r"kafka\.security_protocol: .*'SASL_SSL'.*'TLS'"):
        parse_config(kafka_yaml("security_protocol: TLS"))


def test_empty_sasl_password_rejected() -> None:
    lines = [*SCRAM_LINES[:-1], "  password: ''"]

    with pytest.raises(ConfigError, match=r"kafka\.sasl\.password: .*must not be empty"):
        parse_config(kafka_yaml(*lines))


def test_sasl_password_absent_from_errors() -> None:
    lines = [*SCRAM_LINES, "  extra: 1"]

    with pytest.raises(ConfigError, match=r"kafka\.sasl\.extra: Extra inputs") as err:
        parse_config(kafka_yaml(*lines))

    assert SASL_PASSWORD not in str(err.value)


def test_non_string_password_hidden() -> None:
    lines = [*SCRAM_LINES[:-1], "  password: [12345678]"]

    with pytest.raises(ConfigError, match=r"kafka\.sasl\.password: ") as err:
        parse_config(kafka_yaml(*lines))

    assert "12345678" not in str(err.value)
