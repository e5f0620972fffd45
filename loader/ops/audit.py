"""``loader audit``: proof that an event's table holds every record its topic was read up to.

Three checks, each from what the loader already writes, never from the records themselves:

- **Per partition, in S3.** Every file's key names its partition and the offsets it covers
  (:mod:`loader.store.layout`). Sorted by offset, the data and dead-letter files' ranges must
  follow each other with no gap and no overlap, from the first file to the consumer group's
  committed offset (with ``--until``, to the last file of the range). A gap inside a
  ``--since``/``--until`` window may be filled by a file whose time partition lies outside
  it (Kafka timestamps need not grow with offsets): only then is the whole partition listed.
- **Per file, in S3.** A range's data file rows plus its dead letters (both from the Parquet
  footers, one ranged GET each) equal its offsets. On a shared topic the records of other
  event types are skipped, counted only in ``loader_records_skipped_total``, never per file:
  there the check is ``rows + dead letters <= offsets``, the rest is reported as skipped,
  and a gap may be a range of other types' records only (the worker writes no file for one),
  so it is listed as unverified, not counted as a problem.
- **Per file, in the table.** One SQL statement per :data:`SQL_RANGES` ranges joins the
  table with a ``VALUES`` list of (range, partition, first, last) and counts, per range,
  the worker's rows (``_REDRIVEN_AT`` null) and the re-driven ones; each must equal the
  footers' count, with distinct offsets (a duplicate shows as more rows than offsets).

Listing is by time partition: one listing from ``--since``'s folder on (S3 lists keys in
order), stopped at ``--until``'s. Files younger than ``settle_s`` are left out of the table
check: their load may still be under way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from loader.config.spec import EventSpec
from loader.errors import StorageError
from loader.store.footer import parquet_footer
from loader.store.layout import FileName, parse_key, period_ms
from loader.store.s3 import ObjectInfo, S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.objects import REDRIVEN_AT, EventObjects

__all__ = [
    "SQL_RANGES",
    "AuditReport",
    "FileSet",
    "Problem",
    "audit",
    "coverage",
    "list_files",
]

SQL_RANGES = 1000
"""Ranges counted by one SQL statement: a bounded number of statements for any number of files."""
FOOTER_THREADS = 8
"""Footers read at once (each one ranged GET)."""


@dataclass(frozen=True)
class Problem:
    """One gap or mismatch: what, where, the files involved and the command that repairs it."""

    kind: str
    """``gap``, ``overlap``, ``not_committed``, ``file_count``, ``table_missing``, ``table_duplicate``
    or (not counted as a problem) ``unverified_gap``."""
    partition: int
    first_offset: int
    last_offset: int
    files: tuple[str, ...]
    detail: str
    repair: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "partition": self.partition,
            "first_offset": self.first_offset,
            "last_offset": self.last_offset,
            "files": list(self.files),
            "detail": self.detail,
            "repair": self.repair,
        }


@dataclass
class FileSet:
    """One range of one partition: the worker's data and dead-letter file of it, and the data
    files re-driven from its dead letters (keys, and rows once footers are read)."""

    partition: int
    first_offset: int
    last_offset: int
    folder: datetime
    """The time partition the keys name."""
    data: str | None = None
    dead_letter: str | None = None
    redriven: list[str] = field(default_factory=list)
    newest: datetime | None = None
    """The newest object's LastModified (a file younger than the settle time is not table-checked)."""
    rows: int = 0
    dead_letters: int = 0
    redriven_rows: int = 0

    @property
    def offsets(self) -> int:
        return self.last_offset - self.first_offset + 1

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for k in (self.data, self.dead_letter, *self.redriven) if k is not None)


