"""The producer's partitioner against Kafka's Java client and aiokafka's hash."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from relay.partitioner import murmur2, partition_for

# Computed with Kafka 4.1.1's org.apache.kafka.common.utils.Utils.murmur2 (signed Java ints).
JAVA_MURMUR2 = [
    (b"", 275646681),
    (b"a", -1563381124),
    (b"ab", 316155434),
    (b"abc", 479470107),
    (b"abcd", -1323649548),
    (b"123456789", -1822237082),
    (b"evt_01HZX3K9Q2", -143699701),
    (b"lead_8f14e45fceea167a", 1010869626),
    (b"a-little-bit-longer-string", -1486304829),
    ("événement-ü".encode(), 913014121),
]


@pytest.mark.parametrize(("key", "java_hash"), JAVA_MURMUR2)
def test_murmur2_matches_java_client(key, java_hash):
    assert murmur2(key) == java_hash & 0xFFFFFFFF


@pytest.mark.parametrize(("key", "java_hash"), JAVA_MURMUR2)
def test_keyed_partition_matches_java_client(key, java_hash):
    partitions = list(range(12))
    # Java: Utils.toPositive(murmur2(key)) % numPartitions
    assert partition_for(key, partitions, partitions) == (java_hash & 0x7FFFFFFF) % 12


def test_murmur2_matches_aiokafka_hash():
    generator = random.Random(7)
    for length in range(0, 130):
        for _ in range(20):
            key = generator.randbytes(length)
            assert murmur2(key) == aiokafka_murmur2(key), key


def test_unkeyed_record_prefers_available():
    for _ in range(50):
        assert partition_for(None, [0, 1, 2, 3], [2]) == 2
    assert partition_for(None, [0, 1, 2, 3], []) in {0, 1, 2, 3}
