"""Reload an event's files for a time range into its table or into another table.

Snowflake skips a file a table has loaded before, so a reload into the event's
own table loads only what is missing (like reconcile), and a reload into a new
table loads every file once: its rows equal the files' rows. ``force`` reloads
files regardless; rows already in the target then appear twice, which the plan
says before anything runs.

Under ``auto-ingest`` the event's own table belongs to its Snowpipe, whose load
metadata a COPY does not share: a reload into it COPYs nothing. Like reconcile,
it hands the files not loaded to the pipe and reports older gaps
(:mod:`loader.warehouse.pipe_refresh`), and it refuses ``force``. A reload into
another table is a plain COPY in either mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from loader.config.identifiers import check_ident, quote_literal
from loader.errors import ConfigError
from loader.store.listing import data_files
from loader.store.s3 import ObjectInfo, S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.history import read_history
from loader.warehouse.load import load_files
from loader.warehouse.objects import PIPES_TABLE, EventObjects
from loader.warehouse.pipe_refresh import Handoff, plan_handoff

__all__ = ["ReloadPlan", "ReloadReport", "plan_reload", "run_reload"]

BATCH_FILES = 20
"""Files per COPY: large enough to be cheap, small enough for a progress bar that moves."""


@dataclass(frozen=True)
class ReloadPlan:
    """What a reload would do: the files of the range and what the target holds already."""

    event: str
    table: str
    into_event_table: bool
    table_exists: bool
    force: bool
    files: list[ObjectInfo]
    already_loaded: frozenset[str]
    history_note: str | None = None
    """Why the target's loads were read from LOAD_HISTORY, and what it cannot show."""
    handoff: Handoff | None = None
    """Auto-ingest into the event's table: what goes to the pipe, what to an operator (no COPY)."""

    @property
    def to_load(self) -> list[ObjectInfo]:
        """The files a COPY will read: all of them when forced, else those not loaded yet;
        none when the pipe owns the table (see ``handoff``)."""
        if self.handoff is not None:
            return []
        if self.force:
            return list(self.files)
        return [f for f in self.files if f.key not in self.already_loaded]

    @property
    def duplicated(self) -> int:
        """Files whose rows the target already holds and that a forced reload adds again."""
        return sum(1 for f in self.files if f.key in self.already_loaded) if self.force else 0

    @property
    def bytes_to_load(self) -> int:
        return sum(f.size for f in self.to_load)


@dataclass
class ReloadReport:
    """What a reload did."""

    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    handed_to_pipe: list[str] = field(default_factory=list)
    rows: int = 0


def target_table(objects: EventObjects, into: str | None) -> str:
    """The (upper-cased, validated) name of the table a reload writes to."""
    if into is None:
        return objects.spec.snowflake.table.upper()
    try:
        table = check_ident(into, "--into table")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if table == PIPES_TABLE:
        raise ConfigError(f"--into {into}: {PIPES_TABLE} holds the pipe definitions; choose another table")
    return table


def plan_reload(
    warehouse: Warehouse,
    store: S3Store,
    objects: EventObjects,
    *,
    since: datetime | None,
    until: datetime | None,
    into: str | None = None,
    force: bool = False,
) -> ReloadPlan:
    """Read the files of the range and the target's load history; change nothing."""
    table = target_table(objects, into)
    into_event_table = table == objects.spec.snowflake.table.upper()
    auto_ingest = into_event_table and objects.settings.load_mode == "auto-ingest"
    if auto_ingest and force:
        raise ConfigError(
            f"{objects.spec.name}: --force is refused under auto-ingest: Snowpipe {objects.pipe_name} owns"
            f" {table}, and a forced COPY repeats the rows of every file it loaded (the pipe's load metadata"
            " and a COPY's do not know each other). To rebuild a range, replay it with --into a new table"
            " and swap the tables; without --force, replay hands the files not loaded to the pipe"
        )
    files = data_files(store, objects.spec, since, until)
    warehouse.execute(objects.use_statement())
    listed = warehouse.execute(f"SHOW TABLES LIKE {quote_literal(table)} IN SCHEMA {objects.schema_name}")
    exists = any(str(row[1]).upper() == table for row in listed)
    if into_event_table and not exists:
        raise ConfigError(
            f"{objects.spec.name}: table {table} does not exist; run `loader pipes apply` first"
        )
    if not exists:  # a new table has no history: every file loads
        return ReloadPlan(objects.spec.name, table, into_event_table, exists, force, files, frozenset())
    history = read_history(warehouse, objects, table)
    states = history.sort(objects, files, auto_ingest=auto_ingest)
    return ReloadPlan(
        event=objects.spec.name,
        table=table,
        into_event_table=into_event_table,
        table_exists=exists,
        force=force,
        files=files,
        already_loaded=frozenset(states.loaded),
        history_note=history.fallback,
        handoff=plan_handoff(objects, history, states, files) if auto_ingest else None,
    )


def run_reload(
    warehouse: Warehouse,
    store: S3Store,
    objects: EventObjects,
    plan: ReloadPlan,
    on_progress: Callable[[int], None] = lambda files: None,
) -> ReloadReport:
    """Create the target table if needed, then COPY the plan's files in batches (or, when the
    pipe owns the table, hand them to it)."""
    if plan.handoff is not None:
        for refresh in plan.handoff.refreshes:
            warehouse.execute(refresh.statement)
            on_progress(len(refresh.files))
        return ReloadReport(handed_to_pipe=plan.handoff.handed)
    if not plan.table_exists:
        warehouse.execute(objects.create_table(plan.table))
    into = None if plan.into_event_table else plan.table
    report = ReloadReport()
    keys = [f.key for f in plan.to_load]
    for start in range(0, len(keys), BATCH_FILES):
        batch = keys[start : start + BATCH_FILES]
        for result in load_files(warehouse, store, objects, batch, into=into, force=plan.force):
            if result.status == "LOAD_SKIPPED":
                report.skipped.append(result.key)
            elif result.done:
                report.loaded.append(result.key)
            else:
                report.failed.append(result.key)
            report.rows += result.rows_loaded
        on_progress(len(batch))
    return report
