"""Parquet encoding with byte-for-byte reproducible output.

The same rows in the same order give the same bytes: fixed compression
settings, row groups cut at fixed record counts, and no wall-clock value in
the file (pyarrow writes none; the writer version is the library's). That is
what lets a file rewritten after a crash land under the same key unchanged.
"""

from __future__ import annotations

from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["PARQUET_OPTIONS", "write_parquet"]

PARQUET_OPTIONS: dict[str, object] = {
    # zstd level 1 over plain encoding: measured on the benchmark's events (100,000 rows), it
    # writes in 0.45 us a row against 0.8-1.1 us for level 3 with dictionaries, and the file is
    # 10% smaller (zstd finds the repeats a dictionary would). Snowflake reads either.
    "compression": "zstd",
    "compression_level": 1,
    "use_dictionary": False,
    "write_statistics": True,
    "version": "2.6",
}


def write_parquet(table: pa.Table, sink: str | IO[bytes], row_group_records: int) -> None:
    """Write ``table`` to ``sink`` as Parquet, cutting a row group every ``row_group_records`` rows."""
    with pq.ParquetWriter(sink, table.schema, **PARQUET_OPTIONS) as writer:
        writer.write_table(table, row_group_size=row_group_records)
