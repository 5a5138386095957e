"""Micro-benchmarks of the producer's partitioner (relay/partitioner.py) against aiokafka's."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner
from pytest_benchmark.fixture import BenchmarkFixture

from relay.partitioner import partition_for

PARTITIONS = list(range(3))
# A lead id, the default record key, and a longer event id.
KEYS = {"leadID": b"299614694480093245", "event id": b"evt_3f9c2a71_0000012345"}


@pytest.mark.parametrize("key", list(KEYS))
def test_relay_partitioner(benchmark: BenchmarkFixture, key: str) -> None:
    partition = benchmark(partition_for, KEYS[key], PARTITIONS, PARTITIONS)
    assert partition == DefaultPartitioner()(KEYS[key], PARTITIONS, PARTITIONS)


@pytest.mark.parametrize("key", list(KEYS))
def test_aiokafka_partitioner(benchmark: BenchmarkFixture, key: str) -> None:
    partition = benchmark(DefaultPartitioner(), KEYS[key], PARTITIONS, PARTITIONS)
    assert partition in PARTITIONS
