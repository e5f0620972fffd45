"""The warehouse's load history: which of an event's files a table has loaded.

Reconcile and ``replay load`` compare it with the data files in S3
(:mod:`loader.store.listing`) to find what is missing.
"""

from __future__ import annotations

from loader.config.identifiers import quote_literal
from loader.warehouse.connection import Warehouse
from loader.warehouse.objects import EventObjects

__all__ = ["loaded_files"]


def loaded_files(warehouse: Warehouse, objects: EventObjects, table: str | None = None) -> set[str]:
    """Stage-relative paths the load history lists as loaded into the event's table (or ``table``)."""
    warehouse.execute(objects.use_statement())
    rows = warehouse.execute(
        "SELECT FILE_NAME FROM INFORMATION_SCHEMA.LOAD_HISTORY"  # noqa: S608 - a quoted literal
        f" WHERE TABLE_NAME = {quote_literal(table or objects.spec.snowflake.table)}"
        " AND STATUS IN ('LOADED', 'PARTIALLY_LOADED')"
    )
    return {objects.relative_path(str(row[0])) for row in rows}
