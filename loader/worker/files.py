"""Turn a full partition buffer into its files in S3.

A roll makes the data file and, if any record of the range was rejected, the
dead-letter file for the same offset range; both keys come from the data
(:mod:`loader.store.layout`), so writing them again gives the same objects.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from loader.config.spec import EventSpec
from loader.encode.dead_letter import DEAD_LETTER_SCHEMA
from loader.encode.parquet import write_parquet
from loader.store.layout import FileRange, data_key, dead_letter_key
from loader.store.s3 import S3Store

__all__ = ["FilePlan", "WrittenFiles", "write_files"]


@dataclass(frozen=True)
class FilePlan:
    """What one roll will write: the offset range and the keys, decided before any upload."""

    covered: FileRange
    data_key: str
    dead_letter_key: str

    @classmethod
    def for_range(cls, spec: EventSpec, covered: FileRange) -> FilePlan:
        return cls(covered, data_key(spec, covered), dead_letter_key(spec, covered))


@dataclass(frozen=True)
class WrittenFiles:
    """What a roll wrote."""

    plan: FilePlan
    rows: int
    dead_letters: int
    data_bytes: int


def write_files(
    spec: EventSpec,
    store: S3Store,
    plan: FilePlan,
    table: pa.Table,
    rejected_table: pa.Table,
    *,
    spool_dir: Path | None = None,
) -> WrittenFiles:
    """Encode and upload the roll's files (blocking: call it from a thread)."""
    data_bytes = 0
    with tempfile.TemporaryDirectory(dir=spool_dir, prefix="roll-") as tmp:
        if table.num_rows:
            path = Path(tmp) / "data.parquet"
            write_parquet(table, str(path), spec.rolling.row_group_records)
            data_bytes = path.stat().st_size
            store.upload_file(path, plan.data_key)
        if rejected_table.num_rows:
            path = Path(tmp) / "dead-letter.parquet"
            write_parquet(rejected_table.cast(DEAD_LETTER_SCHEMA), str(path), spec.rolling.row_group_records)
            store.upload_file(path, plan.dead_letter_key)
    return WrittenFiles(plan, table.num_rows, rejected_table.num_rows, data_bytes)
