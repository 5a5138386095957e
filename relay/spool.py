"""Durable write-ahead spool for deliveries that Kafka cannot take in time.

The spool folder holds:

- ``<sequence>.seg`` segments, named by the 20-digit sequence number of their
  first frame. Frames are appended in order and a segment is closed once it
  reaches ``segment_bytes``.
- ``committed``: the sequence number below which every frame reached Kafka,
  replaced atomically after each forwarded batch.
- ``lock``: held with ``flock`` by the one process that uses the folder.

A frame is ``length u32 | crc32 u32 | payload`` (big-endian). The CRC-32 covers
the four length bytes and the payload, so a torn length is caught too. The
payload is ``version u8 | sequence u64 | appended_at_ms i64 | count u16``
followed by ``count`` records, each ``topic (u16 length) | key (i32 length,
-1 for none) | value (u32 length) | header count u16 | headers`` with each
header ``name (u16 length) | value (u32 length)``.

A frame counts as written once ``fdatasync`` returned. Concurrent appends
share one write and one sync (group commit), done in a worker thread so the
event loop keeps serving. At start the last frames of a segment that fail the
length, CRC or sequence check are cut off. They were never synced, so no
caller got a success result for them.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import struct
import time
import zlib
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from relay.errors import SpoolError, SpoolFull, SpoolUnavailable
from relay.routing import Record

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_FRAME_HEADER = struct.Struct(">II")
_PAYLOAD_HEADER = struct.Struct(">BQqH")
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_SEGMENT_NAME = re.compile(r"^(\d{20})\.seg\Z")
_COMMITTED_FILE = "committed"
_LOCK_FILE = "lock"
# A forwarder read returns at most this many bytes of frames, plus one frame.
_READ_CHUNK_BYTES = 4 * 1024 * 1024
# fdatasync flushes the data and the file size; macOS has only fsync.
_sync = getattr(os, "fdatasync", os.fsync)


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One spooled delivery: the records of one request, in order."""

    sequence: int
    appended_at_ms: int
    records: tuple[Record, ...]


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """Depth and disk use of the spool, for readiness and metrics."""

    depth: int
    oldest_age_s: float | None
    used_bytes: int
    max_bytes: int
    full: bool


class CorruptFrame(ValueError):
    """A frame whose length, CRC, sequence number or layout is invalid."""


# ---------------------------------------------------------------------------
# Frame format


def encode_frame(sequence: int, appended_at_ms: int, records: Sequence[Record]) -> bytes:
    """Return the frame that stores ``records`` under ``sequence``."""
    parts = [_PAYLOAD_HEADER.pack(FORMAT_VERSION, sequence, appended_at_ms, len(records))]
    for record in records:
        topic = record.topic.encode()
        parts += [_U16.pack(len(topic)), topic]
        if record.key is None:
            parts.append(_I32.pack(-1))
        else:
            parts += [_I32.pack(len(record.key)), record.key]
        parts += [_U32.pack(len(record.value)), record.value, _U16.pack(len(record.headers))]
        for name, value in record.headers:
            encoded_name = name.encode()
            parts += [_U16.pack(len(encoded_name)), encoded_name, _U32.pack(len(value)), value]

    payload = b"".join(parts)
    length = _U32.pack(len(payload))
    return length + _U32.pack(zlib.crc32(payload, zlib.crc32(length))) + payload


def check_frame(data: bytes | memoryview, offset: int, max_frame_bytes: int) -> tuple[int, int]:
    """Validate the frame at ``offset`` and return its payload's start and end offsets.

    Raises ``CorruptFrame`` for a short header, a length beyond the data or
    ``max_frame_bytes``, or a CRC mismatch.
    """
    if len(data) - offset < _FRAME_HEADER.size:
        raise CorruptFrame(f"{len(data) - offset} bytes left, too few for a frame header")
    length, crc = _FRAME_HEADER.unpack_from(data, offset)
    start = offset + _FRAME_HEADER.size
    if length < _PAYLOAD_HEADER.size or length > max_frame_bytes:
        raise CorruptFrame(f"frame length {length} is outside 21..{max_frame_bytes}")
    if start + length > len(data):
        raise CorruptFrame(f"frame length {length} runs past the end of the data")
    view = memoryview(data)
    if zlib.crc32(view[start : start + length], zlib.crc32(view[offset : offset + 4])) != crc:
        raise CorruptFrame("CRC-32 mismatch")
    return start, start + length


