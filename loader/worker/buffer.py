"""Per-partition buffers and the rolling policy that decides when they become files.

Every decision that can be taken from the data alone (record count, size,
time partition) is taken from the data alone, so a replay of the same
records makes the same files. Only the age limit looks at the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from loader.config.spec import EventSpec
from loader.encode.decode import KafkaRecord, Rejected
from loader.store.layout import FileRange, time_bucket

__all__ = ["JSON_TO_PARQUET_RATIO", "PartitionBuffer", "split_at_boundaries"]

JSON_TO_PARQUET_RATIO = 6
"""About how much smaller zstd Parquet is than the JSON it came from (measured on the examples)."""


@dataclass
class PartitionBuffer:
    """Records of one partition waiting to become one file."""

    topic: str
    partition: int
    tables: list[pa.Table] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    first_offset: int | None = None
    last_offset: int | None = None
    bucket: int | None = None
    records: int = 0
    raw_bytes: int = 0
    opened_at: float | None = None

    @property
    def empty(self) -> bool:
        return self.records == 0

    def add(
        self,
        records: Sequence[KafkaRecord],
        table: pa.Table,
        rejected: list[Rejected],
        bucket: int,
        now: float,
    ) -> None:
        """Append decoded records (all of one time bucket) to the open file."""
        if not records:
            return
        if self.empty:
            self.first_offset = records[0].offset
            self.bucket = bucket
            self.opened_at = now
        self.last_offset = records[-1].offset
        self.records += len(records)
        self.raw_bytes += sum(len(r.value or b"") for r in records)
        if table.num_rows:
            self.tables.append(table)
        self.rejected.extend(rejected)

    def covered(self) -> FileRange:
        """The range the open file covers (only for a non-empty buffer)."""
        if self.first_offset is None or self.last_offset is None or self.bucket is None:
            raise ValueError("an empty buffer covers no records")
        return FileRange(self.topic, self.partition, self.first_offset, self.last_offset, self.bucket)

    def full(self, spec: EventSpec) -> bool:
        """Whether the data alone says this file is complete."""
        rolling = spec.rolling
        return (
            self.records >= rolling.max_records
            or self.raw_bytes >= rolling.max_file_bytes * JSON_TO_PARQUET_RATIO
        )

    def expired(self, spec: EventSpec, now: float) -> bool:
        """Whether the open file reached its age limit (the freshness bound)."""
        return self.opened_at is not None and now - self.opened_at >= spec.rolling.max_age_s

    def reset(self) -> None:
        """Forget everything (after a roll, or when the partition is revoked)."""
        self.tables.clear()
        self.rejected.clear()
        self.first_offset = self.last_offset = self.bucket = self.opened_at = None
        self.records = self.raw_bytes = 0


def split_at_boundaries(
    spec: EventSpec, buffer: PartitionBuffer, records: Sequence[KafkaRecord]
) -> list[tuple[Sequence[KafkaRecord], int, bool]]:
    """Cut ``records`` where a file must end: at ``max_records`` and where the
    time partition moves forward. Returns (segment, bucket, ends_file) triples;
    late records (an earlier time partition) stay in the open file."""
    segments: list[tuple[Sequence[KafkaRecord], int, bool]] = []
    room = spec.rolling.max_records - buffer.records
    current = buffer.bucket
    start = 0
    for index, record in enumerate(records):
        bucket = time_bucket(spec, record.timestamp)
        if current is None:
            current = bucket
        if bucket > current and index > start:
            segments.append((records[start:index], current, True))
            start, room, current = index, spec.rolling.max_records, bucket
        elif bucket > current:
            # The open file (from earlier batches) ends here.
            segments.append(((), current, True))
            current = bucket
        if index - start + 1 >= room:
            segments.append((records[start : index + 1], current, True))
            start, room = index + 1, spec.rolling.max_records
    if start < len(records):
        assert current is not None
        segments.append((records[start:], current, False))
    return segments
