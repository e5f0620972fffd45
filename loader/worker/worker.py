"""The stream worker of one event type: Kafka → Parquet files in S3 → committed offsets.

Loop: fetch a batch per partition with ``getmany``, cut it where files must
end, decode each piece into Arrow, and roll full or expired buffers into
files. Rolls run in a thread so the event loop keeps fetching and
heartbeating. An offset is committed only after the file that covers it is
in S3; a crash before that re-reads the range and rewrites the same key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalGenerationError, RebalanceInProgressError
from aiokafka.errors import KafkaError as AioKafkaError
from aiokafka.structs import OffsetAndMetadata

from loader.config.settings import Settings
from loader.config.spec import EventSpec
from loader.consume.kafka import make_consumer
from loader.encode.dead_letter import dead_letter_table
from loader.encode.decode import BatchDecoder
from loader.schema.avro import load_avro_schema
from loader.store.s3 import S3Store
from loader.worker.buffer import PartitionBuffer, split_at_boundaries
from loader.worker.files import FilePlan, WrittenFiles, write_files

__all__ = ["StreamWorker", "WorkerStats"]

log = structlog.get_logger("loader.worker")


@dataclass
class WorkerStats:
    """Counts since start, for logs, the demo summary and tests."""

    records_read: int = 0
    rows_written: int = 0
    dead_lettered: int = 0
    files_written: int = 0
    bytes_written: int = 0


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: StreamWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.worker.forget(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info(
            "partitions_assigned",
            event_type=self.worker.spec.name,
            partitions=sorted(tp.partition for tp in assigned),
        )


class StreamWorker:
    """Consumes one event type's topic and writes its files to S3."""

    def __init__(
        self,
        spec: EventSpec,
        settings: Settings,
        *,
        store: S3Store | None = None,
        clock: Callable[[], float] = time.monotonic,
        spool_dir: Path | None = None,
        fetch_max_records: int = 20_000,
    ) -> None:
        if spec.schema_path is None:
            raise NotImplementedError("raw (schema-less) events are not supported yet")
        self.spec = spec
        self.settings = settings
        self.store = store or S3Store(settings.aws, spec.s3.bucket)
        self.decoder = BatchDecoder(load_avro_schema(spec.schema_path))
        self.stats = WorkerStats()
        self._clock = clock
        self._spool_dir = spool_dir
        self._fetch_max_records = fetch_max_records
        self._buffers: dict[TopicPartition, PartitionBuffer] = {}
        self._stopping = asyncio.Event()
        self._log = log.bind(event_type=spec.name, topic=spec.kafka.topic)

    def stop(self) -> None:
        """Ask the worker to finish: stop fetching, roll what is buffered, commit, exit."""
        self._stopping.set()

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Drop buffers of partitions we no longer own; their new owner re-reads them."""
        for tp in partitions:
            buffer = self._buffers.pop(tp, None)
            if buffer is not None and not buffer.empty:
                self._log.info("buffer_dropped_on_revoke", partition=tp.partition, records=buffer.records)

    async def run(self) -> WorkerStats:
        """Run until :meth:`stop` is called."""
        consumer = make_consumer(self.spec, self.settings.kafka)
        consumer.subscribe([self.spec.kafka.topic], listener=_Rebalance(self))
        await consumer.start()
        self._log.info("worker_started", group=self.spec.consumer_group)
        try:
            while not self._stopping.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=self._fetch_max_records)
                for tp, records in batches.items():
                    await self._ingest(consumer, tp, records)
                await self._roll_expired(consumer)
            await self._roll_all(consumer)
        finally:
            await consumer.stop()
            self._log.info("worker_stopped", **vars(self.stats))
        return self.stats

    async def _ingest(self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[object]) -> None:
        buffer = self._buffers.setdefault(tp, PartitionBuffer(tp.topic, tp.partition))
        self.stats.records_read += len(records)
        for segment, bucket, ends_file in split_at_boundaries(self.spec, buffer, records):  # type: ignore[arg-type]
            if segment:
                decoded = self.decoder.decode(segment)
                buffer.add(segment, decoded.table, decoded.rejected, bucket, self._clock())
            if ends_file or buffer.full(self.spec):
                await self._roll(consumer, tp, buffer)

    async def _roll_expired(self, consumer: AIOKafkaConsumer) -> None:
        now = self._clock()
        for tp, buffer in list(self._buffers.items()):
            if buffer.expired(self.spec, now):
                await self._roll(consumer, tp, buffer)

    async def _roll_all(self, consumer: AIOKafkaConsumer) -> None:
        for tp, buffer in list(self._buffers.items()):
            await self._roll(consumer, tp, buffer)

    async def _roll(self, consumer: AIOKafkaConsumer, tp: TopicPartition, buffer: PartitionBuffer) -> None:
        if buffer.empty:
            return
        plan = FilePlan.for_range(self.spec, buffer.covered())
        table = pa.concat_tables(buffer.tables) if buffer.tables else self.decoder.file_schema.empty_table()
        rejected = dead_letter_table(buffer.rejected)
        buffer.reset()
        written = await asyncio.to_thread(
            write_files, self.spec, self.store, plan, table, rejected, spool_dir=self._spool_dir
        )
        await self._commit(consumer, tp, written)

    async def _commit(self, consumer: AIOKafkaConsumer, tp: TopicPartition, written: WrittenFiles) -> None:
        next_offset = written.plan.covered.last_offset + 1
        try:
            await consumer.commit({tp: OffsetAndMetadata(next_offset, "")})
        except (CommitFailedError, IllegalGenerationError, RebalanceInProgressError) as exc:
            # We lost the partition: the new owner re-reads the range and rewrites the same key.
            self._log.warning(
                "commit_fenced", partition=tp.partition, next_offset=next_offset, error=str(exc)
            )
            return
        except AioKafkaError as exc:
            self._log.warning(
                "commit_failed", partition=tp.partition, next_offset=next_offset, error=str(exc)
            )
            return
        self.stats.rows_written += written.rows
        self.stats.dead_lettered += written.dead_letters
        self.stats.files_written += 1
        self.stats.bytes_written += written.data_bytes
        self._log.info(
            "file_committed",
            key=written.plan.data_key,
            partition=tp.partition,
            first_offset=written.plan.covered.first_offset,
            last_offset=written.plan.covered.last_offset,
            rows=written.rows,
            dead_letters=written.dead_letters,
            bytes=written.data_bytes,
        )
