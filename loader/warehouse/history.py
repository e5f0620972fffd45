"""What a table has loaded: the one reader of Snowflake's load history.

``INFORMATION_SCHEMA.COPY_HISTORY`` lists both COPY and Snowpipe loads of the
last 14 days. It is read in time windows, and a window that returns
:data:`PAGE_ROWS` rows is split in two and read again, so no cap on one
answer can hide a load. Where the table function is unavailable (the local
fakesnow server has none; a role may lack the privilege), the reader falls
back to ``INFORMATION_SCHEMA.LOAD_HISTORY`` and says so, in a log warning and
in :attr:`LoadHistory.fallback` that the commands print: that view lists COPY
loads only, never Snowpipe's, and at most 10,000 rows.

Either history reaches back :data:`HISTORY_REACH` only. A file staged before
then that the history does not list is *unknown* (it may have loaded before
the history's reach), never *missing*: see :meth:`LoadHistory.sort`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from loader.errors import WarehouseError
from loader.store.s3 import ObjectInfo
from loader.warehouse.connection import Warehouse
from loader.warehouse.objects import EventObjects

__all__ = [
    "COPY_HISTORY",
    "HISTORY_REACH",
    "LOAD_HISTORY",
    "PAGE_ROWS",
    "FileStates",
    "LoadHistory",
    "LoadRecord",
    "read_history",
]

log = structlog.get_logger("loader.history")

COPY_HISTORY = "COPY_HISTORY"
LOAD_HISTORY = "LOAD_HISTORY"
HISTORY_REACH = timedelta(days=14)
"""How far back both histories reach (Snowflake keeps 14 days in INFORMATION_SCHEMA)."""
REACH_MARGIN = timedelta(minutes=5)
"""Kept off the oldest edge: COPY_HISTORY refuses a START_TIME older than 14 days, and S3's
clock is not the warehouse's."""
PAGE_ROWS = 10_000
"""Rows at which a window's answer may have been cut (LOAD_HISTORY's cap): the window is split."""
MIN_WINDOW = timedelta(seconds=1)
"""A window this short is not split further (it would take 10,000 loads in one second)."""
LOADED_STATUSES = frozenset({"LOADED", "PARTIALLY_LOADED"})
_NOT_ERRORS = LOADED_STATUSES | {"LOAD_SKIPPED", "LOAD_IN_PROGRESS"}


def _status(raw: object) -> str:
    """One spelling for both views: COPY_HISTORY says ``Partially loaded``, LOAD_HISTORY
    ``PARTIALLY LOADED`` (fakesnow ``PARTIALLY_LOADED``)."""
    return str(raw).strip().upper().replace(" ", "_")


def _moment(value: object) -> datetime | None:
    """A timestamp from the warehouse, made timezone-aware (a naive one is UTC)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


@dataclass(frozen=True)
class LoadRecord:
    """One file's load as the history lists it."""

    path: str
    """Relative to the stage (what COPY's FILES and a pipe's PREFIX name)."""
    status: str
    loaded_at: datetime | None
    error: str | None
    pipe: str | None
    """The pipe that loaded it; None for a COPY (and always in LOAD_HISTORY)."""

    @property
    def loaded(self) -> bool:
        return self.status in LOADED_STATUSES

    @property
    def failed(self) -> bool:
        return self.status not in _NOT_ERRORS


@dataclass(frozen=True)
class FileStates:
    """Data files sorted by what the history says of them (keys, in the order given)."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Staged within the history's reach and not loaded: certainly not in the table."""
    unknown: list[str] = field(default_factory=list)
    """Not listed, but the history cannot tell: staged before its reach, or (auto-ingest
    read from LOAD_HISTORY) possibly loaded by the pipe, which that view never lists."""


