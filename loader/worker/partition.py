"""One assigned partition: where its records go, and when its files end.

Runs in the worker's processing thread. Records are cut where a file must
end (``max_records``, the time partition moving forward, the size limit),
decoded and appended to the open :class:`~loader.worker.spool.SpoolFile`.
A partition that was assigned with a pending roll first rebuilds exactly
that file (same range, same row groups) before anything else.

For the metrics it also counts the value bytes it takes, times each file's
flush and keeps each file's newest ``_CREATED_AT``: once per batch, with one
Arrow reduction, never per record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
from aiokafka import TopicPartition

from loader.checkpoint.committer import Generation
from loader.checkpoint.marker import PendingFile
from loader.config.spec import EventSpec
from loader.encode.decode import Decoder, KafkaRecord
from loader.schema.types import CREATED_AT, KAFKA_TIMESTAMP_RANGE_MS
from loader.store.layout import FileRange, data_key, dead_letter_key, time_bucket, time_partition_ms
from loader.worker.spool import ClosedFile, SpoolFile

__all__ = ["ARROW_TO_PARQUET_RATIO", "MAX_LATENESS_MS", "PartitionState", "Roll", "split_at_boundaries"]

ARROW_TO_PARQUET_RATIO = 4
"""About how much smaller a zstd row group is than its Arrow buffers (for the size limit)."""

MAX_LATENESS_MS = 86_400_000
"""How long before the start of the open file's time partition a record may be and still
join that file. An older record ends the file: one record from a clock years ahead opens a
folder of its own, and the records after it do not follow it there."""


@dataclass(frozen=True)
class Roll:
    """A closed file and the record that makes its upload recoverable."""

    tp: TopicPartition
    closed: ClosedFile
    pending: PendingFile
    recovery: bool
    """True when finishing a roll recorded by an earlier owner (already recorded)."""
    generation: Generation
    """The group generation the partition was assigned under: its commits are fenced by it."""
    flush_s: float
    """How long finishing the local file took."""
    newest_created_at_us: int | None
    """The newest ``_CREATED_AT`` among the file's rows (microseconds since the epoch), if any."""


def pending_for(spec: EventSpec, covered: FileRange, row_group_records: int) -> PendingFile:
    return PendingFile(
        first=covered.first_offset,
        last=covered.last_offset,
        bucket=covered.bucket,
        rg=row_group_records,
        key=data_key(spec, covered),
        dlq=dead_letter_key(spec, covered),
    )


def split_at_boundaries(
    spec: EventSpec, open_records: int, open_bucket: int | None, records: Sequence[KafkaRecord]
) -> list[tuple[Sequence[KafkaRecord], int, bool]]:
    """Cut ``records`` where a file must end: at ``max_records`` (counting the
    ``open_records`` already in the open file), where the time partition moves
    forward, and before a record more than :data:`MAX_LATENESS_MS` older than the
    open file's time partition. Returns (segment, bucket, ends_file) triples.

    A record up to a day late stays in the open file, so files do not flap around a
    boundary. A record without a usable timestamp (outside ``KAFKA_TIMESTAMP_RANGE_MS``:
    a dead letter) never ends a file; a file it opens is in the epoch's folder, which the
    next record with a timestamp leaves."""
    segments: list[tuple[Sequence[KafkaRecord], int, bool]] = []
    max_records = spec.rolling.max_records
    size_ms = time_partition_ms(spec)
    low, high = KAFKA_TIMESTAMP_RANGE_MS
    room = max_records - open_records
    current = open_bucket
    earliest = latest = 0  # the open file takes timestamps in earliest..latest-1
    if current is not None:
        earliest, latest = current * size_ms - MAX_LATENESS_MS, (current + 1) * size_ms
    start = 0
    for index, record in enumerate(records):
        timestamp = record.timestamp
        if current is None:
            current = time_bucket(spec, timestamp)
            earliest, latest = current * size_ms - MAX_LATENESS_MS, (current + 1) * size_ms
        elif not earliest <= timestamp < latest and low <= timestamp <= high:
            segments.append((records[start:index], current, True))
            start, room, current = index, max_records, timestamp // size_ms
            earliest, latest = current * size_ms - MAX_LATENESS_MS, (current + 1) * size_ms
        if index - start + 1 >= room:
            segments.append((records[start : index + 1], current, True))
            # The next file takes its first record's time partition, as it would in the next batch.
            start, room, current = index + 1, max_records, None
    if start < len(records):
        assert current is not None
        segments.append((records[start:], current, False))
    return segments