@dataclass
class AuditReport:
    """What ``loader audit`` found for one event type."""

    event: str
    since: datetime | None = None
    until: datetime | None = None
    files: int = 0
    ranges: int = 0
    partitions: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Per partition: the first and last offset its files cover."""
    committed: dict[int, int | None] = field(default_factory=dict)
    rows: int = 0
    dead_letters: int = 0
    skipped: int = 0
    """Shared topic: offsets of the files that are neither rows nor dead letters (other types')."""
    table_checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)
    """Found but not proof of a fault (a gap on a shared topic, a roll in flight)."""

    @property
    def complete(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "complete": self.complete,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "files": self.files,
            "ranges": self.ranges,
            "partitions": {
                str(p): {"first_offset": lo, "last_offset": hi, "committed": self.committed.get(p)}
                for p, (lo, hi) in sorted(self.partitions.items())
            },
            "rows": self.rows,
            "dead_letters": self.dead_letters,
            "skipped": self.skipped,
            "table_checked": self.table_checked,
            "problems": [p.to_json() for p in self.problems],
            "notes": [p.to_json() for p in self.notes],
        }


# -- listing ------------------------------------------------------------------------------------


def _folder(spec: EventSpec, moment: datetime) -> str:
    return f"dt={moment:%Y-%m-%d}" + (f"/hour={moment:%H}" if spec.s3.time_partition == "hour" else "")


def _listing(
    store: S3Store, spec: EventSpec, prefix: str, since: datetime | None, until: datetime | None
) -> Iterator[tuple[ObjectInfo, FileName]]:
    """The event's files under ``prefix`` (data or dead-letter) whose folder is in [since, until):
    one listing starting at ``since``'s folder, stopped at ``until``'s (keys come in order)."""
    start_after = f"{prefix}{_folder(spec, since)}" if since is not None else None
    for info in store.list_objects(prefix, start_after=start_after):
        parsed = parse_key(info.key)
        if parsed is None or parsed.prefix != spec.s3.prefix or parsed.topic != spec.kafka.topic:
            continue  # not a file of this event (gateway spills, foreign keys): not a range
        if parsed.hourly != (spec.s3.time_partition == "hour"):
            continue
        if until is not None and parsed.time_partition >= until:
            return
        if since is not None and parsed.time_partition < since:
            continue
        yield info, parsed


def list_files(
    store: S3Store, spec: EventSpec, since: datetime | None, until: datetime | None
) -> dict[tuple[int, int, int, datetime], FileSet]:
    """The event's data and dead-letter files of [since, until), by (partition, first, last,
    folder): one range named in two folders is two ranges, which overlap."""
    sets: dict[tuple[int, int, int, datetime], FileSet] = {}
    for prefix in (spec.data_prefix, spec.dead_letter_prefix):
        for info, parsed in _listing(store, spec, prefix, since, until):
            ident = (parsed.partition, parsed.first_offset, parsed.last_offset, parsed.time_partition)
            found = sets.setdefault(ident, FileSet(*ident))
            if parsed.redriven is not None:
                found.redriven.append(info.key)
            elif parsed.kind == "data":
                found.data = info.key
            else:
                found.dead_letter = info.key
            if info.last_modified is not None and (found.newest is None or info.last_modified > found.newest):
                found.newest = info.last_modified
    return sets


# -- the range logic ----------------------------------------------------------------------------


def coverage(
    partition: int, sets: Sequence[FileSet], committed: int | None, *, check_tail: bool
) -> list[Problem]:
    """Gaps and overlaps between one partition's ranges (``sets``, any order), and (with
    ``check_tail``) offsets before ``committed`` that no file covers. Files past the committed
    offset are a roll in flight (reported by the caller as a note), not a fault."""
    problems: list[Problem] = []
    ordered = sorted(sets, key=lambda s: (s.first_offset, s.last_offset))
    reach: FileSet | None = None  # the range reaching furthest so far
    for current in ordered:
        if reach is not None:
            if current.first_offset <= reach.last_offset:
                problems.append(
                    Problem(
                        "overlap",
                        partition,
                        current.first_offset,
                        min(current.last_offset, reach.last_offset),
                        reach.keys + current.keys,
                        f"offsets {current.first_offset}..{min(current.last_offset, reach.last_offset)} "
                        "are claimed by two files",
                        "",
                    )
                )
            elif current.first_offset > reach.last_offset + 1:
                problems.append(
                    Problem(
                        "gap",
                        partition,
                        reach.last_offset + 1,
                        current.first_offset - 1,
                        reach.keys + current.keys,
                        f"offsets {reach.last_offset + 1}..{current.first_offset - 1} are in no file "
                        "(between the files named)",
                        "",
                    )
                )
        if reach is None or current.last_offset > reach.last_offset:
            reach = current
    if check_tail and reach is not None and committed is not None and committed > reach.last_offset + 1:
        problems.append(
            Problem(
                "not_committed",
                partition,
                reach.last_offset + 1,
                committed - 1,
                reach.keys,
                f"the consumer group committed offset {committed}, but no file covers "
                f"{reach.last_offset + 1}..{committed - 1}",
                "",
            )
        )
    return problems


