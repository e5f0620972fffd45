"""Re-drive dead letters: decode their archived records again with the event's current
schema (after a schema or producer fix) and load those that now decode.

A dead-letter file keeps each rejected record as it was read: value, key, headers,
timestamp, partition and offset. Decoded again, a record gets the row the worker would
write for it now, with its original metadata, and ``_REDRIVEN_AT`` (when this run
started; NULL in the worker's rows). The rows go to a new data file named after the
dead-letter file and the offsets it holds (:func:`~loader.store.layout.redriven_key`),
created only if no object has that name (a conditional PUT), and never rewritten.

Nothing loads twice:

- A record held by an earlier re-driven file of the same dead-letter file, or by its
  range's data file (the worker re-read the range after a schema change), is left out.
  So a later run, after another fix, writes only the records that decode for the first
  time, under another name.
- The files are loaded like a reconcile loads them: in ``copy`` mode a COPY of exactly
  those files (Snowflake skips a path it has loaded); under ``auto-ingest`` they are
  handed to the pipe, or left to an operator, as :mod:`loader.warehouse.pipe_refresh`
  decides, never COPYed into the pipe's table.
- A range whose data file is missing while no later file of its partition exists may be
  a roll the worker has not finished: it is skipped until the partition moves on, since
  the worker finishes it with whatever schema it runs then.

Records still bad stay in their dead-letter file, the archive of record, which is never
touched; the report gives their reason under the current schema.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from loader.config.settings import Settings
from loader.config.spec import EventSpec
from loader.encode.decode import Decoder, RecordValues
from loader.encode.parquet import write_parquet
from loader.errors import clip
from loader.ops.dead_letters import offsets_in, reason_kind, redriven_files
from loader.store.layout import FileName, data_key, parse_key, redriven_key
from loader.store.listing import data_files
from loader.store.s3 import ObjectInfo, S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.history import read_history
from loader.warehouse.load import load_files
from loader.warehouse.manager import PipeManager
from loader.warehouse.objects import REDRIVEN_AT, EventObjects
from loader.warehouse.pipe_refresh import ManualStep, plan_handoff

__all__ = [
    "REDRIVEN_AT_TYPE",
    "FileRedrive",
    "RedriveLoad",
    "archived_records",
    "load_redriven",
    "redrive_files",
    "warehouse_behind",
]

REDRIVEN_AT_TYPE = pa.timestamp("us", tz="UTC")
BATCH_FILES = 200
"""Files per COPY, as reconcile loads them."""


def archived_records(table: pa.Table) -> list[RecordValues]:
    """The records of dead-letter rows (see :mod:`loader.encode.dead_letter`), in row order: a
    header key that was not UTF-8 comes back as the reader gave it (surrogate escapes)."""
    records = []
    for row in table.to_pylist():
        headers = tuple(
            (
                h["key_bytes"].decode("utf-8", "surrogateescape") if h["key_bytes"] is not None else h["key"],
                h["value"],
            )
            for h in row["_HEADERS"] or []
        )
        records.append(
            RecordValues(
                topic=row["_TOPIC"],
                partition=row["_PARTITION"],
                offset=row["_OFFSET"],
                timestamp=row["_KAFKA_TIMESTAMP_MS"],
                key=row["_KEY"],
                value=row["_VALUE"],
                headers=headers,
            )
        )
    return records


@dataclass
class FileRedrive:
    """What a re-drive found (and, unless a dry run, did) for one dead-letter file."""

    key: str
    records: int = 0
    in_data: int = 0
    """Records that decode and that the range's data file already holds (left out)."""
    redriven_before: int = 0
    """Records an earlier re-drive wrote to a data file (left out)."""
    new: int = 0
    """Records that decode for the first time: the rows of ``written``."""
    still_bad: Counter[str] = field(default_factory=Counter)
    """Records that still do not decode, by kind of reason (under the current schema)."""
    written: str | None = None
    """The re-driven file for ``new`` (in a dry run: the file that would be written)."""
    redriven_keys: list[str] = field(default_factory=list)
    """Every re-driven file of this dead-letter file, ``written`` included: what to load."""
    skipped: str | None = None
    """Why the file was not re-driven (its range may be a roll the worker has not finished)."""


