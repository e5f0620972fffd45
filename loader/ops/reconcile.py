"""Reconciliation: files in S3 that never reached the warehouse get loaded.

A lost notification, a load that failed for good, a queue purged by
mistake: none of them may lose data. Reconcile lists the event's data files
in S3 (optionally within a time range of their time partitions), compares
them with the table's load history, and loads the missing ones. Loading is
idempotent (Snowflake skips a path it has loaded), so a reconcile that races
the loader loads nothing twice. What it cannot load (a key under the data
prefix that the workers never write, an object that is not Parquet, a file
whose own COPY fails) is listed with the reason; the rest loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from loader.ops.load_history import loaded_files
from loader.store.listing import data_prefix_listing
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.load import REFUSED, load_files
from loader.warehouse.objects import EventObjects

__all__ = ["ReconcileReport", "reconcile"]

BATCH_FILES = 200


@dataclass
class ReconcileReport:
    """What reconcile found and did for one event type."""

    event: str
    files_in_s3: int = 0
    already_loaded: int = 0
    missing: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    """Files not loaded: refused (a name the workers never write, an object that cannot be a
    Parquet file) or failed in their own COPY."""
    reasons: dict[str, str] = field(default_factory=dict)
    """Why each of ``failed`` was not loaded."""

    def fail(self, key: str, reason: str) -> None:
        self.failed.append(key)
        self.reasons[key] = reason


def reconcile(
    warehouse: Warehouse,
    store: S3Store,
    objects: EventObjects,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    dry_run: bool = False,
) -> ReconcileReport:
    """Load every data file of the range that the warehouse has not loaded (unless ``dry_run``)."""
    report = ReconcileReport(event=objects.spec.name)
    files, foreign = data_prefix_listing(store, objects.spec, since, until)
    for key in foreign:
        report.fail(key, f"{REFUSED}: not a data file name the workers write")
    keys = [info.key for info in files]
    report.files_in_s3 = len(keys)
    loaded = loaded_files(warehouse, objects)
    report.missing = [k for k in keys if objects.relative_path(k) not in loaded]
    report.already_loaded = report.files_in_s3 - len(report.missing)
    if dry_run:
        return report
    for start in range(0, len(report.missing), BATCH_FILES):
        batch = report.missing[start : start + BATCH_FILES]
        for result in load_files(warehouse, store, objects, batch):
            if result.done:
                report.loaded.append(result.key)
            else:
                report.fail(result.key, f"{result.status}: {result.error}")
    return report
