"""One open file of one partition, written to local disk a row group at a time.

Memory holds only the rows of the row group being filled (and the range's
dead letters); full row groups go straight to a Parquet file in the spool
folder. Row groups are cut every ``row_group_records`` good rows counted from
the file's start, so the same records always give the same bytes, however
the consumer happened to batch them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from loader.encode.dead_letter import dead_letter_table
from loader.encode.decode import DecodedBatch, KafkaRecord, Rejected
from loader.encode.parquet import PARQUET_OPTIONS, write_parquet
from loader.store.layout import FileRange
from loader.worker.stages import StageTimes

__all__ = ["ClosedFile", "SpoolFile"]


@dataclass(frozen=True)
class ClosedFile:
    """A finished local file pair, ready to upload under its range's keys."""

    covered: FileRange
    row_group_records: int
    data_path: Path | None
    dead_letter_path: Path | None
    rows: int
    dead_letters: int
    records: int
    data_bytes: int
    folder: Path
    skipped: Mapping[str, int]
    """Records of the range that are other specs' (shared topic), by reason: neither rows nor
    dead letters, yet covered, so that ``records = rows + dead_letters + skipped``."""

    def discard(self) -> None:
        """Delete the local files."""
        for path in (self.data_path, self.dead_letter_path):
            if path is not None:
                path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: someone else's file is there
            self.folder.rmdir()


class SpoolFile:
    """Accumulates one file's records; see the module docstring."""

    def __init__(
        self,
        *,
        topic: str,
        partition: int,
        first_offset: int,
        period: int,
        schema: pa.Schema,
        row_group_records: int,
        spool_dir: Path | None,
        stages: StageTimes | None = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.first_offset = first_offset
        self.last_offset = first_offset - 1
        self.period = period
        self.row_group_records = row_group_records
        self.records = 0
        self.raw_bytes = 0
        self._schema = schema
        self._stages = stages or StageTimes()
        self._folder = Path(tempfile.mkdtemp(prefix=f"p{partition:04d}-{first_offset}-", dir=spool_dir))
        self._data_path = self._folder / "data.parquet"
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._rejected: list[Rejected] = []
        self._rejected_bytes = 0
        self._rows_written = 0
        self._skipped: Counter[str] = Counter()
        self._sink: pa.NativeFile | None = None
        self._writer: pq.ParquetWriter | None = None

    @property
    def memory_bytes(self) -> int:
        """Bytes this file holds in memory (the open row group and dead letters)."""
        return self._pending_bytes + self._rejected_bytes

    @property
    def file_bytes(self) -> int:
        """Compressed bytes written to disk so far."""
        return self._sink.tell() if self._sink is not None else 0

    @property
    def empty(self) -> bool:
        return self.records == 0

    def append(
        self, records: Sequence[KafkaRecord], decoded: DecodedBatch, skipped: Mapping[str, int] | None = None
    ) -> None:
        """Add consecutive records (the ones this spec takes decoded, ``skipped`` counting the
        others by reason); full row groups go to disk."""
        if not records:
            return
        with self._stages.timed("spool"):
            self.last_offset = records[-1].offset
            self.records += len(records)
            if skipped:
                self._skipped.update(skipped)
            self.raw_bytes += sum(len(r.value or b"") for r in records)
            if decoded.rejected:
                self._rejected.extend(decoded.rejected)
                self._rejected_bytes += sum(
                    len(r.record.value or b"") + len(r.reason) for r in decoded.rejected
                )
            if decoded.table.num_rows:
                self._pending.append(decoded.table)
                self._pending_rows += decoded.table.num_rows
                self._pending_bytes += decoded.table.nbytes
        if self._pending_rows >= self.row_group_records:
            with self._stages.timed("parquet"):
                self._write_full_row_groups()

    def _write_full_row_groups(self) -> None:
        table = pa.concat_tables(self._pending)
        full = (table.num_rows // self.row_group_records) * self.row_group_records
        self._write(table.slice(0, full))
        rest = table.slice(full)
        # Copy the remainder so the written row groups' buffers can be freed.
        self._pending = [pa.concat_tables([rest]).combine_chunks()] if rest.num_rows else []
        self._pending_rows = rest.num_rows
        self._pending_bytes = rest.nbytes if rest.num_rows else 0

    def _write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._sink = pa.OSFile(str(self._data_path), "wb")
            self._writer = pq.ParquetWriter(self._sink, self._schema, **PARQUET_OPTIONS)
        self._writer.write_table(table, row_group_size=self.row_group_records)
        self._rows_written += table.num_rows

    def close(self) -> ClosedFile:
        """Write what is left (last row group, dead letters) and hand over the files."""
        with self._stages.timed("parquet"):
            return self._close()

    def _close(self) -> ClosedFile:
        if self._pending_rows:
            self._write(pa.concat_tables(self._pending))
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0
        data_path: Path | None = None
        data_bytes = 0
        if self._writer is not None and self._sink is not None:
            self._writer.close()
            self._sink.close()
            data_path = self._data_path
            data_bytes = os.path.getsize(data_path)
        dead_letter_path: Path | None = None
        if self._rejected:
            dead_letter_path = self._folder / "dead-letter.parquet"
            rejected = sorted(self._rejected, key=lambda r: r.record.offset)
            write_parquet(dead_letter_table(rejected), str(dead_letter_path), self.row_group_records)
        closed = ClosedFile(
            covered=FileRange(self.topic, self.partition, self.first_offset, self.last_offset, self.period),
            row_group_records=self.row_group_records,
            data_path=data_path,
            dead_letter_path=dead_letter_path,
            rows=self._rows_written,
            dead_letters=len(self._rejected),
            records=self.records,
            data_bytes=data_bytes,
            folder=self._folder,
            skipped=dict(self._skipped),
        )
        self._rejected, self._rejected_bytes = [], 0
        return closed

    def discard(self) -> None:
        """Drop everything (the partition was revoked before the roll was recorded)."""
        if self._writer is not None and self._sink is not None:
            self._writer.close()
            self._sink.close()
        self._pending, self._rejected = [], []
        self._pending_rows = self._pending_bytes = self._rejected_bytes = 0
        self._data_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self._folder.rmdir()
