"""How fresh an event's data is: the newest ``_CREATED_AT`` in its table and in its S3 files.

Freshness is ``now - newest created_at``. The table side is one ``MAX`` query.
The S3 side never downloads data: it takes, from the key layout, the last
file of every partition (highest offsets) and reads only those files' Parquet
footers with ranged GETs; the writer keeps column statistics, so the footer's
row-group maxima of ``_CREATED_AT`` are the answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from loader.config.identifiers import quote_ident
from loader.errors import StorageError, WarehouseError
from loader.schema.types import CREATED_AT
from loader.store.footer import parquet_footer
from loader.store.layout import FileName, parse_key
from loader.store.s3 import ObjectInfo, S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.objects import EventObjects

__all__ = [
    "missing_object",
    "newest_created_at_in_s3",
    "newest_created_at_in_table",
    "newest_data_files",
]


def _as_utc(value: datetime) -> datetime:
    # A naive value can only come from a TIMESTAMP_NTZ column, which the loader writes in UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def missing_object(exc: WarehouseError) -> bool:
    """Whether a statement failed only because its table or schema is not created yet."""
    # Snowflake's 002003 ("does not exist or not authorized"); fakesnow keeps the code.
    return not exc.transient and (exc.errno == 2003 or "does not exist" in str(exc))


def newest_created_at_in_table(warehouse: Warehouse, objects: EventObjects) -> datetime | None:
    """The newest ``_CREATED_AT`` loaded into the event's table; None if it is empty or missing."""
    sql = f"SELECT MAX({quote_ident(CREATED_AT)}) FROM {objects.table}"  # noqa: S608 - quoted names
    try:
        rows = warehouse.execute(sql)
    except WarehouseError as exc:
        if missing_object(exc):
            return None
        raise
    value = rows[0][0] if rows else None
    return _as_utc(value) if isinstance(value, datetime) else None


def newest_data_files(files: Iterable[ObjectInfo]) -> dict[tuple[str, int], tuple[str, FileName]]:
    """Among an event's data files (see ``data_files``), the last one (highest offsets) of
    every topic partition, with what its key says."""
    newest: dict[tuple[str, int], tuple[str, FileName]] = {}
    for info in files:
        parsed = parse_key(info.key)
        assert parsed is not None  # a data file's key parses
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
                value = _as_utc(stats.max)
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
