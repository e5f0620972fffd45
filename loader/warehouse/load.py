"""Copy named files into an event's table, and read back what is loaded.

Snowflake remembers which file paths a table has loaded (64 days of load
metadata) and skips them on a second COPY: loading the same key twice is a
no-op, so the loader may retry freely. Locally fakesnow cannot read s3://,
so each file is first mirrored from S3 into the stage's local folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.objects import EventObjects

__all__ = ["FileLoad", "load_files"]

log = structlog.get_logger("loader.load")

_DONE = {"LOADED", "LOAD_SKIPPED", "PARTIALLY_LOADED"}


@dataclass(frozen=True)
class FileLoad:
    """The outcome of loading one file."""

    key: str
    status: str
    rows_loaded: int
    error: str | None = None

    @property
    def done(self) -> bool:
        """Loaded now or before: the notification can be deleted."""
        return self.status in _DONE


def load_files(
    warehouse: Warehouse,
    store: S3Store,
    objects: EventObjects,
    keys: Sequence[str],
    *,
    into: str | None = None,
    force: bool = False,
) -> list[FileLoad]:
    """COPY ``keys`` (data keys of this event) into its table, or ``into`` another table of
    its schema (``force``: even files loaded before); one FileLoad per key."""
    if not keys:
        return []
    local = objects.settings.local_stage_dir
    if local is not None:
        for key in keys:
            # Always mirror S3 as it is now: a leftover local file (from a reset stack) must
            # never stand in for the object. Write aside, then rename, so COPY sees whole files.
            target = Path(local) / objects.spec.s3.bucket / key
            partial = target.with_name(target.name + ".part")
            store.download_file(key, partial)
            partial.replace(target)
    warehouse.execute(objects.use_statement())
    rows = warehouse.execute(
        objects.copy_statement([objects.relative_path(k) for k in keys], into=into, force=force)
    )
    by_file: dict[str, FileLoad] = {}
    for row in rows:
        if len(row) < 4:
            continue  # "Copy executed with 0 files processed."
        file_name, status = str(row[0]), str(row[1])
        error = str(row[6]) if len(row) > 6 and row[6] else None
        for key in keys:
            if file_name.endswith(objects.relative_path(key)):
                by_file[key] = FileLoad(key, status, int(row[3] or 0), error)
    results = []
    for key in keys:
        # Files a COPY does not list were loaded before (real Snowflake lists no skipped files).
        result = by_file.get(key) or FileLoad(key, "LOAD_SKIPPED", 0)
        if not result.done:
            log.error("file_load_failed", key=key, status=result.status, error=result.error)
        results.append(result)
    return results
