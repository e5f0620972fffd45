"""Closing gaps under Snowpipe auto-ingest without loading anything twice.

A pipe keeps its own load metadata, apart from the table's: a ``COPY INTO``
of a file the pipe loaded loads it again, and a pipe handed a file a COPY
loaded loads that again too. So in ``auto-ingest`` mode nothing COPYs into
the event's table. Files not loaded and staged within Snowpipe's reach (7
days) are handed to the pipe with ``ALTER PIPE … REFRESH PREFIX = …
MODIFIED_AFTER = …``, which queues the staged files under the prefix and
skips those the pipe has loaded. A folder goes as one refresh when every
file it would queue is either to be loaded or loaded by the pipe; a folder
that also holds a file only a COPY loaded goes file by file.

Older gaps cannot be refreshed: they are reported as :class:`ManualStep`,
with the exact statement an operator can run and what it risks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, timedelta

from loader.config.identifiers import quote_literal
from loader.store.layout import parse_key
from loader.store.s3 import ObjectInfo
from loader.warehouse.history import FileStates, LoadHistory
from loader.warehouse.objects import EventObjects

__all__ = ["REFRESH_REACH", "Handoff", "ManualStep", "Refresh", "plan_handoff"]

REFRESH_REACH = timedelta(days=7) - timedelta(hours=1)
"""A refresh queues only files staged in the last 7 days; an hour less, so that no file
ages out between the plan and the statement."""
STAMP_SLACK = timedelta(seconds=1)
"""MODIFIED_AFTER sits this much before the oldest file: S3 keeps whole seconds."""
COPY_FILES = 1000
"""Snowflake's limit on the names in one COPY's FILES list."""


@dataclass(frozen=True)
class Refresh:
    """One ``ALTER PIPE … REFRESH`` and the files it hands to the pipe."""

    statement: str
    files: tuple[str, ...]


@dataclass(frozen=True)
class ManualStep:
    """A gap the loader leaves to an operator: the statement to run and what it risks."""

    statement: str
    files: tuple[str, ...]
    risk: str
    checks: tuple[str, ...] = ()
    """Statements to run first: each counts the rows of one file already in the table."""

    def lines(self) -> list[str]:
        """The step as a person reads it: what it risks, the checks, then the statement."""
        return [
            f"left to an operator ({len(self.files)} files): {self.risk}",
            *(f"  check first: {check};" for check in self.checks),
            f"  then run: {self.statement};",
        ]


@dataclass(frozen=True)
class Handoff:
    """What auto-ingest does about files that are not (known to be) loaded."""

    refreshes: list[Refresh] = field(default_factory=list)
    manual: list[ManualStep] = field(default_factory=list)

    @property
    def handed(self) -> list[str]:
        return [key for refresh in self.refreshes for key in refresh.files]


def _folder(path: str) -> str:
    return path.rsplit("/", 1)[0] + "/" if "/" in path else ""


def plan_handoff(
    objects: EventObjects, history: LoadHistory, states: FileStates, files: Sequence[ObjectInfo]
) -> Handoff:
    """Refreshes for ``states``' missing and unknown files within Snowpipe's reach, manual
    steps for the older ones. ``files`` are every data file of the range (what a folder's
    refresh could also queue)."""
    by_key = {info.key: info for info in files}
    newest_reach = history.now - REFRESH_REACH
    handoff = Handoff()
    recent: dict[str, list[ObjectInfo]] = {}
    old_missing, old_unknown = [], []
    for key in states.missing + states.unknown:
        info = by_key[key]
        if info.last_modified is not None and info.last_modified >= newest_reach:
            recent.setdefault(_folder(objects.relative_path(key)), []).append(info)
        elif key in states.missing:
            old_missing.append(key)
        else:
            old_unknown.append(key)
    handoff.refreshes.extend(_refreshes(objects, recent, files, history.loaded - history.loaded_by_pipe))
    pipe = quote_literal(objects.pipe)
    handoff.manual.extend(
        _manual_steps(
            objects,
            old_missing,
            "staged more than 7 days ago (beyond ALTER PIPE REFRESH) and loaded neither by COPY nor by"
            " the pipe within the load history's reach. A COPY loads them once; run it only while"
            f" SELECT SYSTEM$PIPE_STATUS({pipe}) shows pendingFileCount 0: a file the pipe is still"
            " loading would load twice, because the pipe does not know the table's COPY loads.",
            checked=False,
        )
    )
    handoff.manual.extend(
        _manual_steps(
            objects,
            old_unknown,
            "the load history cannot tell whether the pipe loaded these files"
            f" ({_why_unknown(history)}). A COPY does not know the pipe's loads: for a file the pipe"
            " loaded, its rows would appear twice. Run the checks first and leave out of the COPY"
            " every file whose count is not 0 (a file staged more than 64 days ago also needs"
            " LOAD_UNCERTAIN_FILES = TRUE).",
            checked=True,
        )
    )
    return handoff


def _refreshes(
    objects: EventObjects,
    recent: dict[str, list[ObjectInfo]],
    files: Sequence[ObjectInfo],
    copy_only: frozenset[str],
) -> list[Refresh]:
    """One refresh per folder of ``recent`` from its oldest file, unless that would also queue a
    file only a COPY loaded (``copy_only``): then one per file."""
    refreshes = []
    for folder, chosen in sorted(recent.items()):
        after = min(info.last_modified for info in chosen if info.last_modified) - STAMP_SLACK
        in_scope = [
            objects.relative_path(info.key)
            for info in files
            if objects.relative_path(info.key).startswith(folder)
            and info.last_modified is not None
            and info.last_modified >= after
        ]
        if not any(path in copy_only for path in in_scope):
            statement = objects.refresh_pipe(folder, after)
            refreshes.append(Refresh(statement, tuple(info.key for info in chosen)))
            continue
        for info in chosen:  # a COPY loaded a neighbour: the pipe must not see it
            assert info.last_modified is not None
            statement = objects.refresh_pipe(
                objects.relative_path(info.key), info.last_modified - STAMP_SLACK
            )
            refreshes.append(Refresh(statement, (info.key,)))
    return refreshes


def _manual_steps(objects: EventObjects, keys: list[str], risk: str, *, checked: bool) -> list[ManualStep]:
    """One step per COPY's worth of ``keys``; with ``checked``, a row count to run first per file."""
    steps = []
    for start in range(0, len(keys), COPY_FILES):
        batch = tuple(keys[start : start + COPY_FILES])
        statement = objects.copy_statement([objects.relative_path(k) for k in batch])
        checks = tuple(_check(objects, key) for key in batch if parse_key(key) is not None) if checked else ()
        steps.append(ManualStep(statement, batch, risk, checks))
    return steps


def _why_unknown(history: LoadHistory) -> str:
    since = f"{history.reach_start.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    if history.sees_pipe_loads:
        return f"staged before {since}, beyond the history's 14 days"
    return f"read from LOAD_HISTORY, which lists no pipe loads, or staged before {since}"


def _check(objects: EventObjects, key: str) -> str:
    parsed = parse_key(key)
    assert parsed is not None
    return objects.rows_of_file_statement(
        parsed.partition, parsed.first_offset, parsed.last_offset, redriven=parsed.redriven is not None
    )
