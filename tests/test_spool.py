"""The spool's file format and its recovery, bound, rollover and group commit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import relay.spool
from relay.errors import SpoolError, SpoolFull
from relay.routing import Record
from relay.spool import (
    CorruptFrame,
    Spool,
    check_frame,
    decode_payload,
    encode_frame,
    list_segments,
    scan_frames,
)


def make_record(index: int, key: bytes | None = b"lead-1", size: int = 100) -> Record:
    return Record(
        topic="tasknation.lead.created",
        key=key,
        value=(b'{"n":%d}' % index).ljust(size, b" "),
        headers=(("ce_id", b"evt_%d" % index), ("empty", b"")),
    )


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def open_spool(directory: Path, **overrides: int) -> Spool:
    settings = {"max_bytes": 1024 * 1024, "segment_bytes": 64 * 1024, "reserve_bytes": 1024}
    settings.update(overrides)
    return Spool(directory, **settings)


async def append_all(spool: Spool, count: int, start: int = 0) -> None:
    futures = [spool.append([make_record(start + index)]) for index in range(count)]
    await asyncio.gather(*futures)


async def read_all(spool: Spool, count: int) -> list[relay.spool.SpoolEntry]:
    entries: list[relay.spool.SpoolEntry] = []
    while len(entries) < count:
        entries += await asyncio.wait_for(spool.read(count - len(entries)), timeout=10)
    return entries


def append_bytes(path: Path, data: bytes) -> None:
    with open(path, "ab") as file:
        file.write(data)


def segment_bytes_on_disk(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.glob("*.seg"))


def test_frame_round_trip_keeps_fields() -> None:
    records = (make_record(1), make_record(2, key=None), Record("t", b"", b"", ()))

    frame = encode_frame(7, 1234, records)
    start, end = check_frame(frame, 0, 1 << 20)
    entry = decode_payload(frame[start:end])

    assert entry.sequence == 7
    assert entry.appended_at_ms == 1234
    assert entry.records == records


def test_flipped_bit_fails_crc() -> None:
    frame = bytearray(encode_frame(0, 0, [make_record(1)]))
    frame[-5] ^= 0x01

    with pytest.raises(CorruptFrame, match="CRC-32 mismatch"):
        check_frame(bytes(frame), 0, 1 << 20)


def test_torn_length_fails_check() -> None:
    frame = bytearray(encode_frame(0, 0, [make_record(1)]))
    frame[0] = 0x7F

    with pytest.raises(CorruptFrame, match="outside"):
        check_frame(bytes(frame), 0, 1 << 20)


def test_scan_stops_at_sequence_gap() -> None:
    data = encode_frame(5, 0, [make_record(1)]) + encode_frame(7, 0, [make_record(2)])

    frames, problem = scan_frames(data, 5, 1 << 20)

    assert [frame.sequence for frame in frames] == [5]
    assert problem is not None
    assert "sequence 7 where 6 was expected" in problem


async def test_entries_survive_reopen(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    await spool.open()
    await append_all(spool, 5)
    await spool.close()

    reopened = open_spool(tmp_path)
    await reopened.open()
    entries = await read_all(reopened, 5)
    await reopened.close()

    assert reopened.depth == 5
    assert [entry.sequence for entry in entries] == [0, 1, 2, 3, 4]
    assert entries[3].records == (make_record(3),)


async def test_torn_tail_discarded_on_open(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    await spool.open()
    await append_all(spool, 3)
    await spool.close()
    segment = list_segments(tmp_path)[-1]
    size = segment.path.stat().st_size
    torn = encode_frame(3, 0, [make_record(3)])
    append_bytes(segment.path, torn[: len(torn) // 2])

    reopened = open_spool(tmp_path)
    await reopened.open()
    entries = await read_all(reopened, 3)
    await append_all(reopened, 1, start=3)
    entries += await read_all(reopened, 1)
    await reopened.close()

    assert reopened.depth == 4
    assert [entry.sequence for entry in entries] == [0, 1, 2, 3]
    assert segment.path.stat().st_size == size + len(torn)


async def test_corrupt_last_frame_discarded(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    await spool.open()
    await append_all(spool, 3)
    await spool.close()
    segment = list_segments(tmp_path)[-1]
    data = bytearray(segment.path.read_bytes())
    data[-3] ^= 0xFF
    segment.path.write_bytes(bytes(data))

    reopened = open_spool(tmp_path)
    await reopened.open()
    await reopened.close()

    assert reopened.depth == 2
    assert len(data) - segment.path.stat().st_size == len(encode_frame(2, 0, [make_record(2)]))


async def test_acknowledged_entries_not_read_again(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    await spool.open()
    await append_all(spool, 5)
    await spool.acknowledge(await read_all(spool, 3))
    await spool.close()

    reopened = open_spool(tmp_path)
    await reopened.open()
    entries = await read_all(reopened, 2)
    await reopened.close()

    assert reopened.depth == 2
    assert [entry.sequence for entry in entries] == [3, 4]


async def test_segments_roll_and_get_deleted(tmp_path: Path) -> None:
    frame_bytes = len(encode_frame(0, 0, [make_record(0)]))
    spool = open_spool(tmp_path, segment_bytes=frame_bytes * 4)
    await spool.open()
    await append_all(spool, 10)
    segments_before = [segment.base for segment in list_segments(tmp_path)]

    entries = await read_all(spool, 10)
    await spool.acknowledge(entries[:6])
    segments_after_six = [segment.base for segment in list_segments(tmp_path)]
    await spool.acknowledge(entries[6:])
    segments_after_all = list_segments(tmp_path)
    await spool.close()

    assert segments_before == [0, 4, 8]
    assert segments_after_six == [4, 8]
    assert segments_after_all == []
    assert [entry.sequence for entry in entries] == list(range(10))
    assert spool.used_bytes == 0


async def test_full_spool_rejects_append(tmp_path: Path) -> None:
    frame_bytes = len(encode_frame(0, 0, [make_record(0)]))
    spool = open_spool(tmp_path, max_bytes=frame_bytes * 3, segment_bytes=frame_bytes * 3)
    await spool.open()
    await append_all(spool, 3)

    with pytest.raises(SpoolFull, match=r"cannot take \d+ more within spool.max_bytes"):
        spool.append([make_record(3)])
    stats = spool.stats()
    await spool.acknowledge(await read_all(spool, 3))
    await append_all(spool, 1, start=3)
    await spool.close()

    assert stats.full
    assert stats.used_bytes == frame_bytes * 3
    assert segment_bytes_on_disk(tmp_path) == frame_bytes


async def test_concurrent_appends_share_one_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs: list[int] = []
    real_sync = relay.spool._sync
    monkeypatch.setattr(relay.spool, "_sync", lambda fd: (syncs.append(fd), real_sync(fd)))
    spool = open_spool(tmp_path)
    await spool.open()

    await append_all(spool, 50)
    await spool.close()

    assert len(syncs) == 1


async def test_stats_report_depth_and_age(tmp_path: Path) -> None:
    clock = FakeClock()
    spool = Spool(
        tmp_path, max_bytes=1024 * 1024, segment_bytes=64 * 1024, reserve_bytes=0, clock=clock
    )
    await spool.open()
    empty = spool.stats()
    await append_all(spool, 2)
    clock.now += 30
    await append_all(spool, 1, start=2)
    clock.now += 12.5
    stats = spool.stats()
    await spool.acknowledge(await read_all(spool, 2))
    after = spool.stats()
    await spool.close()

    assert empty.depth == 0
    assert empty.oldest_age_s is None
    assert stats.depth == 3
    assert stats.oldest_age_s == pytest.approx(42.5)
    assert after.depth == 1
    assert after.oldest_age_s == pytest.approx(12.5)


async def test_second_process_cannot_open_folder(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    await spool.open()
    try:
        with pytest.raises(SpoolError, match="in use by another relay process"):
            await open_spool(tmp_path).open()
    finally:
        await spool.close()


async def test_read_waits_for_synced_entry(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    await spool.open()
    reader = asyncio.create_task(spool.read(10))
    await asyncio.sleep(0.05)
    assert not reader.done()

    await append_all(spool, 1)
    entries = await asyncio.wait_for(reader, timeout=10)
    await spool.close()

    assert [entry.sequence for entry in entries] == [0]
