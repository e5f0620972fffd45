"""One assigned partition: where its records go, and when its files end.

Runs in the worker's processing thread. Records are cut where the rolling
policy (:mod:`loader.worker.rolling`) ends a file, decoded and appended to
the open :class:`~loader.worker.spool.SpoolFile`.
A partition that was assigned with a pending roll first rebuilds exactly
that file (same range, same row groups) before anything else.

For the metrics it also counts the value bytes it takes, times each file's
flush and keeps each file's newest ``_CREATED_AT``: once per batch, with one
Arrow reduction, never per record.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
from aiokafka import TopicPartition

from loader.checkpoint.committer import Generation
from loader.checkpoint.marker import PendingFile
from loader.config.spec import EventSpec
from loader.encode.decode import DecodedBatch, Decoder, KafkaRecord
from loader.encode.match import RecordMatcher
from loader.schema.types import CREATED_AT
from loader.store.layout import FileRange, data_key, dead_letter_key
from loader.worker.rolling import over_size, split_at_boundaries
from loader.worker.spool import ClosedFile, SpoolFile
from loader.worker.stages import StageTimes

__all__ = ["PartitionState", "Roll", "pending_for"]


@dataclass(frozen=True)
class Roll:
    """A closed file and the record that makes its upload recoverable."""

    tp: TopicPartition
    closed: ClosedFile
    pending: PendingFile
    recovery: bool
    """True when finishing a roll recorded by an earlier owner (already recorded)."""
    generation: Generation
    """The group generation the partition was assigned under: its commits are fenced by it."""
    flush_s: float
    """How long finishing the local file took."""
    newest_created_at_us: int | None
    """The newest ``_CREATED_AT`` among the file's rows (microseconds since the epoch), if any."""


def pending_for(spec: EventSpec, covered: FileRange, row_group_records: int) -> PendingFile:
    return PendingFile(
        first=covered.first_offset,
        last=covered.last_offset,
        period=covered.period,
        rg=row_group_records,
        key=data_key(spec, covered),
        dlq=dead_letter_key(spec, covered),
    )