# -- footers and the table ----------------------------------------------------------------------


def _read_counts(store: S3Store, sets: Iterable[FileSet]) -> list[Problem]:
    """Fill each range's rows, dead letters and re-driven rows from the footers (ranged GETs);
    a file that is no Parquet file is a problem (its range counts no rows from it)."""
    jobs = [(s, key) for s in sets for key in s.keys]

    def rows(key: str) -> int | str:
        try:
            return int(parquet_footer(store, key).num_rows)
        except StorageError as exc:
            if exc.transient:
                raise
            return str(exc)

    with ThreadPoolExecutor(FOOTER_THREADS) as pool:
        counts = list(pool.map(rows, [key for _, key in jobs]))
    unreadable = []
    for (found, key), count in zip(jobs, counts, strict=True):
        if isinstance(count, str):
            unreadable.append(
                Problem(
                    "unreadable",
                    found.partition,
                    found.first_offset,
                    found.last_offset,
                    (key,),
                    count,
                    f"not written by the worker: restore it from the bucket's object versions or remove it "
                    f"(aws s3 rm s3://{store.bucket}/KEY)",
                )
            )
        elif key == found.data:
            found.rows = count
        elif key == found.dead_letter:
            found.dead_letters = count
        else:
            found.redriven_rows += count
    return unreadable


def table_counts_statement(objects: EventObjects, ranges: Sequence[tuple[int, int, int]]) -> str:
    """Per (index, partition, first, last) of ``ranges``: the table's worker rows, their distinct
    offsets, and the re-driven rows with offsets in the range, in one statement."""
    values = ", ".join(f"({int(i)}, {int(p)}, {int(lo)}, {int(hi)})" for i, (p, lo, hi) in enumerate(ranges))
    redriven = f'"{REDRIVEN_AT}"'
    return (
        "SELECT r.i,"  # noqa: S608 - integers and a validated, quoted table name only
        f' COUNT(CASE WHEN t.{redriven} IS NULL THEN t."_OFFSET" END),'
        f' COUNT(DISTINCT CASE WHEN t.{redriven} IS NULL THEN t."_OFFSET" END),'
        f' COUNT(CASE WHEN t.{redriven} IS NOT NULL THEN t."_OFFSET" END)'
        f" FROM (VALUES {values}) AS r(i, p, lo, hi)"
        f' LEFT JOIN {objects.table} AS t ON t."_PARTITION" = r.p AND t."_OFFSET" BETWEEN r.lo AND r.hi'
        " GROUP BY r.i"
    )


def table_counts(
    warehouse: Warehouse, objects: EventObjects, ranges: Sequence[tuple[int, int, int]]
) -> list[tuple[int, int, int]]:
    """(rows, distinct offsets, re-driven rows) of each range, :data:`SQL_RANGES` ranges a statement."""
    counts: list[tuple[int, int, int]] = []
    for start in range(0, len(ranges), SQL_RANGES):
        batch = ranges[start : start + SQL_RANGES]
        found = {
            int(i): (int(a), int(b), int(c))
            for i, a, b, c in warehouse.execute(table_counts_statement(objects, batch))
        }
        counts.extend(found.get(i, (0, 0, 0)) for i in range(len(batch)))
    return counts