@dataclass(frozen=True)
class LoadHistory:
    """The loads into one table over the history's reach, and which view said so."""

    source: str
    """:data:`COPY_HISTORY`, or :data:`LOAD_HISTORY` when that was unavailable."""
    records: tuple[LoadRecord, ...]
    now: datetime
    """The warehouse's clock when the history was read."""
    fallback: str | None = None
    """Why LOAD_HISTORY was read, and what it cannot show; None when COPY_HISTORY answered."""

    @property
    def reach_start(self) -> datetime:
        """The oldest moment the history covers: a file staged before it may have loaded unseen."""
        return self.now - HISTORY_REACH + REACH_MARGIN

    @property
    def sees_pipe_loads(self) -> bool:
        return self.source == COPY_HISTORY

    @property
    def loaded(self) -> frozenset[str]:
        """Paths loaded (also partially) by COPY or by a pipe."""
        return frozenset(r.path for r in self.records if r.loaded)

    @property
    def loaded_by_pipe(self) -> frozenset[str]:
        return frozenset(r.path for r in self.records if r.loaded and r.pipe)

    @property
    def last_loaded(self) -> LoadRecord | None:
        loads = [r for r in self.records if r.loaded and r.loaded_at is not None]
        return max(loads, key=lambda r: (r.loaded_at or self.now, r.path), default=None)

    @property
    def errors(self) -> list[LoadRecord]:
        """Failed loads of files that have not loaded since."""
        loaded = self.loaded
        return [r for r in self.records if r.failed and r.path not in loaded]

    def sort(self, objects: EventObjects, files: Iterable[ObjectInfo], *, auto_ingest: bool) -> FileStates:
        """Loaded, missing or unknown, for each of ``files`` (see :class:`FileStates`)."""
        states = FileStates()
        loaded = self.loaded
        certain = self.sees_pipe_loads or not auto_ingest
        for info in files:
            if objects.relative_path(info.key) in loaded:
                states.loaded.append(info.key)
            elif certain and info.last_modified is not None and info.last_modified >= self.reach_start:
                states.missing.append(info.key)
            else:
                states.unknown.append(info.key)
        return states


def _records(objects: EventObjects, rows: Iterable[Sequence[Any]]) -> set[LoadRecord]:
    return {
        LoadRecord(
            path=objects.relative_path(str(row[0])),
            status=_status(row[1]),
            loaded_at=_moment(row[2]),
            error=None if row[3] is None else str(row[3]),
            pipe=None if row[4] is None else str(row[4]),
        )
        for row in rows
    }


def _copy_history(
    warehouse: Warehouse, objects: EventObjects, table: str, window: tuple[datetime, datetime], page_rows: int
) -> set[LoadRecord]:
    """The loads of ``window``, split in halves while an answer may have been cut at ``page_rows``."""
    start, end = window
    rows = warehouse.execute(objects.copy_history_query(table, start, end))
    if len(rows) < page_rows:
        return _records(objects, rows)
    if end - start <= MIN_WINDOW:
        log.warning("history_window_full", event_type=objects.spec.name, start=str(start), rows=len(rows))
        return _records(objects, rows)
    middle = start + (end - start) / 2
    return _copy_history(warehouse, objects, table, (start, middle), page_rows) | _copy_history(
        warehouse, objects, table, (middle, end), page_rows
    )


def _warehouse_now(warehouse: Warehouse) -> datetime:
    """The warehouse's clock: the history's windows and reach are measured on it."""
    return _moment(warehouse.execute("SELECT CURRENT_TIMESTAMP()")[0][0]) or datetime.now(UTC)


def read_history(
    warehouse: Warehouse, objects: EventObjects, table: str | None = None, *, page_rows: int = PAGE_ROWS
) -> LoadHistory:
    """The loads into the event's table (or ``table`` of its schema) over the history's reach."""
    name = (table or objects.spec.snowflake.table).upper()
    warehouse.execute(objects.use_statement())
    now = _warehouse_now(warehouse)
    try:
        window = (now - HISTORY_REACH + REACH_MARGIN, now)
        records = _copy_history(warehouse, objects, name, window, page_rows)
    except WarehouseError as exc:
        if exc.transient:
            raise
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    else:
        return LoadHistory(COPY_HISTORY, tuple(sorted(records, key=_order)), now)
    rows = warehouse.execute(objects.load_history_query(name))
    capped = (
        f" and returned its cap of {len(rows):,} rows: older loads may be left out"
        if len(rows) >= page_rows
        else ""
    )
    fallback = (
        f"COPY_HISTORY unavailable ({reason}); read INFORMATION_SCHEMA.LOAD_HISTORY instead,"
        f" which lists COPY loads only (no Snowpipe loads){capped}"
    )
    log.warning("load_history_fallback", event_type=objects.spec.name, table=name, reason=fallback)
    return LoadHistory(LOAD_HISTORY, tuple(sorted(_records(objects, rows), key=_order)), now, fallback)


def _order(record: LoadRecord) -> tuple[str, str]:
    return (record.loaded_at.isoformat() if record.loaded_at else "", record.path)
