"""Test certificates for the Kafka broker's TLS listeners, made with ``cryptography``.

``make_test_pki`` writes PEM files into a folder: a certificate authority, a
broker certificate and a client certificate signed by it, and a second
authority that signed nothing the broker uses, for the untrusted case. Every
certificate is valid for one day. The broker certificate names only the
address ``127.0.0.1``, so a connection to ``localhost`` fails hostname
verification.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENT_KEY_PASSWORD = "client-key-password"


@dataclass(frozen=True)
class TestPki:
    """Paths of the PEM files that ``make_test_pki`` wrote."""

    __test__ = False  # a data class, not a pytest test class

    ca_file: Path
    untrusted_ca_file: Path
    broker_keystore: Path
    client_cert_file: Path
    client_key_file: Path
    client_key_password: str


@dataclass(frozen=True)
class _Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def make_test_pki(directory: Path) -> TestPki:
    """Write a test certificate authority and certificates signed by it into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _issue("relay test CA", issuer=None, usage=None)
    untrusted_ca = _issue("relay untrusted test CA", issuer=None, usage=None)
    broker = _issue("kafka broker", issuer=ca, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    client = _issue("tasknation-relay", issuer=ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH)

    ca_file = _write(directory / "ca.pem", _cert_pem(ca))
    untrusted_ca_file = _write(directory / "untrusted-ca.pem", _cert_pem(untrusted_ca))
    # Kafka's PEM keystore is one file: the PKCS#8 private key, then the certificate chain.
    # The key is not encrypted because Kafka 4.1 on Java 17 cannot read PBES2-encrypted keys.
    broker_keystore = _write(
        directory / "broker-keystore.pem",
        _key_pem(broker, None) + _cert_pem(broker) + _cert_pem(ca),
    )
    client_cert_file = _write(directory / "client.pem", _cert_pem(client))
    client_key_file = _write(directory / "client-key.pem", _key_pem(client, CLIENT_KEY_PASSWORD))
    return TestPki(
        ca_file=ca_file,
        untrusted_ca_file=untrusted_ca_file,
        broker_keystore=broker_keystore,
        client_cert_file=client_cert_file,
        client_key_file=client_key_file,
        client_key_password=CLIENT_KEY_PASSWORD,
    )


def _issue(
    common_name: str,
    *,
    issuer: _Issued | None,
    usage: x509.ObjectIdentifier | None,
) -> _Issued:
    """Issue a certificate; without ``issuer`` it is a self-signed certificate authority."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=0), critical=True
        ).add_extension(_key_usage(cert_sign=True), critical=True)
    else:
        assert usage is not None
        loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
        builder = (
            builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName([loopback]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
                critical=False,
            )
        )
    signing_key = issuer.key if issuer else key
    return _Issued(key=key, cert=builder.sign(signing_key, hashes.SHA256()))


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _cert_pem(issued: _Issued) -> bytes:
    return issued.cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(issued: _Issued, password: str | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    return issued.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    path.chmod(0o600)
    return path