class PartitionState:
    """Routing of one partition's records into files (see the module docstring)."""

    def __init__(
        self,
        tp: TopicPartition,
        spec: EventSpec,
        decoder: Decoder,
        *,
        next_offset: int | None,
        pending: PendingFile | None,
        generation: Generation,
        spool_dir: Path | None,
        row_group_records: Callable[[], int],
        matcher: RecordMatcher | None = None,
        stages: StageTimes | None = None,
    ) -> None:
        self.tp = tp
        self.spec = spec
        self.generation = generation
        self.records_taken = 0
        """Records this owner processed (a refetched duplicate is not counted twice)."""
        self.bytes_taken = 0
        """Bytes of those records' values."""
        self.unknown_fields: Counter[str] = Counter()
        """Rows decoded with each unknown payload field, not yet counted in metrics."""
        self.next_offset = next_offset
        self.recovering = pending
        self.spool: SpoolFile | None = None
        self.opened_at: float | None = None
        self._decoder = decoder
        self._matcher = matcher
        self._spool_dir = spool_dir
        self._row_group_records = row_group_records
        self._stages = stages or StageTimes()
        self._recovery_spool: SpoolFile | None = None
        self._newest: dict[int, int] = {}
        """Newest ``_CREATED_AT`` (us) per open spool, by ``id`` of the spool."""

    @property
    def memory_bytes(self) -> int:
        return sum(s.memory_bytes for s in (self.spool, self._recovery_spool) if s is not None)

    def ingest(self, records: Sequence[KafkaRecord], now: float) -> list[Roll]:
        """Take a fetched batch (offset order) and return the files it completed."""
        if self.next_offset is not None:
            # Drop what this owner already processed (a batch fetched before a seek).
            skip = 0
            while skip < len(records) and records[skip].offset < self.next_offset:
                skip += 1
            records = records[skip:]
        if not records:
            return []
        self.next_offset = records[-1].offset + 1
        self.records_taken += len(records)
        rolls: list[Roll] = []
        if self.recovering is not None:
            records = self._recover(records, rolls)
        if records:
            self._route(records, now, rolls)
        return rolls

    def _recover(self, records: Sequence[KafkaRecord], rolls: list[Roll]) -> Sequence[KafkaRecord]:
        pending = self.recovering
        assert pending is not None
        inside = 0
        while inside < len(records) and records[inside].offset <= pending.last:
            inside += 1
        if inside:
            if self._recovery_spool is None:
                self._recovery_spool = self._open(pending.first, pending.period, pending.rg)
            self._append(self._recovery_spool, records[:inside])
        # Complete once the batch reaches the recorded last offset or goes past it.
        if inside < len(records) or records[-1].offset >= pending.last:
            spool = self._recovery_spool or self._open(pending.first, pending.period, pending.rg)
            spool.last_offset = pending.last
            rolls.append(self._roll(spool, pending))
            self._recovery_spool = None
            self.recovering = None
        return records[inside:]

    def _route(self, records: Sequence[KafkaRecord], now: float, rolls: list[Roll]) -> None:
        open_records = self.spool.records if self.spool else 0
        open_period = self.spool.period if self.spool else None
        for segment, period, ends_file in split_at_boundaries(self.spec, open_records, open_period, records):
            if segment:
                if self.spool is None:
                    self.spool = self._open(segment[0].offset, period, self._row_group_records())
                    self.opened_at = now
                self._append(self.spool, segment)
            spool = self.spool
            if ends_file or (
                spool is not None and over_size(self.spec, spool.file_bytes, spool.memory_bytes)
            ):
                self.close_into(rolls)

    def _append(self, spool: SpoolFile, segment: Sequence[KafkaRecord]) -> None:
        raw_bytes = spool.raw_bytes
        # On a shared topic, the other specs' records stay in the file's range (its offsets
        # cover every record read) but are neither decoded nor dead-lettered: only counted.
        matched = self._matcher.split(segment) if self._matcher is not None else None
        taken = segment if matched is None else matched.taken
        if taken:
            with self._stages.timed("decode"):
                decoded = self._decoder.decode(taken)
        else:
            decoded = DecodedBatch(self._decoder.file_schema.empty_table(), [])
        spool.append(segment, decoded, None if matched is None else matched.skipped)
        self.unknown_fields.update(decoded.unknown_fields)
        self.bytes_taken += spool.raw_bytes - raw_bytes
        if decoded.table.num_rows:
            newest = pc.max(decoded.table.column(CREATED_AT)).value
            if newest is not None:
                self._newest[id(spool)] = max(newest, self._newest.get(id(spool), newest))

    def _roll(self, spool: SpoolFile, pending: PendingFile | None = None) -> Roll:
        """Close ``spool`` into a roll: a recovery of ``pending``, or a new file."""
        started = time.perf_counter()
        closed = spool.close()
        flush_s = time.perf_counter() - started
        return Roll(
            self.tp,
            closed,
            pending or pending_for(self.spec, closed.covered, closed.row_group_records),
            recovery=pending is not None,
            generation=self.generation,
            flush_s=flush_s,
            newest_created_at_us=self._newest.pop(id(spool), None),
        )

    def _open(self, first_offset: int, period: int, row_group_records: int) -> SpoolFile:
        return SpoolFile(
            topic=self.tp.topic,
            partition=self.tp.partition,
            first_offset=first_offset,
            period=period,
            schema=self._decoder.file_schema,
            row_group_records=row_group_records,
            spool_dir=self._spool_dir,
            stages=self._stages,
        )

    def close_into(self, rolls: list[Roll]) -> None:
        """End the open file now (full, expired, memory pressure or shutdown)."""
        spool, self.spool, self.opened_at = self.spool, None, None
        if spool is None or spool.empty:
            if spool is not None:
                self._newest.pop(id(spool), None)
                spool.discard()
            return
        rolls.append(self._roll(spool))

    def discard(self) -> None:
        """Forget unrecorded work (on revocation): the next owner re-reads it."""
        for spool in (self.spool, self._recovery_spool):
            if spool is not None:
                spool.discard()
        self.spool = self._recovery_spool = None
        self.opened_at = None
        self._newest.clear()