def read_frame_header(payload: bytes | memoryview) -> tuple[int, int]:
    """Return the sequence number and append time (ms) of a checked payload."""
    version, sequence, appended_at_ms, _ = _PAYLOAD_HEADER.unpack_from(payload, 0)
    if version != FORMAT_VERSION:
        raise CorruptFrame(f"unknown frame version {version}")
    return sequence, appended_at_ms


def decode_payload(payload: bytes | memoryview) -> SpoolEntry:
    """Return the entry stored in a checked payload; raises ``CorruptFrame``."""
    sequence, appended_at_ms = read_frame_header(payload)
    reader = _Reader(bytes(payload), _PAYLOAD_HEADER.size)
    count = _PAYLOAD_HEADER.unpack_from(payload, 0)[3]
    records = []
    for _ in range(count):
        topic = reader.take(reader.unpack(_U16)).decode()
        key_length = reader.unpack(_I32)
        key = None if key_length == -1 else reader.take(key_length)
        value = reader.take(reader.unpack(_U32))
        headers = []
        for _ in range(reader.unpack(_U16)):
            name = reader.take(reader.unpack(_U16)).decode()
            headers.append((name, reader.take(reader.unpack(_U32))))
        records.append(Record(topic=topic, key=key, value=value, headers=tuple(headers)))
    if reader.offset != len(payload):
        raise CorruptFrame(f"{len(payload) - reader.offset} bytes left after the last record")
    return SpoolEntry(sequence, appended_at_ms, tuple(records))


class _Reader:
    def __init__(self, data: bytes, offset: int) -> None:
        self.data = data
        self.offset = offset

    def unpack(self, layout: struct.Struct) -> int:
        if self.offset + layout.size > len(self.data):
            raise CorruptFrame("a record field runs past the end of the frame")
        (value,) = layout.unpack_from(self.data, self.offset)
        self.offset += layout.size
        result: int = value
        return result

    def take(self, length: int) -> bytes:
        if length < 0 or self.offset + length > len(self.data):
            raise CorruptFrame("a record field runs past the end of the frame")
        self.offset += length
        return self.data[self.offset - length : self.offset]


@dataclass(slots=True)
class ScannedFrame:
    sequence: int
    appended_at_ms: int
    end_offset: int


def scan_frames(
    data: bytes, first_sequence: int, max_frame_bytes: int
) -> tuple[list[ScannedFrame], str | None]:
    """Return the valid frames at the start of a segment and why the scan stopped early.

    The sequence numbers must run from ``first_sequence`` without a gap; the
    reason is None when every byte of ``data`` belongs to a valid frame.
    """
    frames: list[ScannedFrame] = []
    offset = 0
    expected = first_sequence
    while offset < len(data):
        try:
            start, end = check_frame(data, offset, max_frame_bytes)
            sequence, appended_at_ms = read_frame_header(memoryview(data)[start:end])
        except CorruptFrame as exc:
            return frames, f"{exc} at offset {offset}"
        if sequence != expected:
            return frames, f"sequence {sequence} where {expected} was expected at offset {offset}"
        frames.append(ScannedFrame(sequence, appended_at_ms, end))
        offset = end
        expected += 1
    return frames, None


# ---------------------------------------------------------------------------
# Segment files


@dataclass(slots=True)
class _Segment:
    """One segment file; ``size`` and ``last_sequence`` cover synced frames only."""

    base: int
    path: Path
    size: int = 0
    last_sequence: int | None = None


def segment_path(directory: Path, base: int) -> Path:
    return directory / f"{base:020d}.seg"


def list_segments(directory: Path) -> list[_Segment]:
    segments = []
    for path in directory.iterdir():
        match = _SEGMENT_NAME.match(path.name)
        if match:
            segments.append(_Segment(int(match.group(1)), path, path.stat().st_size))
    return sorted(segments, key=lambda segment: segment.base)


