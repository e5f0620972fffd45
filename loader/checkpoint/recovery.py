"""Where a partition resumes when Kafka holds no checkpoint of the loader for it: S3.

The checkpoint is the consumer group's committed offset and the marker in its metadata
(:mod:`loader.checkpoint.marker`). Kafka deletes a group's offsets once the group has been
empty for ``offsets.retention.minutes``; an operator can delete or reset them; a mirrored
topic has none. Reading again from the consumer's reset position would roll other file
boundaries and load every record a second time. But every file's key names its partition
and the offsets it covers, so S3 knows how far each partition got:

- Reading resumes after the last offset any data or dead-letter file of the partition covers.
- Unless the newest range has a dead-letter file and no data file. A roll uploads its dead
  letters first and its data second, so its data may be missing, and its marker went with
  the offsets. That range becomes a pending roll again: it is re-read, and only what S3
  lacks is uploaded. The data file was never in S3, so its row groups need not match
  anything. A range with a data file is complete, since its dead letters went first.

A re-driven data file (``loader dead-letters redrive``) is no position: it holds some of a
dead-letter file's records, and that file counts; were it counted as its range's data, a
roll stopped before its data would never be finished.

A key counts only if it is exactly the key this spec writes for the range it names, and
its offsets are below the partition's end offset: a name claiming more would skip
records never loaded. Any other key is not a position, and is reported.

A committed offset the loader did not write (no position marker: an operator's
``--reset-offsets``, another tool, or a worker from before the marker) is checked against
S3 too. Behind what S3 holds, it would re-read and duplicate, so S3 wins. At or past it,
the offset is taken: an operator may skip records on purpose.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from loader.checkpoint.marker import PendingFile
from loader.config.spec import EventSpec
from loader.errors import clip
from loader.store.layout import FileRange, data_key, dead_letter_key, parse_key, period_ms
from loader.store.listing import partition_keys
from loader.store.s3 import S3Store

__all__ = ["FromS3", "Resume", "positions_in_s3", "resume"]


@dataclass(frozen=True)
class FromS3:
    """How far S3 says a partition got."""

    next_offset: int
    """Where reading resumes: after the newest range, or at the first offset of ``pending``."""
    covered_to: int
    """The last offset a file of the partition covers."""
    pending: PendingFile | None
    """The newest range, to finish first when its data file may be missing."""
    newest: str
    """The key of the newest file (for the log)."""
    ignored: tuple[str, ...] = ()
    """Keys of the partition that do not count, each with why (for the log)."""


@dataclass(frozen=True)
class Resume:
    """Where a partition without a checkpoint of the loader resumes, and why."""

    next_offset: int | None
    """None: the consumer's reset position."""
    pending: PendingFile | None
    source: Literal["s3", "committed", "reset"]
    reason: str


def positions_in_s3(
    store: S3Store,
    spec: EventSpec,
    end_offsets: Mapping[int, int],
    row_group_records: int,
) -> dict[int, FromS3 | None]:
    """For each partition of ``end_offsets`` (partition -> its end offset): what its files in
    S3 say, or None if it has none that count. One listing for all of them."""
    keys = partition_keys(store, spec, set(end_offsets))
    return {
        partition: position_in_s3(spec, partition, keys.get(partition, []), end, row_group_records)
        for partition, end in end_offsets.items()
    }


def position_in_s3(
    spec: EventSpec, partition: int, keys: Iterable[str], end_offset: int, row_group_records: int
) -> FromS3 | None:
    """What the files named ``keys`` say about ``partition`` (see the module docstring)."""
    ranges: dict[FileRange, set[str]] = {}
    ignored: list[str] = []
    for key in keys:
        parsed = parse_key(key)
        if parsed is not None and parsed.redriven is not None:
            continue  # re-driven dead letters: the dead-letter file of their range is the position
        counted = _covered(spec, partition, key, end_offset)
        if isinstance(counted, str):
            ignored.append(f"{clip(key, 300)}: {counted}")
        else:
            covered, kind = counted
            ranges.setdefault(covered, set()).add(kind)
    if not ranges:
        return None
    covered_to = max(r.last_offset for r in ranges)
    newest = [r for r in ranges if r.last_offset == covered_to]
    complete = [r for r in newest if "data" in ranges[r]]
    if complete:
        return FromS3(covered_to + 1, covered_to, None, data_key(spec, complete[0]), tuple(ignored))
    # Dead letters only: the roll may have stopped before its data. The shortest such range
    # re-reads the least (two ranges ending together are no roll of this spec's anyway).
    last = max(newest, key=lambda r: r.first_offset)
    pending = PendingFile(
        first=last.first_offset,
        last=last.last_offset,
        period=last.period,
        rg=row_group_records,
        key=data_key(spec, last),
        dlq=dead_letter_key(spec, last),
    )
    return FromS3(last.first_offset, covered_to, pending, pending.dlq, tuple(ignored))


def _covered(spec: EventSpec, partition: int, key: str, end_offset: int) -> tuple[FileRange, str] | str:
    """The range ``key`` covers and its kind (``data`` or ``dead-letter``), or why it does
    not count."""
    parsed = parse_key(key)
    if parsed is None or parsed.topic != spec.kafka.topic or parsed.partition != partition:
        return "not a file name of this partition"
    period = int(parsed.time_partition.timestamp() * 1000) // period_ms(spec)
    covered = FileRange(parsed.topic, partition, parsed.first_offset, parsed.last_offset, period)
    written = data_key(spec, covered) if parsed.kind == "data" else dead_letter_key(spec, covered)
    if key != written or parsed.first_offset > parsed.last_offset:
        return "not a name this spec writes"
    if parsed.last_offset >= end_offset:
        return f"it covers offsets the partition does not have (its end offset is {end_offset})"
    return covered, parsed.kind


def resume(committed: int | None, found: FromS3 | None) -> Resume:
    """Where a partition resumes from its committed offset that is not the loader's (None if
    there is none) and what S3 says (see the module docstring)."""
    if found is None:
        if committed is None:
            return Resume(None, None, "reset", "no committed offset and no file of the partition in S3")
        return Resume(committed, None, "committed", "no file of the partition in S3")
    if committed is None:
        return Resume(found.next_offset, found.pending, "s3", "no committed offset")
    if committed > found.covered_to:
        return Resume(committed, None, "committed", f"past the last offset in S3 ({found.covered_to})")
    return Resume(
        found.next_offset,
        found.pending,
        "s3",
        f"the committed offset {committed} is not the loader's and behind S3 ({found.covered_to})",
    )
