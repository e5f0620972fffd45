"""How fresh an event's table is: the newest ``_CREATED_AT`` loaded into it.

One ``MAX`` query. The SQS-triggered loader exports it as a metric and
``loader status`` shows it beside the S3 side (:mod:`loader.ops.freshness`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from loader.config.identifiers import quote_ident
from loader.errors import WarehouseError
from loader.schema.types import CREATED_AT
from loader.warehouse.connection import Warehouse
from loader.warehouse.objects import EventObjects

__all__ = ["as_utc", "missing_object", "newest_created_at_in_table"]


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive value is taken to be UTC already."""
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
    return as_utc(value) if isinstance(value, datetime) else None