@dataclass
class RedriveLoad:
    """What loading the re-driven files did."""

    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Loaded before (the table's load metadata skipped them)."""
    failed: dict[str, str] = field(default_factory=dict)
    """Files not loaded, with why."""
    handed_to_pipe: list[str] = field(default_factory=list)
    refreshes: list[str] = field(default_factory=list)
    manual: list[ManualStep] = field(default_factory=list)
    rows: int = 0


def _dead_letter_files(store: S3Store, spec: EventSpec) -> list[tuple[ObjectInfo, FileName]]:
    """The event's dead-letter files, in key order."""
    found = []
    for info in store.list_objects(spec.dead_letter_prefix):
        parsed = parse_key(info.key)
        if (
            parsed is not None
            and parsed.kind == "dead-letter"
            and parsed.prefix == spec.s3.prefix
            and parsed.hourly == (spec.s3.time_partition == "hour")
        ):
            found.append((info, parsed))
    return found


def _in_range(parsed: FileName, since: datetime | None, until: datetime | None) -> bool:
    """Whether a file's time partition is in [since, until)."""
    return (since is None or parsed.time_partition >= since) and (
        until is None or parsed.time_partition < until
    )


def _newest_firsts(keys: Sequence[str]) -> dict[tuple[str, int], int]:
    """The first offset of the newest file (data or dead letters, re-driven ones aside) of
    each (topic, partition)."""
    newest: dict[tuple[str, int], int] = {}
    for key in keys:
        parsed = parse_key(key)
        if parsed is not None and parsed.redriven is None:
            where = (parsed.topic, parsed.partition)
            newest[where] = max(newest.get(where, -1), parsed.first_offset)
    return newest


def redrive_files(
    store: S3Store,
    spec: EventSpec,
    decoder: Decoder,
    *,
    since: datetime | None,
    until: datetime | None,
    redriven_at: datetime,
    dry_run: bool = False,
) -> list[FileRedrive]:
    """Decode the dead letters of the range again and (unless ``dry_run``) write the records
    that decode for the first time to re-driven data files, stamped ``redriven_at``."""
    data_keys = {info.key for info in store.list_objects(spec.data_prefix)}
    dead = _dead_letter_files(store, spec)
    newest = _newest_firsts([*data_keys, *(info.key for info, _ in dead)])
    earlier = redriven_files(store, spec)
    results = []
    for info, parsed in dead:
        if not _in_range(parsed, since, until):
            continue
        result = FileRedrive(info.key, redriven_keys=[r.key for r in earlier.get(info.key, [])])
        results.append(result)
        range_data = data_key(spec, parsed.covered)
        has_data = range_data in data_keys
        if not has_data and newest.get((parsed.topic, parsed.partition), -1) <= parsed.first_offset:
            result.skipped = (
                f"no data file and no later file of partition {parsed.partition}: the worker may not have"
                " finished this roll yet; re-drive it once the partition has moved on"
            )
            continue
        _redrive_one(
            store,
            spec,
            decoder,
            result,
            range_data=range_data if has_data else None,
            redriven_at=redriven_at,
            dry_run=dry_run,
        )
    return results


def _redrive_one(
    store: S3Store,
    spec: EventSpec,
    decoder: Decoder,
    result: FileRedrive,
    *,
    range_data: str | None,
    redriven_at: datetime,
    dry_run: bool,
) -> None:
    """Decode one dead-letter file again; write what decodes for the first time."""
    archived = pq.read_table(io.BytesIO(store.get_bytes(result.key)))
    result.records = archived.num_rows
    in_data = offsets_in(store, [range_data]) if range_data else set()
    before = offsets_in(store, result.redriven_keys)
    held = in_data | before
    decoded = decoder.decode(archived_records(archived))
    result.still_bad.update(reason_kind(r.reason) for r in decoded.rejected if r.record.offset not in held)
    rows = decoded.table
    offsets = rows.column("_OFFSET")
    result.in_data = _count_in(offsets, in_data)
    result.redriven_before = _count_in(offsets, before - in_data)
    if held:
        rows = rows.filter(pc.invert(pc.is_in(offsets, value_set=pa.array(sorted(held), pa.int64()))))
    result.new = rows.num_rows
    if not rows.num_rows:
        return
    key = redriven_key(result.key, rows.column("_OFFSET").to_pylist())
    result.written = key
    result.redriven_keys.append(key)
    if dry_run:
        return
    stamp = pa.repeat(pa.scalar(redriven_at, REDRIVEN_AT_TYPE), rows.num_rows)
    rows = rows.append_column(pa.field(REDRIVEN_AT, REDRIVEN_AT_TYPE), stamp)
    sink = io.BytesIO()
    write_parquet(rows, sink, spec.rolling.row_group_records)
    # False: a concurrent re-drive wrote the same records first; its file is the one to load.
    store.put_new(sink.getvalue(), key)


def _count_in(offsets: pa.ChunkedArray, chosen: set[int]) -> int:
    if not chosen:
        return 0
    return int(pc.sum(pc.is_in(offsets, value_set=pa.array(sorted(chosen), pa.int64()))).as_py() or 0)


def warehouse_behind(warehouse: Warehouse, settings: Settings, spec: EventSpec) -> str | None:
    """Why re-driven rows cannot load yet: the table lacks what the spec now says (a field made
    optional, the ``_REDRIVEN_AT`` column), which ``pipes apply`` adds; None when it matches."""
    plan = PipeManager(warehouse, settings).plan(spec)
    if plan.empty:
        return None
    pending = "; ".join([*(step.sql.splitlines()[0] for step in plan.steps), *plan.refusals])
    return (
        f"{spec.name}: the warehouse does not match the spec yet, so re-driven rows could not load"
        f" (or would lose {REDRIVEN_AT}): run `loader pipes apply {spec.name}` first ({clip(pending, 300)})"
    )


def load_redriven(
    warehouse: Warehouse,
    store: S3Store,
    objects: EventObjects,
    keys: Sequence[str],
    *,
    since: datetime | None,
    until: datetime | None,
) -> RedriveLoad:
    """Load the re-driven files ``keys`` the way reconcile loads missing files: a COPY of those
    the load history does not list as loaded (``copy`` mode), or a hand-off to the pipe and
    manual steps (``auto-ingest``)."""
    outcome = RedriveLoad()
    if not keys:
        return outcome
    auto_ingest = objects.settings.load_mode == "auto-ingest"
    files = data_files(store, objects.spec, since, until)
    wanted = set(keys)
    chosen = [info for info in files if info.key in wanted]
    history = read_history(warehouse, objects)
    states = history.sort(objects, chosen, auto_ingest=auto_ingest)
    outcome.skipped.extend(states.loaded)
    if auto_ingest:
        handoff = plan_handoff(objects, history, states, files)
        outcome.refreshes = [refresh.statement for refresh in handoff.refreshes]
        outcome.handed_to_pipe, outcome.manual = handoff.handed, handoff.manual
        for statement in outcome.refreshes:
            warehouse.execute(statement)
        return outcome
    to_load = states.missing + states.unknown
    for start in range(0, len(to_load), BATCH_FILES):
        for result in load_files(warehouse, store, objects, to_load[start : start + BATCH_FILES]):
            if result.status == "LOAD_SKIPPED":
                outcome.skipped.append(result.key)
            elif result.done:
                outcome.loaded.append(result.key)
                outcome.rows += result.rows_loaded
            else:
                outcome.failed[result.key] = f"{result.status}: {result.error}"
    return outcome
