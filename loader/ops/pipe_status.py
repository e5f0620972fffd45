"""Per-pipe status: last file loaded, files waiting, load errors.

The record is the load history (:mod:`loader.warehouse.history`: COPY_HISTORY,
which lists COPY and Snowpipe loads, or LOAD_HISTORY where that is
unavailable, which the status then says) compared with the data files in S3.
With ``auto-ingest`` the pipe's own ``SYSTEM$PIPE_STATUS`` adds its state and
the files it has queued.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from loader.config.identifiers import quote_literal
from loader.store.listing import data_files
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.history import read_history
from loader.warehouse.objects import EventObjects

__all__ = ["PipeStatus", "pipe_status"]


@dataclass
class PipeStatus:
    """What a person asks about one pipe."""

    event: str
    pipe: str
    mode: str
    history: str = ""
    """The view the loads were read from: COPY_HISTORY, or LOAD_HISTORY where unavailable."""
    history_note: str | None = None
    """Why LOAD_HISTORY was read and what it cannot show; None for COPY_HISTORY."""
    files_in_s3: int = 0
    files_loaded: int = 0
    files_pending: int = 0
    """Staged within the history's reach (14 days) and not loaded."""
    files_unknown: int = 0
    """Not in the history, which cannot tell whether they loaded (staged before its reach, or
    auto-ingest read from LOAD_HISTORY): counted apart, never as pending."""
    files_queued: int | None = None
    """Auto-ingest: the files the pipe has queued (its ``pendingFileCount``)."""
    last_file_loaded: str | None = None
    last_load_time: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    execution_state: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def pipe_status(warehouse: Warehouse, store: S3Store, objects: EventObjects) -> PipeStatus:
    """The status of the event's pipe, from the warehouse's own records."""
    auto_ingest = objects.settings.load_mode == "auto-ingest"
    status = PipeStatus(event=objects.spec.name, pipe=objects.pipe_name, mode=objects.settings.load_mode)
    history = read_history(warehouse, objects)
    status.history, status.history_note = history.source, history.fallback
    if auto_ingest:
        raw = warehouse.execute(f"SELECT SYSTEM$PIPE_STATUS({quote_literal(objects.pipe)})")[0][0]
        pipe = json.loads(raw)
        status.execution_state = pipe.get("executionState")
        status.files_queued = int(pipe.get("pendingFileCount", 0))
    status.files_loaded = len(history.loaded)
    last = history.last_loaded
    if last is not None and last.loaded_at is not None:
        status.last_file_loaded, status.last_load_time = last.path, last.loaded_at.isoformat()
    status.errors = [{"file": r.path, "status": r.status, "error": r.error} for r in history.errors]
    files = data_files(store, objects.spec, None, None)
    states = history.sort(objects, files, auto_ingest=auto_ingest)
    status.files_in_s3 = len(files)
    status.files_pending, status.files_unknown = len(states.missing), len(states.unknown)
    return status
