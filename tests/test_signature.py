import hashlib
import hmac

import pytest

from relay.errors import SignatureMalformed, SignatureMismatch, SignatureMissing
from relay.signature import MAX_CANDIDATES, parse_signature_header, sign, verify_signature

BODY = b'{"id":"evt_1","event":"lead.created"}'
SECRET = b"s3cret"
GOOD = hmac.new(SECRET, BODY, hashlib.sha256).hexdigest()


def test_sign_matches_hmac_sha256_hex() -> None:
    assert sign(BODY, SECRET) == GOOD
    assert GOOD.lower() == GOOD


def test_lowercase_hex_accepted() -> None:
    verify_signature(BODY, GOOD, [SECRET])


@pytest.mark.parametrize(
    "header",
    [GOOD.upper(), f"sha256={GOOD}", f"SHA256={GOOD}", f"  {GOOD}  ", f"{'0' * 64},{GOOD}"],
)
def test_accepted_header_shapes(header: str) -> None:
    verify_signature(BODY, header, [SECRET])


def test_second_secret_accepted() -> None:
    verify_signature(BODY, GOOD, [b"old-secret", SECRET])


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_signature_rejected(header: str | None) -> None:
    with pytest.raises(SignatureMissing, match="missing or empty"):
        verify_signature(BODY, header, [SECRET])


@pytest.mark.parametrize(
    "header",
    [
        GOOD[:-1],
        GOOD + "0",
        "z" * 64,
        "é" * 64,
        "sha1=" + GOOD,
        GOOD + ",",
        "md5=abc",
        "0x" + GOOD[2:],
    ],
)
def test_malformed_signature_rejected(header: str) -> None:
    with pytest.raises(SignatureMalformed, match="64 hex digits"):
        verify_signature(BODY, header, [SECRET])


def test_too_many_candidates_rejected() -> None:
    header = ",".join([GOOD] * (MAX_CANDIDATES + 1))
    with pytest.raises(SignatureMalformed, match="candidates"):
        parse_signature_header(header)


def test_very_long_header_rejected() -> None:
    with pytest.raises(SignatureMalformed, match="characters"):
        parse_signature_header("a" * 100_000)


def test_wrong_secret_rejected() -> None:
    with pytest.raises(SignatureMismatch, match="does not match"):
        verify_signature(BODY, GOOD, [b"other-secret"])


def test_modified_body_rejected() -> None:
    with pytest.raises(SignatureMismatch):
        verify_signature(BODY + b" ", GOOD, [SECRET])


def test_reserialized_body_rejected() -> None:
    reserialized = b'{"id": "evt_1", "event": "lead.created"}'
    with pytest.raises(SignatureMismatch):
        verify_signature(reserialized, GOOD, [SECRET])