def sync_directory(directory: Path) -> None:
    """Make file creations, renames and deletions in ``directory`` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_committed(directory: Path) -> int:
    path = directory / _COMMITTED_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return 0
    if not text.isdigit():
        # Starting over from the oldest segment sends some records twice but loses none.
        log.warning("ignoring %s: expected a sequence number, found %r", path, text[:40])
        return 0
    return int(text)


def write_committed(directory: Path, sequence: int) -> None:
    """Replace the committed-offset file atomically: write, sync, rename, sync the folder."""
    temporary = directory / f"{_COMMITTED_FILE}.tmp"
    with open(temporary, "w", encoding="ascii") as file:
        file.write(f"{sequence}\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, directory / _COMMITTED_FILE)
    sync_directory(directory)


@dataclass(slots=True)
class _Recovered:
    segments: list[_Segment]
    committed: int
    next_sequence: int
    pending_timestamps_ms: list[int]
    read_segment: int | None
    read_offset: int


def recover(directory: Path, max_frame_bytes: int) -> _Recovered:
    """Check every segment, cut off torn tails and drop fully forwarded segments."""
    committed = read_committed(directory)
    segments: list[_Segment] = []
    timestamps: list[int] = []
    read_segment: int | None = None
    read_offset = 0
    next_sequence = committed

    for segment in list_segments(directory):
        frames = _recover_segment(segment, max_frame_bytes)
        if not frames or frames[-1].sequence < committed:
            segment.path.unlink()
            continue
        segments.append(segment)
        next_sequence = max(next_sequence, frames[-1].sequence + 1)
        previous_end = 0
        for frame in frames:
            if frame.sequence >= committed:
                if read_segment is None:
                    read_segment, read_offset = segment.base, previous_end
                timestamps.append(frame.appended_at_ms)
            previous_end = frame.end_offset

    sync_directory(directory)
    return _Recovered(segments, committed, next_sequence, timestamps, read_segment, read_offset)


def _recover_segment(segment: _Segment, max_frame_bytes: int) -> list[ScannedFrame]:
    data = segment.path.read_bytes()
    frames, problem = scan_frames(data, segment.base, max_frame_bytes)
    valid_bytes = frames[-1].end_offset if frames else 0
    if problem is not None:
        # Only the unsynced tail of the newest segment can be torn by a crash;
        # anywhere else this is damage to the disk and those records are lost.
        log.warning(
            "spool segment %s: cutting off %d bytes after the last valid frame (%s)",
            segment.path.name,
            len(data) - valid_bytes,
            problem,
        )
        with open(segment.path, "r+b") as file:
            file.truncate(valid_bytes)
            os.fsync(file.fileno())
    segment.size = valid_bytes
    segment.last_sequence = frames[-1].sequence if frames else None
    return frames


def read_entries(
    path: Path, offset: int, limit: int, max_records: int, max_frame_bytes: int
) -> tuple[list[SpoolEntry], int]:
    """Decode synced frames of one segment from ``offset`` up to ``limit``.

    Returns the entries and the offset after the last one. Stops after
    ``max_records`` entries or about 4 MiB. Raises ``CorruptFrame`` for a
    frame that was synced but no longer passes its CRC check.
    """
    entries: list[SpoolEntry] = []
    position = offset
    with open(path, "rb") as file:
        file.seek(offset)
        while position < limit and len(entries) < max_records:
            if position - offset >= _READ_CHUNK_BYTES:
                break
            header = file.read(_FRAME_HEADER.size)
            (length,) = _U32.unpack_from(header, 0) if len(header) >= 4 else (0,)
            frame = header + file.read(min(length, max_frame_bytes))
            start, end = check_frame(frame, 0, max_frame_bytes)
            entries.append(decode_payload(memoryview(frame)[start:end]))
            position += end
    return entries, position


# ---------------------------------------------------------------------------
# The spool


@dataclass(slots=True)
class _Pending:
    sequence: int
    frame: bytes
    done: asyncio.Future[None]


@dataclass(slots=True)
class _Written:
    """Changes made by one group commit, applied to the segment list on the event loop."""

    segments: list[_Segment] = field(default_factory=list)


class _SegmentWriter:
    """Appends frames to the newest segment; used by one worker thread at a time."""

    def __init__(self, directory: Path, segment_bytes: int) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.base: int | None = None
        self.size = 0
        self.file: BinaryIO | None = None

    def resume(self, segment: _Segment) -> None:
        self.base, self.size = segment.base, segment.size

    def write(self, batch: Sequence[_Pending]) -> _Written:
        written = _Written()
        for pending in batch:
            if self.base is None or (
                self.size > 0 and self.size + len(pending.frame) > self.segment_bytes
            ):
                self._roll(pending.sequence)
            file = self._open()
            file.write(pending.frame)
            self.size += len(pending.frame)
            assert self.base is not None
            if written.segments and written.segments[-1].base == self.base:
                written.segments[-1].size = self.size
                written.segments[-1].last_sequence = pending.sequence
            else:
                path = segment_path(self.directory, self.base)
                written.segments.append(_Segment(self.base, path, self.size, pending.sequence))
        if self.file is not None:
            self.file.flush()
            _sync(self.file.fileno())
        return written

    def close_segment(self) -> None:
        if self.file is not None:
            self.file.close()
        self.file, self.base, self.size = None, None, 0

    def _roll(self, base: int) -> None:
        if self.file is not None:
            self.file.flush()
            _sync(self.file.fileno())
        self.close_segment()
        self.base = base
        self._open()
        # The new file's name must survive a crash as well as its contents.
        sync_directory(self.directory)

    def _open(self) -> BinaryIO:
        if self.file is None:
            assert self.base is not None
            self.file = open(segment_path(self.directory, self.base), "ab")  # noqa: SIM115
        return self.file


class Spool:
    """An append-only log of deliveries on disk, with group commit and bounded size.

    ``append`` stores a delivery and returns once it is synced to disk.
    ``read`` and ``acknowledge`` are used by one forwarder, which reads the
    entries in order and acknowledges them once Kafka has them.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int,
        reserve_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._directory = Path(directory)
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        # Free space below one largest delivery reports the spool as full.
        self._reserve_bytes = reserve_bytes
        self._clock = clock
        self._writer = _SegmentWriter(self._directory, segment_bytes)
        self._write_lock = asyncio.Lock()
        self._lock_file: BinaryIO | None = None

        self._segments: list[_Segment] = []
        self._pending: list[_Pending] = []
        self._pending_bytes = 0
        self._next_sequence = 0
        self._durable_sequence = 0
        self._committed = 0
        # Append times (ms) of the records not yet forwarded, oldest first:
        # 8 bytes per record, trimmed from the front as records are forwarded.
        self._timestamps = array("q")
        self._timestamps_head = 0
        self._read_segment: int | None = None
        self._read_offset = 0
        self._read_sequence = 0

        self._wakeup_writer = asyncio.Event()
        self._written = asyncio.Event()
        self._writer_task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._closing = False

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def depth(self) -> int:
        """Deliveries appended (synced or not) that have not been forwarded yet."""
        return len(self._timestamps) - self._timestamps_head

    @property
    def used_bytes(self) -> int:
        return sum(segment.size for segment in self._segments) + self._pending_bytes

    @property
    def failed(self) -> bool:
        return self._failure is not None

    def stats(self) -> SpoolStats:
        """Return depth, age of the oldest record and disk use, for readiness and metrics."""
        oldest_age_s = None
        if self.depth:
            oldest_ms = self._timestamps[self._timestamps_head]
            oldest_age_s = max(0.0, self._clock() - oldest_ms / 1000)
        used = self.used_bytes
        return SpoolStats(
            depth=self.depth,
            oldest_age_s=oldest_age_s,
            used_bytes=used,
            max_bytes=self._max_bytes,
            full=self.failed or used + self._reserve_bytes > self._max_bytes,
        )

    async def open(self) -> None:
        """Lock the folder, recover the segments and start the writer task."""
        await asyncio.to_thread(self._lock_directory)
        try:
            recovered = await asyncio.to_thread(recover, self._directory, self._max_bytes)
        except OSError as exc:
            self._unlock_directory()
            raise SpoolError(f"cannot recover the spool in {self._directory}: {exc}") from exc

        self._segments = recovered.segments
        self._committed = recovered.committed
        self._next_sequence = self._durable_sequence = recovered.next_sequence
        self._timestamps = array("q", recovered.pending_timestamps_ms)
        self._read_segment = recovered.read_segment
        self._read_offset = recovered.read_offset
        self._read_sequence = recovered.committed
        if self._segments:
            self._writer.resume(self._segments[-1])
        self._writer_task = asyncio.create_task(self._write_loop(), name="spool-writer")
        log.info(
            "spool %s opened: %d deliveries to forward, %d bytes in %d segments",
            self._directory,
            self.depth,
            self.used_bytes,
            len(self._segments),
        )

    async def close(self) -> None:
        """Write what is pending, stop the writer and release the folder."""
        self._closing = True
        self._wakeup_writer.set()
        if self._writer_task is not None:
            await asyncio.gather(self._writer_task, return_exceptions=True)
        await asyncio.to_thread(self._writer.close_segment)
        self._unlock_directory()

    def append(self, records: Sequence[Record]) -> asyncio.Future[None]:
        """Queue ``records`` as one entry; the future completes once it is on disk.

        Raises ``SpoolFull`` when the entry would take the spool over
        ``max_bytes``, and ``SpoolUnavailable`` after a failed write.
        """
        if self._failure is not None or self._closing:
            raise SpoolUnavailable(f"the spool in {self._directory} takes no more deliveries")
        appended_at_ms = int(self._clock() * 1000)
        frame = encode_frame(self._next_sequence, appended_at_ms, records)
        if self.used_bytes + len(frame) > self._max_bytes:
            raise SpoolFull(
                f"the spool contains {self.used_bytes} bytes and cannot take {len(frame)} more "
                f"within spool.max_bytes ({self._max_bytes})"
            )

        done = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(self._next_sequence, frame, done))
        self._pending_bytes += len(frame)
        self._timestamps.append(appended_at_ms)
        self._next_sequence += 1
        self._wakeup_writer.set()
        return done

    async def read(self, max_records: int) -> list[SpoolEntry]:
        """Wait for synced entries after the last read and return up to ``max_records``."""
        while self._read_sequence >= self._durable_sequence:
            self._written.clear()
            await self._written.wait()

        segment = self._segment_at_read_position()
        entries, end = await asyncio.to_thread(
            read_entries,
            segment.path,
            self._read_offset,
            segment.size,
            max_records,
            self._max_bytes,
        )
        self._read_offset = end
        self._read_sequence = entries[-1].sequence + 1
        return entries

    async def acknowledge(self, entries: Sequence[SpoolEntry]) -> None:
        """Record that ``entries``, the oldest unforwarded ones, reached Kafka."""
        if not entries:
            return
        committed = entries[-1].sequence + 1
        await asyncio.to_thread(write_committed, self._directory, committed)
        self._committed = committed
        self._timestamps_head += len(entries)
        if self._timestamps_head > 4096 and self._timestamps_head * 2 > len(self._timestamps):
            del self._timestamps[: self._timestamps_head]
            self._timestamps_head = 0
        await self._delete_forwarded_segments()

    def _segment_at_read_position(self) -> _Segment:
        # Segments are sorted by base. The read position moves to the next
        # segment once it reached the end of a segment's synced frames.
        for segment in self._segments:
            if segment.base == self._read_segment and self._read_offset < segment.size:
                return segment
            if self._read_segment is None or segment.base > self._read_segment:
                self._read_segment, self._read_offset = segment.base, 0
                return segment
        raise AssertionError("no segment holds the synced entries after the read position")

    async def _delete_forwarded_segments(self) -> None:
        async with self._write_lock:
            forwarded = [
                segment
                for segment in self._segments
                if segment.last_sequence is not None
                and segment.last_sequence < self._committed
                and (segment.base != self._writer.base or not self._pending)
            ]
            if not forwarded:
                return
            if self._writer.base in {segment.base for segment in forwarded}:
                await asyncio.to_thread(self._writer.close_segment)
            for segment in forwarded:
                await asyncio.to_thread(segment.path.unlink, True)
                self._segments.remove(segment)

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup_writer.wait()
            self._wakeup_writer.clear()
            while self._pending:
                await self._write_pending()
            if self._closing:
                return

    async def _write_pending(self) -> None:
        batch, self._pending = self._pending, []
        try:
            async with self._write_lock:
                written = await asyncio.to_thread(self._writer.write, batch)
        except OSError as exc:
            self._fail(batch, exc)
            return

        self._pending_bytes -= sum(len(pending.frame) for pending in batch)
        for segment in written.segments:
            if self._segments and self._segments[-1].base == segment.base:
                self._segments[-1] = segment
            else:
                self._segments.append(segment)
        self._durable_sequence = batch[-1].sequence + 1
        for pending in batch:
            if not pending.done.done():
                pending.done.set_result(None)
        self._written.set()

    def _fail(self, batch: Sequence[_Pending], exc: OSError) -> None:
        # After a failed write or fsync the file's state is unknown (the kernel
        # may drop the dirty pages), so the spool takes nothing more.
        log.error(
            "spool write to %s failed; the spool takes no more deliveries: %s", self._directory, exc
        )
        self._failure = exc
        error = SpoolUnavailable(f"the spool write failed: {exc.strerror or exc}")
        for pending in [*batch, *self._pending]:
            if not pending.done.done():
                pending.done.set_exception(error)
        self._pending = []

    def _lock_directory(self) -> None:
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            self._lock_file = open(self._directory / _LOCK_FILE, "ab")  # noqa: SIM115
        except OSError as exc:
            raise SpoolError(f"cannot open the spool folder {self._directory}: {exc}") from exc
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise SpoolError(
                f"the spool folder {self._directory} is in use by another relay process; "
                "give each replica a spool.path of its own"
            ) from None

    def _unlock_directory(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


def iter_segment_entries(path: Path, max_frame_bytes: int) -> Iterator[SpoolEntry]:
    """Yield every valid entry of one segment file, for inspection and tests."""
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
        start, end = check_frame(data, offset, max_frame_bytes)
        yield decode_payload(memoryview(data)[start:end])
        offset = end
