"""Reconciliation: files in S3 that never reached the warehouse get loaded.

A lost notification, a load that failed for good, a queue purged by
mistake: none of them may lose data. Reconcile lists the event's data files
in S3 (optionally within a time range of their time partitions) and sorts
them by the load history (:mod:`loader.warehouse.history`): loaded, missing,
or unknown (staged before the history's reach). What it does then depends on
the load mode:

- ``copy``: it COPYs the missing and the unknown files. The table's load
  metadata skips a path it has loaded, so a reconcile that races the loader
  loads nothing twice. What it cannot load (a key under the data prefix that
  the workers never write, an object that is not Parquet, a file whose own
  COPY fails) is listed with the reason; the rest loads.
- ``auto-ingest``: it never COPYs into the event's table (a COPY does not
  know the pipe's loads). Files within Snowpipe's reach are handed to the
  pipe; older ones are reported with the statement an operator can run and
  what it risks (:mod:`loader.warehouse.pipe_refresh`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from loader.store.listing import data_prefix_listing
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.history import read_history
from loader.warehouse.load import REFUSED, load_files
from loader.warehouse.objects import EventObjects
from loader.warehouse.pipe_refresh import ManualStep, plan_handoff

__all__ = ["ReconcileReport", "reconcile"]

BATCH_FILES = 200


@dataclass
class ReconcileReport:
    """What reconcile found and did for one event type."""

    event: str
    mode: str = "copy"
    history: str = ""
    """The view the load history came from (COPY_HISTORY, or LOAD_HISTORY where unavailable)."""
    history_note: str | None = None
    """Why the history is LOAD_HISTORY and what it cannot show; None for COPY_HISTORY."""
    files_in_s3: int = 0
    already_loaded: int = 0
    missing: list[str] = field(default_factory=list)
    """Staged within the history's reach and not loaded."""
    unknown: list[str] = field(default_factory=list)
    """Not in the history, which cannot tell whether they loaded (see FileStates.unknown)."""
    loaded: list[str] = field(default_factory=list)
    """Copy mode: COPYed now (or skipped by the table's load metadata as loaded before)."""
    handed_to_pipe: list[str] = field(default_factory=list)
    """Auto-ingest: what ``refreshes`` queue for the pipe (it skips the ones it has loaded)."""
    refreshes: list[str] = field(default_factory=list)
    """Auto-ingest: the ``ALTER PIPE … REFRESH`` statements run (or, in a dry run, to run)."""
    manual: list[ManualStep] = field(default_factory=list)
    """Auto-ingest: gaps beyond Snowpipe's reach, left to an operator."""
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
    """Load (copy mode) or hand to the pipe (auto-ingest) every data file of the range that the
    warehouse has not loaded; with ``dry_run``, only say what would be done."""
    auto_ingest = objects.settings.load_mode == "auto-ingest"
    report = ReconcileReport(event=objects.spec.name, mode=objects.settings.load_mode)
    files, foreign = data_prefix_listing(store, objects.spec, since, until)
    for key in foreign:
        report.fail(key, f"{REFUSED}: not a data file name the workers write")
    report.files_in_s3 = len(files)
    history = read_history(warehouse, objects)
    report.history, report.history_note = history.source, history.fallback
    states = history.sort(objects, files, auto_ingest=auto_ingest)
    report.already_loaded = len(states.loaded)
    report.missing, report.unknown = states.missing, states.unknown
    if auto_ingest:
        handoff = plan_handoff(objects, history, states, files)
        report.refreshes = [refresh.statement for refresh in handoff.refreshes]
        report.handed_to_pipe = handoff.handed
        report.manual = handoff.manual
        if not dry_run:
            for statement in report.refreshes:
                warehouse.execute(statement)
        return report
    if dry_run:
        return report
    to_load = states.missing + states.unknown
    for start in range(0, len(to_load), BATCH_FILES):
        batch = to_load[start : start + BATCH_FILES]
        for result in load_files(warehouse, store, objects, batch):
            if result.done:
                report.loaded.append(result.key)
            else:
                report.fail(result.key, f"{result.status}: {result.error}")
    return report