# -- repairs ------------------------------------------------------------------------------------


def _window(spec: EventSpec, folder: datetime) -> str:
    """``--since``/``--until`` selecting exactly the time partition ``folder``."""
    end = folder + timedelta(milliseconds=period_ms(spec))
    return f"--since {folder:%Y-%m-%dT%H:00} --until {end:%Y-%m-%dT%H:00}"


def _replace_rows(objects: EventObjects, found: FileSet) -> str:
    """SQL that replaces the table's rows of the worker's file of ``found`` with the file's."""
    assert found.data is not None
    delete = (
        f"DELETE FROM {objects.table}"  # noqa: S608 - integers and a validated, quoted name
        f' WHERE "_PARTITION" = {int(found.partition)}'
        f' AND "_OFFSET" BETWEEN {int(found.first_offset)} AND {int(found.last_offset)}'
        f' AND "{REDRIVEN_AT}" IS NULL'
    )
    copy = objects.copy_statement([objects.relative_path(found.data)], force=True)
    return f"{delete}; {copy}"


def _repair(problem: Problem, spec: EventSpec, store: S3Store) -> str:
    bucket = store.bucket
    if problem.kind in ("gap", "not_committed"):
        return (
            f"restore the missing file(s) from the bucket's object versions (aws s3api list-object-versions "
            f"--bucket {bucket} --prefix {spec.data_prefix}), then `loader reconcile {spec.name}`; "
            "without versions the records are only in Kafka (while retained): "
            f"`loader status {spec.name}` shows the partition's earliest offset"
        )
    if problem.kind == "overlap":
        return (
            "one of these names was not written by the worker for this range: compare the files, "
            f"remove the foreign one (aws s3 rm s3://{bucket}/KEY) and, if the table check below "
            f"shows its rows as duplicates, replace them; then `loader audit {spec.name}` again"
        )
    return ""


# -- the audit ----------------------------------------------------------------------------------


def audit(
    spec: EventSpec,
    store: S3Store,
    warehouse: Warehouse,
    objects: EventObjects,
    committed: dict[int, int | None] | None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    settle_s: float = 900.0,
    now: datetime | None = None,
) -> AuditReport:
    """Audit ``spec``'s files of [since, until) and its table (see the module docstring).
    ``committed`` is the consumer group's offset per partition (None: not checked, as with
    ``--until``)."""
    now = now or datetime.now(UTC)
    shared = bool(spec.shared_with)
    report = AuditReport(event=spec.name, since=since, until=until, committed=dict(committed or {}))
    sets = list_files(store, spec, since, until)
    report.problems.extend(_read_counts(store, sets.values()))
    report.files = sum(len(s.keys) for s in sets.values())
    report.ranges = len(sets)
    by_partition: dict[int, list[FileSet]] = {}
    for found in sets.values():
        by_partition.setdefault(found.partition, []).append(found)
    windowed = since is not None or until is not None
    for partition, ranges in sorted(by_partition.items()):
        report.partitions[partition] = (
            min(r.first_offset for r in ranges),
            max(r.last_offset for r in ranges),
        )
        problems = coverage(
            partition, ranges, (committed or {}).get(partition), check_tail=committed is not None
        )
        if windowed and any(p.kind == "gap" for p in problems):
            problems = _gaps_filled_outside(store, spec, partition, problems)
        for problem in problems:
            fixed = replace(problem, repair=_repair(problem, spec, store))
            if shared and problem.kind in ("gap", "not_committed"):
                report.notes.append(
                    replace(
                        fixed,
                        kind="unverified_gap",
                        detail=fixed.detail + " (a shared topic: a range of other event types' "
                        "records only has no file, so this may be no fault)",
                    )
                )
            else:
                report.problems.append(fixed)
        position = (committed or {}).get(partition)
        if position is not None:
            ahead = [r for r in ranges if r.last_offset >= position]
            for found in ahead:
                report.notes.append(
                    Problem(
                        "in_flight",
                        partition,
                        found.first_offset,
                        found.last_offset,
                        found.keys,
                        f"past the committed offset {position}: a roll in flight (its commit follows)",
                        "",
                    )
                )
    for found in sorted(sets.values(), key=lambda s: (s.partition, s.first_offset)):
        report.rows += found.rows
        report.dead_letters += found.dead_letters
        accounted = found.rows + found.dead_letters
        if accounted > found.offsets or (accounted < found.offsets and not shared):
            missing_data = found.data is None and found.dead_letter is not None
            report.problems.append(
                Problem(
                    "file_count",
                    found.partition,
                    found.first_offset,
                    found.last_offset,
                    found.keys,
                    f"{found.rows} rows + {found.dead_letters} dead letters for {found.offsets} offsets"
                    + (" (the range has no data file)" if missing_data else ""),
                    (
                        "restore the range's data file from the bucket's object versions, or (the newest "
                        "range) restart the partition's worker, whose recovery rewrites it"
                        if missing_data
                        else "the file does not hold its range: inspect it "
                        f"(`loader dead-letters list {spec.name}`)"
                    ),
                )
            )
        elif shared:
            report.skipped += found.offsets - accounted
    _check_table(report, warehouse, objects, sets.values(), now - timedelta(seconds=settle_s))
    return report


