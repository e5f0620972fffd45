"""How fresh an event's S3 files are: the newest ``_CREATED_AT`` in them.

Freshness is ``now - newest created_at``. The table side is one ``MAX`` query
(:mod:`loader.warehouse.freshness`). The S3 side never downloads data: it
takes, from the key layout, the last file of every partition (highest offsets)
and reads only those files' Parquet footers with ranged GETs; the writer keeps
column statistics, so the footer's row-group maxima of ``_CREATED_AT`` are the
answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq

from loader.errors import StorageError
from loader.schema.types import CREATED_AT
from loader.store.footer import parquet_footer
from loader.store.layout import FileName, parse_key
from loader.store.s3 import ObjectInfo, S3Store
from loader.warehouse.freshness import as_utc

__all__ = ["newest_created_at_in_s3", "newest_data_files"]


def newest_data_files(files: Iterable[ObjectInfo]) -> dict[tuple[str, int], tuple[str, FileName]]:
    """Among an event's data files (see ``data_files``), the last one (highest offsets) of
    every topic partition, with what its key says. Re-driven files hold old records, not the
    partition's progress: they are left out."""
    newest: dict[tuple[str, int], tuple[str, FileName]] = {}
    for info in files:
        parsed = parse_key(info.key)
        assert parsed is not None  # a data file's key parses
        if parsed.redriven is not None:
            continue
        where = (parsed.topic, parsed.partition)
        if where not in newest or parsed.last_offset > newest[where][1].last_offset:
            newest[where] = (info.key, parsed)
    return newest


def _max_created_at(metadata: pq.FileMetaData) -> datetime | None:
    newest: datetime | None = None
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in range(row_group.num_columns):
            column = row_group.column(index)
            if column.path_in_schema != CREATED_AT:
                continue
            stats = column.statistics
            if stats is not None and stats.has_min_max and isinstance(stats.max, datetime):
                value = as_utc(stats.max)
                newest = value if newest is None or value > newest else newest
    return newest


def newest_created_at_in_s3(store: S3Store, files: Iterable[ObjectInfo]) -> datetime | None:
    """The newest ``_CREATED_AT`` in an event's data ``files`` (as listed by ``data_files``);
    None if there are none.

    Reads one footer per partition (its last file), since partitions roll independently.
    """
    newest: datetime | None = None
    for key, _ in newest_data_files(files).values():
        try:
            footer = parquet_footer(store, key)
        except (pa.ArrowException, OSError) as exc:  # pyarrow reports a damaged footer as OSError
            raise StorageError(
                f"s3://{store.bucket}/{key}: unreadable Parquet footer: {exc}", transient=False
            ) from None
        value = _max_created_at(footer)
        if value is not None and (newest is None or value > newest):
            newest = value
    return newest
