"""Per-pipe status: last file loaded, files waiting, load errors.

In ``copy`` mode the record is the table's load history (what the
SQS-triggered loader loaded) compared with the data files in S3; with
``auto-ingest`` on real Snowflake it is ``SYSTEM$PIPE_STATUS`` and
``COPY_HISTORY``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from loader.config.identifiers import quote_literal
from loader.store.listing import data_files
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.objects import EventObjects

__all__ = ["PipeStatus", "pipe_status"]


@dataclass
class PipeStatus:
    """What a person asks about one pipe."""

    event: str
    pipe: str
    mode: str
    files_in_s3: int = 0
    files_loaded: int = 0
    files_pending: int = 0
    last_file_loaded: str | None = None
    last_load_time: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    execution_state: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def pipe_status(warehouse: Warehouse, store: S3Store, objects: EventObjects) -> PipeStatus:
    """The status of the event's pipe, from the warehouse's own records."""
    mode = objects.settings.load_mode
    status = PipeStatus(event=objects.spec.name, pipe=objects.pipe_name, mode=mode)
    table = quote_literal(objects.spec.snowflake.table)
    warehouse.execute(objects.use_statement())
    if mode == "auto-ingest":
        raw = warehouse.execute(f"SELECT SYSTEM$PIPE_STATUS({quote_literal(objects.pipe)})")[0][0]
        pipe = json.loads(raw)
        status.execution_state = pipe.get("executionState")
        status.files_pending = int(pipe.get("pendingFileCount", 0))
        history = warehouse.execute(
            "SELECT FILE_NAME, STATUS, LAST_LOAD_TIME, FIRST_ERROR_MESSAGE FROM TABLE("  # noqa: S608 - literal
            f"INFORMATION_SCHEMA.COPY_HISTORY(TABLE_NAME => {table},"
            " START_TIME => DATEADD(DAY, -14, CURRENT_TIMESTAMP())))"
        )
    else:
        history = warehouse.execute(
            "SELECT FILE_NAME, STATUS, LAST_LOAD_TIME, FIRST_ERROR_MESSAGE"  # noqa: S608 - a quoted literal
            f" FROM INFORMATION_SCHEMA.LOAD_HISTORY WHERE TABLE_NAME = {table}"
        )
    loaded = [row for row in history if str(row[1]) in ("LOADED", "PARTIALLY_LOADED")]
    status.files_loaded = len(loaded)
    if loaded:
        latest = max(loaded, key=lambda row: row[2])
        status.last_file_loaded = objects.relative_path(str(latest[0]))
        status.last_load_time = latest[2].isoformat() if hasattr(latest[2], "isoformat") else str(latest[2])
    status.errors = [
        {"file": str(row[0]), "status": str(row[1]), "error": str(row[3])}
        for row in history
        if str(row[1]) not in ("LOADED", "PARTIALLY_LOADED", "LOAD_SKIPPED")
    ]
    keys = [info.key for info in data_files(store, objects.spec, None, None)]
    status.files_in_s3 = len(keys)
    if mode != "auto-ingest":
        done = {objects.relative_path(str(row[0])) for row in loaded}
        status.files_pending = sum(1 for k in keys if objects.relative_path(k) not in done)
    return status
