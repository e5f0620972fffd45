"""Copy named files into an event's table, and read back what is loaded.

Snowflake remembers which file paths a table has loaded (64 days of load
metadata) and skips them on a second COPY: loading the same key twice is a
no-op, so the loader may retry freely. Locally fakesnow cannot read s3://,
so each file is first mirrored from S3 into the stage's local folder.

No single file may stop the others: a key or object that cannot be a data
file is refused before any COPY (:mod:`loader.warehouse.admission`), and a
COPY that fails is split until the failing files are found, so the rest load.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from loader.errors import WarehouseError
from loader.store.s3 import S3Store
from loader.warehouse.admission import admit
from loader.warehouse.connection import Warehouse
from loader.warehouse.objects import EventObjects

__all__ = ["LOAD_FAILED", "REFUSED", "FileLoad", "load_files"]

log = structlog.get_logger("loader.load")

_DONE = {"LOADED", "LOAD_SKIPPED", "PARTIALLY_LOADED"}
REFUSED = "REFUSED"
"""The key or object cannot be a data file of the event (see :mod:`loader.warehouse.admission`)."""
LOAD_FAILED = "LOAD_FAILED"
"""Snowflake's status for a file it could not load (also when the file's own COPY failed)."""


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
    outcome: dict[str, FileLoad] = {}
    admitted = []
    for key in dict.fromkeys(keys):
        refusal = admit(store, objects, key)
        if refusal is None:
            admitted.append(key)
        else:
            outcome[key] = FileLoad(key, REFUSED, 0, refusal)
    if admitted:
        warehouse.execute(objects.use_statement())

        def copy(batch: Sequence[str]) -> str:
            return objects.copy_statement([objects.relative_path(k) for k in batch], into=into, force=force)

        for result in _copy_splitting(warehouse, objects, admitted, copy):
            outcome[result.key] = result
    for result in outcome.values():
        if not result.done:
            log.error("file_load_failed", key=result.key, status=result.status, error=result.error)
    return [outcome[key] for key in keys]


def _copy_splitting(
    warehouse: Warehouse, objects: EventObjects, keys: Sequence[str], copy: Callable[[Sequence[str]], str]
) -> list[FileLoad]:
    """COPY ``keys`` at once; if that fails while the warehouse answers, the files are to blame:
    COPY each half the same way, down to the single files that fail (with Snowflake's error).
    A warehouse that does not answer fails the whole batch, to be retried later."""
    try:
        rows = warehouse.execute(copy(keys))
    except WarehouseError as exc:
        if not _answers(warehouse):
            raise
        if len(keys) == 1:
            return [FileLoad(keys[0], LOAD_FAILED, 0, str(exc))]
        log.warning("copy_split", event_type=objects.spec.name, files=len(keys), error=str(exc))
        half = len(keys) // 2
        return _copy_splitting(warehouse, objects, keys[:half], copy) + _copy_splitting(
            warehouse, objects, keys[half:], copy
        )
    return _file_loads(objects, keys, rows)


def _answers(warehouse: Warehouse) -> bool:
    """Whether the warehouse runs a trivial statement (so a failed COPY failed for its files)."""
    try:
        warehouse.execute("SELECT 1")
    except WarehouseError:
        return False
    return True


def _file_loads(objects: EventObjects, keys: Sequence[str], rows: list[tuple[Any, ...]]) -> list[FileLoad]:
    """One FileLoad per key from a COPY's result rows."""
    by_file: dict[str, FileLoad] = {}
    for row in rows:
        if len(row) < 4:
            continue  # "Copy executed with 0 files processed."
        file_name, status = str(row[0]), str(row[1])
        error = str(row[6]) if len(row) > 6 and row[6] else None
        for key in keys:
            if file_name.endswith(objects.relative_path(key)):
                by_file[key] = FileLoad(key, status, int(row[3] or 0), error)
    # Files a COPY does not list were loaded before (real Snowflake lists no skipped files).
    return [by_file.get(key) or FileLoad(key, "LOAD_SKIPPED", 0) for key in keys]