class PartitionState:
    """Routing of one partition's records into files (see the module docstring)."""

    def __init__(
        self,
        tp: TopicPartition,
        spec: EventSpec,
        decoder: Decoder,
        *,
        next_offset: int | None,
        pending: PendingFile | None,
        generation: Generation,
        spool_dir: Path | None,
        row_group_records: Callable[[], int],
    ) -> None:
        self.tp = tp
        self.spec = spec
        self.generation = generation
        self.records_taken = 0
        """Records this owner processed (a refetched duplicate is not counted twice)."""
        self.bytes_taken = 0
        """Bytes of those records' values."""
        self.next_offset = next_offset
        self.recovering = pending
        self.spool: SpoolFile | None = None
        self.opened_at: float | None = None
        self._decoder = decoder
        self._spool_dir = spool_dir
        self._row_group_records = row_group_records
        self._recovery_spool: SpoolFile | None = None
        self._newest: dict[int, int] = {}
        """Newest ``_CREATED_AT`` (us) per open spool, by ``id`` of the spool."""

    @property
    def memory_bytes(self) -> int:
        return sum(s.memory_bytes for s in (self.spool, self._recovery_spool) if s is not None)

    def ingest(self, records: Sequence[KafkaRecord], now: float) -> list[Roll]:
        """Take a fetched batch (offset order) and return the files it completed."""
        if self.next_offset is not None:
            # Drop what this owner already processed (a batch fetched before a seek).
            skip = 0
            while skip < len(records) and records[skip].offset < self.next_offset:
                skip += 1
            records = records[skip:]
        if not records:
            return []
        self.next_offset = records[-1].offset + 1
        self.records_taken += len(records)
        rolls: list[Roll] = []
        if self.recovering is not None:
            records = self._recover(records, rolls)
        if records:
            self._route(records, now, rolls)
        return rolls

    def _recover(self, records: Sequence[KafkaRecord], rolls: list[Roll]) -> Sequence[KafkaRecord]:
        pending = self.recovering
        assert pending is not None
        inside = 0
        while inside < len(records) and records[inside].offset <= pending.last:
            inside += 1
        if inside:
            if self._recovery_spool is None:
                self._recovery_spool = self._open(pending.first, pending.bucket, pending.rg)
            self._append(self._recovery_spool, records[:inside])
        # Complete once the batch reaches the recorded last offset or goes past it.
        if inside < len(records) or records[-1].offset >= pending.last:
            spool = self._recovery_spool or self._open(pending.first, pending.bucket, pending.rg)
            spool.last_offset = pending.last
            rolls.append(self._roll(spool, pending))
            self._recovery_spool = None
            self.recovering = None
        return records[inside:]

    def _route(self, records: Sequence[KafkaRecord], now: float, rolls: list[Roll]) -> None:
        open_records = self.spool.records if self.spool else 0
        open_bucket = self.spool.bucket if self.spool else None
        for segment, bucket, ends_file in split_at_boundaries(self.spec, open_records, open_bucket, records):
            if segment:
                if self.spool is None:
                    self.spool = self._open(segment[0].offset, bucket, self._row_group_records())
                    self.opened_at = now
                self._append(self.spool, segment)
            if ends_file or self._over_size():
                self.close_into(rolls)

    def _append(self, spool: SpoolFile, segment: Sequence[KafkaRecord]) -> None:
        raw_bytes = spool.raw_bytes
        decoded = self._decoder.decode(segment)
        spool.append(segment, decoded)
        self.bytes_taken += spool.raw_bytes - raw_bytes
        if decoded.table.num_rows:
            newest = pc.max(decoded.table.column(CREATED_AT)).value
            if newest is not None:
                self._newest[id(spool)] = max(newest, self._newest.get(id(spool), newest))

    def _roll(self, spool: SpoolFile, pending: PendingFile | None = None) -> Roll:
        """Close ``spool`` into a roll: a recovery of ``pending``, or a new file."""
        started = time.perf_counter()
        closed = spool.close()
        flush_s = time.perf_counter() - started
        return Roll(
            self.tp,
            closed,
            pending or pending_for(self.spec, closed.covered, closed.row_group_records),
            recovery=pending is not None,
            generation=self.generation,
            flush_s=flush_s,
            newest_created_at_us=self._newest.pop(id(spool), None),
        )

    def _over_size(self) -> bool:
        spool = self.spool
        if spool is None:
            return False
        estimate = spool.file_bytes + spool.memory_bytes // ARROW_TO_PARQUET_RATIO
        return estimate >= self.spec.rolling.max_file_bytes

    def _open(self, first_offset: int, bucket: int, row_group_records: int) -> SpoolFile:
        return SpoolFile(
            topic=self.tp.topic,
            partition=self.tp.partition,
            first_offset=first_offset,
            bucket=bucket,
            schema=self._decoder.file_schema,
            row_group_records=row_group_records,
            spool_dir=self._spool_dir,
        )

    def expired(self, now: float) -> bool:
        return self.opened_at is not None and now - self.opened_at >= self.spec.rolling.max_age_s

    def close_into(self, rolls: list[Roll]) -> None:
        """End the open file now (full, expired, memory pressure or shutdown)."""
        spool, self.spool, self.opened_at = self.spool, None, None
        if spool is None or spool.empty:
            if spool is not None:
                self._newest.pop(id(spool), None)
                spool.discard()
            return
        rolls.append(self._roll(spool))

    def discard(self) -> None:
        """Forget unrecorded work (on revocation): the next owner re-reads it."""
        for spool in (self.spool, self._recovery_spool):
            if spool is not None:
                spool.discard()
        self.spool = self._recovery_spool = None
        self.opened_at = None
        self._newest.clear()
