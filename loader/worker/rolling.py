"""When a partition's open file rolls: the whole rolling policy, one small rule each.

A partition has at most one open file. It is closed ("rolled") at the first
of these (the README's rolling table, in its order):

- ``rolling.max_records``: :func:`split_at_boundaries` cuts there;
- ``rolling.max_file_bytes``: :func:`over_size`, estimated while the file is open;
- the time partition moving forward: :func:`split_at_boundaries`, which lets a
  late record join the open file within :func:`accepted_timestamps`;
- ``rolling.max_age_s``: :func:`expired`, on the wall clock from the file's first record;
- memory pressure: :func:`roll_for_memory`, the biggest open file while the
  buffered rows exceed the budget.

:class:`~loader.worker.partition.PartitionState` and the
:class:`~loader.worker.worker.StreamWorker` ask these; they decide nothing
themselves. A record's time partition is :func:`loader.store.layout.period_of`,
the same function its file's keys (and ``loader plan``'s example keys) come from.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol, TypeVar

from loader.config.spec import EventSpec
from loader.encode.decode import KafkaRecord
from loader.schema.types import KAFKA_TIMESTAMP_RANGE_MS
from loader.store.layout import period_ms, period_of

__all__ = [
    "ARROW_TO_PARQUET_RATIO",
    "MAX_LATENESS_MS",
    "Segment",
    "accepted_timestamps",
    "expired",
    "over_size",
    "roll_for_memory",
    "split_at_boundaries",
]

ARROW_TO_PARQUET_RATIO = 4
"""About how much smaller a zstd row group is than its Arrow buffers (for the size limit)."""

MAX_LATENESS_MS = 86_400_000
"""How long before the start of the open file's time partition a record may be and still
join that file. An older record ends the file: one record from a clock years ahead opens a
folder of its own, and the records after it do not follow it there."""

Segment = tuple[Sequence[KafkaRecord], int, bool]
"""Consecutive records, the period of the file they go to, and whether that file ends after them."""


def accepted_timestamps(period: int, length_ms: int) -> tuple[int, int]:
    """The Kafka timestamps ``earliest <= t < latest`` an open file of ``period`` takes (periods
    ``length_ms`` long): up to :data:`MAX_LATENESS_MS` before its start, so files do not flap
    around a boundary, and up to its end."""
    return period * length_ms - MAX_LATENESS_MS, (period + 1) * length_ms


def split_at_boundaries(
    spec: EventSpec, open_records: int, open_period: int | None, records: Sequence[KafkaRecord]
) -> list[Segment]:
    """Cut ``records`` where a file must end: at ``max_records`` (counting the
    ``open_records`` already in the open file), where the time partition moves
    forward, and before a record more than :data:`MAX_LATENESS_MS` older than the
    open file's time partition. Returns (segment, period, ends_file) triples.

    A record up to a day late stays in the open file, so files do not flap around a
    boundary. A record without a usable timestamp (outside ``KAFKA_TIMESTAMP_RANGE_MS``:
    a dead letter) never ends a file; a file it opens is in the epoch's folder, which the
    next record with a timestamp leaves."""
    # The loop runs per record (a million a second): only comparisons there. The period and
    # its window are computed once per file, where one starts.
    segments: list[Segment] = []
    max_records = spec.rolling.max_records
    length_ms = period_ms(spec)
    low, high = KAFKA_TIMESTAMP_RANGE_MS
    room = max_records - open_records
    current = open_period
    earliest = latest = 0  # the open file takes timestamps in earliest..latest-1
    if current is not None:
        earliest, latest = accepted_timestamps(current, length_ms)
    start = 0
    for index, record in enumerate(records):
        timestamp = record.timestamp
        if current is None:
            current = period_of(spec, timestamp)
            earliest, latest = accepted_timestamps(current, length_ms)
        elif not earliest <= timestamp < latest and low <= timestamp <= high:
            segments.append((records[start:index], current, True))
            start, room, current = index, max_records, period_of(spec, timestamp)
            earliest, latest = accepted_timestamps(current, length_ms)
        if index - start + 1 >= room:
            segments.append((records[start : index + 1], current, True))
            # The next file takes its first record's time partition, as it would in the next batch.
            start, room, current = index + 1, max_records, None
    if start < len(records):
        assert current is not None
        segments.append((records[start:], current, False))
    return segments


def over_size(spec: EventSpec, file_bytes: int, memory_bytes: int) -> bool:
    """Whether an open file with ``file_bytes`` on disk and ``memory_bytes`` of Arrow buffers
    has reached ``max_file_bytes`` once those buffers are compressed (about)."""
    return file_bytes + memory_bytes // ARROW_TO_PARQUET_RATIO >= spec.rolling.max_file_bytes


def expired(spec: EventSpec, opened_at: float | None, now: float) -> bool:
    """Whether a file opened at ``opened_at`` (None: no open file) is ``max_age_s`` old at ``now``
    (seconds on the worker's clock)."""
    return opened_at is not None and now - opened_at >= spec.rolling.max_age_s


class Buffered(Protocol):
    """A partition as memory pressure sees it."""

    @property
    def memory_bytes(self) -> int:
        """Bytes its open work holds in memory."""

    @property
    def spool(self) -> object | None:
        """Its open file, if any."""


_B = TypeVar("_B", bound=Buffered)


def roll_for_memory(partitions: Collection[_B], budget_bytes: int) -> _B | None:
    """The partition whose open file to roll early: the one holding the most memory, while all
    of them together hold more than ``budget_bytes``; None when they fit, or when the biggest
    has no open file to roll (its memory is a recovery's, which ends on its own)."""
    if sum(p.memory_bytes for p in partitions) <= budget_bytes:
        return None
    biggest = max(partitions, key=lambda p: p.memory_bytes)
    return biggest if biggest.spool is not None else None