def _gaps_filled_outside(
    store: S3Store, spec: EventSpec, partition: int, problems: list[Problem]
) -> list[Problem]:
    """Drop the gaps that files of the partition outside the window fill (one full listing)."""
    everything = [s for s in list_files(store, spec, None, None).values() if s.partition == partition]
    kept = []
    for problem in problems:
        if problem.kind == "gap":
            inside = [
                s
                for s in everything
                if s.first_offset <= problem.last_offset and s.last_offset >= problem.first_offset
            ]
            if inside:
                continue  # the outside files' own coverage is another window's audit
        kept.append(problem)
    return kept


def _check_table(
    report: AuditReport,
    warehouse: Warehouse,
    objects: EventObjects,
    sets: Iterable[FileSet],
    settled_before: datetime,
) -> None:
    """Each settled range's rows in the table against its files' (one statement per SQL_RANGES)."""
    spec = objects.spec
    checked = [
        s
        for s in sets
        if (s.data is not None or s.redriven) and (s.newest is None or s.newest <= settled_before)
    ]
    counts = table_counts(warehouse, objects, [(s.partition, s.first_offset, s.last_offset) for s in checked])
    report.table_checked = len(checked)
    for found, (rows, distinct, redriven) in zip(checked, counts, strict=True):
        if rows == found.rows and distinct == rows and redriven == found.redriven_rows:
            continue
        parts = []
        if rows != found.rows or distinct != rows:
            parts.append(
                f"the table holds {rows} rows ({distinct} distinct offsets) of the file's {found.rows}"
            )
        if redriven != found.redriven_rows:
            parts.append(f"{redriven} re-driven rows of the re-driven files' {found.redriven_rows}")
        duplicate = rows > distinct or redriven > found.redriven_rows or rows > found.rows
        if found.data is not None and rows == 0 and found.rows > 0:
            repair = (
                f"`loader reconcile {spec.name} {_window(spec, found.folder)}` (a file never loaded); "
                f"if its load history says loaded, its rows were deleted: {_replace_rows(objects, found)}"
            )
        elif found.data is not None and (rows != found.rows or distinct != rows):
            repair = _replace_rows(objects, found)
        else:
            repair = (
                f"re-driven rows differ: `loader dead-letters redrive {spec.name}` loads what is missing; "
                "duplicates: DELETE the range's rows with _REDRIVEN_AT set and redrive again"
            )
        report.problems.append(
            Problem(
                "table_duplicate" if duplicate else "table_missing",
                found.partition,
                found.first_offset,
                found.last_offset,
                found.keys,
                "; ".join(parts),
                repair,
            )
        )
