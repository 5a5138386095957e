"""Micro-benchmarks of signature verification (relay/signature.py)."""

from __future__ import annotations

from pytest_benchmark.fixture import BenchmarkFixture

from bench.micro.conftest import SECRET
from bench.payloads import Delivery
from relay.signature import parse_signature_header, verify_signature


def test_verify_signature(benchmark: BenchmarkFixture, delivery: Delivery) -> None:
    benchmark(verify_signature, delivery.body, delivery.signature, (SECRET,))


def test_verify_signature_two_secrets(benchmark: BenchmarkFixture, delivery: Delivery) -> None:
    # During a secret rotation every body is hashed once per configured secret.
    benchmark(verify_signature, delivery.body, delivery.signature, (b"old-secret", SECRET))


def test_parse_signature_header(benchmark: BenchmarkFixture, delivery: Delivery) -> None:
    benchmark(parse_signature_header, delivery.signature)
