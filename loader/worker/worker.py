"""The stream worker of one event type: Kafka → Parquet files in S3, exactly once.

The event loop fetches with aiokafka's ``getmany`` and commits; a processing
thread decodes each batch and writes row groups to local spool files. While
the thread works on one batch, the loop fetches the next (aiokafka unpacks
records under the GIL, Arrow's JSON reader and Parquet writer release it). A
batch's records go only to the partition states it was fetched for: one
revoked and assigned again meanwhile is re-read from its new position. Each finished file
becomes a :class:`~loader.worker.partition.Roll`. Rolls of one partition run
in order, as a chain of tasks, each following the checkpoint protocol of
:mod:`loader.checkpoint`: record the roll in the group (fenced), upload,
commit past it. A partition whose chain falls behind is paused
(backpressure). When files roll is :mod:`loader.worker.rolling`'s decision:
the worker asks it about age (on its clock) and memory pressure (over all its
partitions), and the partitions ask it about the rest.

On assignment, the worker first reads each partition's committed offset and
pending roll and finishes that roll (or sees it is in S3) before going on. A
partition without the loader's checkpoint resumes where its files in S3 end
(:mod:`loader.checkpoint.recovery`), and that position is committed.
On revocation, it finishes or abandons in-flight rolls within a deadline and
drops unrecorded work, which the next owner re-reads.

Values in Confluent's wire format name their writer schema by registry id. Before a
batch is decoded, the registry client looks up every id in it
(:meth:`~loader.schema.registry_client.RegistryClient.prefetch`), so decoding never
waits on the registry. While the registry is down, the batch is not taken: its
partitions are rewound to its first offsets and every partition is paused, the worker
retries the lookup with capped backoff (it keeps polling, so it stays in the group),
counts each failure (``loader_errors_total``, component ``registry``) and reports the
registry down on ``/readyz``. Nothing is dead-lettered for it and no offset skipped.

Metrics (:mod:`loader.metrics`) are updated once per fetched batch (records
and bytes consumed, buffer memory, lag per partition) and once per committed
file (rows, dead letters, bytes, sizes, durations, newest ``_CREATED_AT``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from loader.checkpoint.committer import Committer, Generation
from loader.checkpoint.marker import PendingFile
from loader.checkpoint.recovery import positions_in_s3, resume
from loader.config.settings import Settings
from loader.config.spec import EventSpec
from loader.consume.errors import kafka_errors
from loader.consume.kafka import client_kwargs, make_consumer
from loader.encode import decoder_for
from loader.encode.avro_registry import MAGIC, WIRE_HEADER_BYTES
from loader.encode.match import matcher_for
from loader.errors import ConfigError, FencedError, KafkaError, RegistryError, StorageError
from loader.metrics import EventMetrics
from loader.retry import Backoff
from loader.schema.registry_client import RegistryClient, registry_for
from loader.store.s3 import S3Store
from loader.worker.partition import PartitionState, Roll
from loader.worker.rolling import expired, roll_for_memory
from loader.worker.stages import StageTimes

__all__ = ["StreamWorker", "WorkerStats"]

log = structlog.get_logger("loader.worker")

_T = TypeVar("_T")

MIB = 1024 * 1024
MAX_QUEUED_ROLLS = 2
"""A partition with this many files waiting for S3 is paused until one lands."""
MIN_ROW_GROUP_RECORDS = 1_000
REGISTRY = "schema_registry"
"""How ``/readyz`` names the schema registry when it is down."""


@dataclass
class WorkerStats:
    """Counts since start, for logs, the demo summary and tests."""

    records_read: int = 0
    rows_written: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    """Records of a shared topic that are other specs' (see ``kafka.match``)."""
    files_written: int = 0
    bytes_written: int = 0
    rolls_fenced: int = 0
    recoveries: int = 0
    upload_retries: int = 0
    early_rolls: int = 0
    registry_retries: int = 0


@dataclass
class _RegistryWait:
    """Writer schemas that fetched batches need while the registry cannot give them."""

    schema_ids: set[int]
    reason: str
    backoff: Backoff
    retry_at: float
    rewound: dict[TopicPartition, tuple[PartitionState, int]] = field(default_factory=dict)
    """Where each partition was sought back to, and for which of its states: a later batch,
    fetched before that seek, must not move it forward again (its records in between would
    never be taken)."""


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: StreamWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.worker.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.worker.on_assigned(set(assigned))


class StreamWorker:
    """Consumes one event type's topic and writes its files to S3 (see the module docstring)."""

    def __init__(
        self,
        spec: EventSpec,
        settings: Settings,
        *,
        store: S3Store | None = None,
        clock: Callable[[], float] = time.monotonic,
        spool_dir: Path | None = None,
        fetch_max_records: int = 5_000,
        shutdown_timeout_s: float = 30.0,
        revoke_timeout_s: float | None = None,
        memory_budget_mb: int | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.metrics = EventMetrics(spec.name)
        self.metrics.rolling_max_age.set(spec.rolling.max_age_s)  # the freshness alerts' bound
        self.store = store or S3Store(settings.aws, spec.s3.bucket, metrics=self.metrics)
        # Confluent wire-format values name their writer schema by id: the registry gives it.
        self._registry: RegistryClient | None = registry_for(spec, settings.schema_registry)
        self._registry_wait: _RegistryWait | None = None
        self.decoder = decoder_for(spec, self._registry)
        self._matcher = matcher_for(spec)
        self.stats = WorkerStats()
        self.stages = StageTimes(self.metrics)
        self.ready = asyncio.Event()
        self.budget_bytes = (memory_budget_mb or spec.deployment.memory_budget_mb) * MIB
        self.metrics.buffer_budget.set(self.budget_bytes)
        self._clock = clock
        self._spool_dir = spool_dir
        self._fetch_max_records = fetch_max_records
        # How long a fetch waits for records: the loop's pace when idle (expired files roll).
        self._fetch_timeout_ms = 100
        self.shutdown_timeout_s = shutdown_timeout_s
        # Finishing in-flight rolls on revocation must not outlast the group session: a member
        # that stops heartbeating is evicted (and its rolls fenced) anyway.
        session_s = settings.kafka.session_timeout_ms / 1000
        self._revoke_timeout_s = revoke_timeout_s if revoke_timeout_s is not None else session_s / 2
        # Decoding and S3 get their own threads: uploads stuck in retries during an S3 outage
        # must never delay processing, or the revocation that waits for it.
        self._processing_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="process")
        self._io_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="s3")
        self._partitions: dict[TopicPartition, PartitionState] = {}
        self._chains: dict[TopicPartition, asyncio.Task[None]] = {}
        self._queued: Counter[TopicPartition] = Counter()
        self._fenced: set[TopicPartition] = set()
        self._paused: set[TopicPartition] = set()
        self._fatal: BaseException | None = None
        self._avg_row_bytes = 600.0
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._processing: asyncio.Task[None] | None = None
        """The batch in the processing thread, if any (its errors surface in the loop)."""
        self._committer: Committer | None = None
        self._log = log.bind(event_type=spec.name, topic=spec.kafka.topic)

    # -- lifecycle -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop fetching, roll what is buffered, commit what is durable, exit (within the deadline)."""
        self._stopping.set()

    async def run(self) -> WorkerStats:
        """Run until :meth:`stop` is called; raises on a terminal error (nothing is lost)."""
        with self.stages.counting_gc():
            return await self._run()

    async def _run(self) -> WorkerStats:
        admin = AIOKafkaAdminClient(**client_kwargs(self.spec, self.settings.kafka))
        consumer: AIOKafkaConsumer | None = None
        try:
            await admin.start()
            await self._wait_until_reachable(admin)
            # aiokafka holds a fetch response plus one buffer per partition: size both from
            # the budget (an eighth for the response, as much again over the partitions).
            fetch_bytes = max(4 * MIB, min(32 * MIB, self.budget_bytes // 8))
            consumer = make_consumer(
                self.spec,
                self.settings.kafka,
                fetch_max_bytes=fetch_bytes,
                max_partition_fetch_bytes=max(256 * 1024, fetch_bytes // self.spec.kafka.partitions),
            )
            self._consumer = consumer
            self._committer = Committer(consumer, admin, self.spec.consumer_group, metrics=self.metrics)
            # Start, then subscribe: start() with topics would wait for the first assignment.
            await consumer.start()
            consumer.subscribe([self.spec.kafka.topic], listener=_Rebalance(self))
            self._log.info(
                "worker_started",
                group=self.spec.consumer_group,
                budget_mb=self.budget_bytes // MIB,
                arrow_allocator=pa.default_memory_pool().backend_name,
            )
            while not self._stopping.is_set():
                self._raise_if_fatal()
                self.stages.add_collections()
                # Before the first assignment, getmany waits for the group: that is joining.
                with self.stages.timed("fetch" if self._partitions else "join"):
                    batches = await self._fetch(consumer)
                if batches:
                    await self._hand_over(batches)
                self._measure_lag(consumer)
                await self._roll_expired()
                await self._retry_registry()
                self._apply_backpressure()
            await self._processed()
            await self._drain()
            self._raise_if_fatal()
        finally:
            if self._processing is not None:
                self._processing.cancel()
            for task in self._chains.values():
                task.cancel()
            if consumer is not None:
                await consumer.stop()
            await admin.close()
            for state in self._partitions.values():
                state.discard()
            self._processing_pool.shutdown(wait=True)
            # Uploads still retrying belong to cancelled rolls: their next owner redoes them.
            self._io_pool.shutdown(wait=False, cancel_futures=True)
            if self._registry is not None:
                self._registry.close()
            self._log.info("worker_stopped", **vars(self.stats), stage_seconds=self.stages.snapshot())
        return self.stats

    def log_progress(self) -> None:
        """Log the counts and the state of the partitions (called by a timer)."""
        self._log.info(
            "worker_progress",
            **vars(self.stats),
            partitions=self.assigned_partitions(),
            paused=sorted(tp.partition for tp in self._paused),
            rolls_in_flight=sum(self._queued.values()),
            buffered_mb=round(self._buffered_bytes() / MIB, 1),
        )

    def assigned_partitions(self) -> list[int]:
        return sorted(tp.partition for tp in self._partitions)

    def down(self) -> dict[str, str]:
        """What the worker is waiting for, and why: the schema registry while a batch's writer
        schemas cannot be looked up (``/readyz`` names it)."""
        wait = self._registry_wait
        return {} if wait is None else {REGISTRY: wait.reason}

    async def _wait_until_reachable(self, admin: AIOKafkaAdminClient) -> None:
        """Retry the readiness preconditions while Kafka or S3 fail transiently (the worker
        stays alive and not ready); a missing topic or bucket is a configuration error."""
        backoff = Backoff()
        while not self._stopping.is_set():
            try:
                await self._check_reachable(admin)
            except (KafkaError, StorageError) as exc:
                if not exc.transient:
                    raise
                self._log.warning(
                    "waiting_for_dependencies", error=str(exc), delay_s=round(backoff.next_s, 2)
                )
                await backoff.wait()
            else:
                return

    async def _check_reachable(self, admin: AIOKafkaAdminClient) -> None:
        """Readiness preconditions: the topic's metadata and the bucket answer."""
        with kafka_errors("cannot read topic metadata", metrics=self.metrics):
            topics = await admin.list_topics()
        if self.spec.kafka.topic not in topics:
            raise ConfigError(
                f"topic {self.spec.kafka.topic!r} does not exist on the {self.spec.kafka.cluster!r} cluster: "
                "create it (or fix kafka.topic in the spec)"
            )
        if not await self._in_io(self.store.can_list, f"{self.spec.s3.prefix}/"):
            raise ConfigError(f"bucket {self.spec.s3.bucket!r} does not exist: create it or fix s3.bucket")

    async def _in_processing(self, call: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._processing_pool, call, *args)

    async def _in_io(self, call: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._io_pool, call, *args)

    def _raise_if_fatal(self) -> None:
        if self._fatal is not None:
            raise self._fatal

    # -- processing (thread) ---------------------------------------------------------------------

    async def _processed(self) -> None:
        """Wait for the batch in the processing thread (raising what it raised)."""
        processing, self._processing = self._processing, None
        if processing is not None:
            await processing

    async def _fetch(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[Any]]:
        """The next batch, empty when no record came within the fetch timeout. A :meth:`stop`
        ends the wait at once, so that a SIGTERM drains now, not after the wait. ``getmany``
        only ever waits before it takes records: cancelled there, it has taken none."""
        fetch = asyncio.ensure_future(
            consumer.getmany(timeout_ms=self._fetch_timeout_ms, max_records=self._fetch_max_records)
        )
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            done, _ = await asyncio.wait((fetch, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in (fetch, stopping):
                if not waiting.done():
                    waiting.cancel()
        return fetch.result() if fetch in done else {}

    async def _hand_over(self, batches: dict[TopicPartition, list[Any]]) -> None:
        """Give a fetched batch to the processing thread once it is done with the previous one:
        one batch in the thread at a time, while the loop fetches the next.

        Returns when the thread has the batch (with a schema registry: when a lookup that is
        not in its cache has started). A task only created would start at the loop's next
        wait, and the next ``getmany`` unpacks its records without waiting: the thread sat
        idle for the length of that unpacking, a third of its time in the benchmark."""
        # No await since getmany returned: these are the states it fetched for.
        owners = {tp: self._partitions.get(tp) for tp in batches}
        await self._processed()
        self._processing = asyncio.create_task(self._process_batches(batches, owners))
        await asyncio.sleep(0)  # the task runs up to its first wait: the thread's answer

    async def _process_batches(
        self,
        batches: dict[TopicPartition, list[Any]],
        owners: dict[TopicPartition, PartitionState | None] | None = None,
    ) -> None:
        """Decode and spool a fetched batch in the processing thread, then schedule the rolls
        it completed. ``owners`` are the partitions' states when it was fetched (default: now):
        a partition revoked meanwhile, even if assigned again, has a new state positioned by
        its recovery, and the batch's records of it are dropped (they are fetched again)."""
        if owners is None:
            owners = {tp: self._partitions.get(tp) for tp in batches}
        if not await self._writer_schemas_known(batches, owners):
            return
        now = self._clock()
        async with self._lock:
            current = {
                tp: records
                for tp, records in batches.items()
                if owners[tp] is not None and self._partitions.get(tp) is owners[tp]
            }
            rolls = await self._in_processing(self._process, current, now)
        for roll in rolls:
            self._schedule(roll)

    async def _writer_schemas_known(
        self,
        batches: dict[TopicPartition, list[Any]],
        states: dict[TopicPartition, PartitionState | None],
    ) -> bool:
        """Look up the writer schemas of the batch's wire-format values before decoding it. While
        the registry cannot answer, the batch is not taken (False): its partitions are rewound
        to its first offsets, to be fetched again once the registry is back. A partition is
        only ever rewound, never moved forward: batches fetched after one that was not taken
        (the loop fetches while the thread processes) begin past it."""
        registry = self._registry
        if registry is None:
            return True
        ids = _writer_schema_ids(batches)
        if self._registry_wait is None:
            if registry.prefetch_cached(ids):
                return True  # no request: no thread, so the batch reaches the processing thread now
            try:
                await asyncio.to_thread(registry.prefetch, ids)
            except RegistryError as exc:
                if not exc.transient:
                    raise
                self._registry_failed(ids, exc)
            else:
                return True
        else:
            self._registry_wait.schema_ids |= ids  # fetched by a partition just assigned
        consumer = self._consumer
        assert consumer is not None
        assigned = consumer.assignment()
        wait = self._registry_wait
        assert wait is not None
        for tp, records in batches.items():
            # A partition revoked (or assigned again) meanwhile was positioned by its recovery.
            state = states[tp]
            if records and state is not None and self._partitions.get(tp) is state and tp in assigned:
                first = records[0].offset
                rewound_state, rewound_to = wait.rewound.get(tp, (state, first + 1))
                if rewound_state is not state or first < rewound_to:
                    consumer.seek(tp, first)
                    wait.rewound[tp] = (state, first)
        return False

    def _registry_failed(self, ids: set[int], exc: RegistryError) -> None:
        """Count a failed lookup and schedule the next (capped exponential backoff)."""
        self.metrics.error("registry", type(exc).__name__)
        self.stats.registry_retries += 1
        wait = self._registry_wait
        if wait is None:
            wait = self._registry_wait = _RegistryWait(set(), str(exc), Backoff(jitter=True), 0.0)
        wait.schema_ids |= ids
        wait.reason = str(exc)
        delay = wait.backoff.take()
        wait.retry_at = time.monotonic() + delay
        self._log.warning(
            "schema_registry_retry", error=str(exc), schema_ids=sorted(ids)[:10], delay_s=round(delay, 2)
        )

    async def _retry_registry(self) -> None:
        """While the registry is down: when the backoff allows, look up the awaited writer
        schemas again; once they come, consumption resumes (every partition is paused meanwhile)."""
        wait = self._registry_wait
        if wait is None or time.monotonic() < wait.retry_at:
            return
        assert self._registry is not None
        try:
            await asyncio.to_thread(self._registry.prefetch, wait.schema_ids)
        except RegistryError as exc:
            if not exc.transient:
                raise
            self._registry_failed(set(), exc)
            return
        self._registry_wait = None
        self._log.info("schema_registry_back", schema_ids=sorted(wait.schema_ids)[:10])

    def _process(self, batches: dict[TopicPartition, list[Any]], now: float) -> list[Roll]:
        rolls: list[Roll] = []
        taken = taken_bytes = 0
        for tp, records in batches.items():
            state = self._partitions.get(tp)
            if state is None or tp in self._fenced:
                continue  # revoked meanwhile, or waiting for the rebalance that follows a fence
            records_before, bytes_before = state.records_taken, state.bytes_taken
            rolls += state.ingest(records, now)
            if state.unknown_fields:
                self.metrics.unknown_fields(state.unknown_fields)
                state.unknown_fields.clear()
            taken += state.records_taken - records_before
            taken_bytes += state.bytes_taken - bytes_before
        self.stats.records_read += taken
        self.metrics.records_consumed.inc(taken)
        self.metrics.bytes_consumed.inc(taken_bytes)
        self._learn_row_size()
        self._relieve_memory(rolls)
        self.metrics.buffer_memory.set(self._buffered_bytes())
        return rolls

    def _buffered_bytes(self) -> int:
        return sum(s.memory_bytes for s in self._partitions.values())

    def _measure_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Per partition: the highwater of the last fetch minus the next offset to take."""
        # Only what the consumer holds now: highwater() refuses a partition it no longer has.
        for tp in self._partitions.keys() & consumer.assignment():
            highwater, next_offset = consumer.highwater(tp), self._partitions[tp].next_offset
            if highwater is not None and next_offset is not None:
                self.metrics.lag(tp.partition, max(0, highwater - next_offset))

    def _learn_row_size(self) -> None:
        for state in self._partitions.values():
            spool = state.spool
            if spool is not None and spool.memory_bytes and spool.records:
                self._avg_row_bytes = 0.9 * self._avg_row_bytes + 0.1 * (spool.memory_bytes / spool.records)
                return

    def _relieve_memory(self, rolls: list[Roll]) -> None:
        """Roll open files early for as long as the rolling policy asks (memory pressure)."""
        while (state := roll_for_memory(self._partitions.values(), self.budget_bytes)) is not None:
            state.close_into(rolls)
            self.stats.early_rolls += 1

    def _row_group_records(self) -> int:
        """Row-group size for a new file: fits the budget over the assigned partitions.
        Recorded in the roll's checkpoint, so a rebuild uses the same value."""
        # Open row groups get 30% of the budget: fetch buffers take about a quarter, and writing
        # a row group briefly holds a second copy of it.
        share = 0.3 * self.budget_bytes / max(1, len(self._partitions))
        fitting = int(share / max(self._avg_row_bytes, 1.0))
        return max(MIN_ROW_GROUP_RECORDS, min(self.spec.rolling.row_group_records, fitting))

    async def _roll_expired(self) -> None:
        now = self._clock()
        if not any(expired(self.spec, s.opened_at, now) for s in self._partitions.values()):
            return
        async with self._lock:
            rolls = await self._in_processing(self._close, lambda s: expired(self.spec, s.opened_at, now))
        for roll in rolls:
            self._schedule(roll)

    def _close(self, which: Callable[[PartitionState], bool]) -> list[Roll]:
        rolls: list[Roll] = []
        for state in list(self._partitions.values()):
            if which(state):
                state.close_into(rolls)
        return rolls

    # -- rolls (event loop) ----------------------------------------------------------------------

    def _schedule(self, roll: Roll) -> None:
        previous = self._chains.get(roll.tp)
        self._queued[roll.tp] += 1
        self._chains[roll.tp] = asyncio.create_task(self._finish(previous, roll))

    async def _finish(self, previous: asyncio.Task[None] | None, roll: Roll) -> None:
        """Record, upload and commit one file, after the partition's previous file."""
        tp, pending = roll.tp, roll.pending
        try:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            self._check_not_fenced(tp)
            assert self._committer is not None
            if not roll.recovery:
                if roll.closed.data_path is not None or roll.closed.dead_letter_path is not None:
                    with self.stages.timed("commit"):
                        await self._committer.record_pending(tp, pending, roll.generation)
                    await self._upload(roll)
                # else: only other specs' records (shared topic): nothing to upload, the
                # position moves past them all the same.
            elif not await self._with_s3_retries(self.store.exists, pending.key):
                # A recovered roll may already be in S3: only the final commit was missing. Its
                # dead letters may be there without its data (they go first): keep those bytes.
                dead_letters_there = await self._with_s3_retries(self.store.exists, pending.dlq)
                await self._upload(roll, dead_letters=not dead_letters_there)
            with self.stages.timed("commit"):
                await self._committer.record_done(tp, pending.last, roll.generation)
        except FencedError as exc:
            # Whatever we dropped is re-read by the owner after the rebalance that follows.
            self._fenced.add(tp)
            self.stats.rolls_fenced += 1
            self._log.warning(
                "roll_fenced",
                partition=tp.partition,
                first_offset=pending.first,
                last_offset=pending.last,
                reason=str(exc),
            )
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fatal = exc
            self._log.error("roll_failed", partition=tp.partition, key=pending.key, error=str(exc))
            return
        finally:
            roll.closed.discard()
            self._queued[tp] -= 1
        closed = roll.closed
        # A range of other specs' records only (shared topic) has no file: nothing was written.
        empty = closed.data_path is None and closed.dead_letter_path is None
        self.stats.rows_written += closed.rows
        self.stats.dead_lettered += closed.dead_letters
        self.stats.skipped += sum(closed.skipped.values())
        self.stats.files_written += int(not empty)
        self.stats.bytes_written += closed.data_bytes
        self.stats.recoveries += int(roll.recovery)
        self._measure_file(roll)
        self._log.info(
            "file_committed",
            key=None if empty else pending.key,
            partition=tp.partition,
            first_offset=pending.first,
            last_offset=pending.last,
            rows=closed.rows,
            dead_letters=closed.dead_letters,
            skipped=sum(closed.skipped.values()),
            bytes=closed.data_bytes,
            recovery=roll.recovery,
        )

    def _measure_file(self, roll: Roll) -> None:
        """A file is durable in S3 and committed: count it, once."""
        closed, metrics = roll.closed, self.metrics
        metrics.records_written.inc(closed.rows)
        metrics.records_dead_lettered.inc(closed.dead_letters)
        for reason, records in closed.skipped.items():
            metrics.records_skipped(reason, records)
        metrics.flush_duration.observe(roll.flush_s)
        if closed.data_path is not None:
            metrics.files_written.inc()
            metrics.bytes_written.inc(closed.data_bytes)
            metrics.file_size.observe(closed.data_bytes)
        if roll.newest_created_at_us is not None:
            metrics.newest_created_at("s3", roll.newest_created_at_us / 1_000_000)

    async def _upload(self, roll: Roll, *, dead_letters: bool = True) -> None:
        started = time.monotonic()
        await self._with_s3_retries(self._upload_files, roll, dead_letters)
        self.metrics.upload_duration.observe(time.monotonic() - started)

    def _check_not_fenced(self, tp: TopicPartition) -> None:
        if tp in self._fenced:
            raise FencedError("an earlier roll of this partition was fenced")

    async def _with_s3_retries(self, call: Callable[..., _T], *args: Any) -> _T:
        """Run a blocking S3 call in a thread; transient failures (after botocore's own
        retries) are retried here with capped exponential backoff, until it works or the
        roll is cancelled. Terminal ones (no bucket, access denied) propagate."""
        backoff = Backoff(jitter=True)
        while True:
            try:
                return await self._in_io(call, *args)
            except StorageError as exc:
                if not exc.transient:
                    raise
                self.stats.upload_retries += 1
                self._log.warning("s3_retry", error=str(exc), delay_s=round(backoff.next_s, 2))
                await backoff.wait()

    def _upload_files(self, roll: Roll, dead_letters: bool) -> None:
        """Dead letters first, then data: a data file in S3 implies its dead letters are too
        (recovery relies on it, see :mod:`loader.checkpoint.recovery`)."""
        closed = roll.closed
        with self.stages.timed("upload"):
            if dead_letters and closed.dead_letter_path is not None:
                self.store.upload_file(closed.dead_letter_path, roll.pending.dlq)
            if closed.data_path is not None:
                self.store.upload_file(closed.data_path, roll.pending.key)

    def _apply_backpressure(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        behind = {tp for tp in self._partitions if self._queued[tp] >= MAX_QUEUED_ROLLS}
        if self._registry_wait is not None:
            behind = set(self._partitions)  # nothing is taken until the registry answers
        if behind - self._paused:
            consumer.pause(*(behind - self._paused))
            newly = sorted(tp.partition for tp in behind - self._paused)
            self._log.info("partitions_paused", partitions=newly)
        if self._paused - behind:
            consumer.resume(*(self._paused - behind))
        self._paused = behind

    async def _drain(self) -> None:
        """Shutdown: roll every open file, then wait for the chains up to the deadline."""
        async with self._lock:
            rolls = await self._in_processing(self._close, lambda _s: True)
        for roll in rolls:
            self._schedule(roll)
        await self._wait_for_chains(set(self._chains), self.shutdown_timeout_s, "shutdown")

    async def _wait_for_chains(self, partitions: set[TopicPartition], timeout_s: float, why: str) -> None:
        tasks = [self._chains[tp] for tp in partitions if tp in self._chains and not self._chains[tp].done()]
        if not tasks:
            return
        _done, unfinished = await asyncio.wait(tasks, timeout=timeout_s)
        for task in unfinished:
            task.cancel()
        if unfinished:
            # Safe: each cancelled roll is either unrecorded (re-read by the next owner) or
            # recorded (finished by the next owner's recovery).
            self._log.warning("rolls_abandoned", why=why, count=len(unfinished))

    # -- rebalances ------------------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Drop unrecorded work of revoked partitions; let recorded rolls finish (bounded)."""
        self.ready.clear()
        with self.stages.timed("join"):
            await self._revoke(revoked)

    async def _revoke(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            for tp in revoked:
                state = self._partitions.pop(tp, None)
                if state is not None:
                    state.discard()
        await self._wait_for_chains(revoked, self._revoke_timeout_s, "revoked")
        self._paused -= revoked
        for tp in revoked:
            self.metrics.lag(tp.partition, 0)
        self._log.info("partitions_revoked", partitions=sorted(tp.partition for tp in revoked))

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Read committed offsets and pending rolls before consuming anything."""
        try:
            with self.stages.timed("join"):
                await self._recover(assigned)
        except Exception as exc:  # aiokafka swallows listener errors: make it fatal ourselves
            self._fatal = exc
            self._log.error("assignment_recovery_failed", error=str(exc))
            return
        self.ready.set()

    async def _recover(self, assigned: set[TopicPartition]) -> None:
        assert self._committer is not None
        assert self._consumer is not None
        # aiokafka fetches the new partitions meanwhile: what it returned before their state
        # exists would be dropped with the position already past it. Paused, nothing is returned.
        self._consumer.pause(*assigned)
        try:
            await self._recover_paused(assigned)
        finally:
            self._consumer.resume(*(assigned - self._paused))

    async def _recover_paused(self, assigned: set[TopicPartition]) -> None:
        assert self._committer is not None
        # aiokafka has set the new generation before calling us: pin it for these partitions.
        generation = self._committer.current_generation()
        committed = await self._committer.fetch(sorted(assigned))
        without_checkpoint: dict[TopicPartition, int | None] = {}
        for tp in sorted(assigned):
            entry = committed[tp]
            pending = entry.pending
            if pending is not None and entry.offset is not None:
                problem = pending.mismatch(self.spec, tp.topic, tp.partition, entry.offset)
                if problem is not None:
                    self._log.warning("checkpoint_marker_ignored", partition=tp.partition, reason=problem)
                    pending = None
            if pending is None and not entry.by_loader:
                without_checkpoint[tp] = entry.offset
                continue
            if pending is not None:
                self._log.info(
                    "roll_recovering",
                    partition=tp.partition,
                    first_offset=pending.first,
                    last_offset=pending.last,
                    key=pending.key,
                )
            self._assign(tp, entry.offset, pending, generation)
        if without_checkpoint:
            await self._resume_without_checkpoint(without_checkpoint, generation)
        self._log.info("partitions_assigned", partitions=sorted(tp.partition for tp in assigned))

    def _assign(
        self, tp: TopicPartition, next_offset: int | None, pending: PendingFile | None, generation: Generation
    ) -> None:
        self._fenced.discard(tp)
        self._partitions[tp] = PartitionState(
            tp,
            self.spec,
            self.decoder,
            next_offset=next_offset,
            pending=pending,
            generation=generation,
            spool_dir=self._spool_dir,
            row_group_records=self._row_group_records,
            matcher=self._matcher,
            stages=self.stages,
        )

    async def _resume_without_checkpoint(
        self, committed: dict[TopicPartition, int | None], generation: Generation
    ) -> None:
        """Partitions whose committed offset (if any) the loader did not write: resume where
        their files in S3 end (:mod:`loader.checkpoint.recovery`), and record that position,
        so that the next assignment finds it in Kafka. With neither, the earliest offset."""
        consumer, committer = self._consumer, self._committer
        assert consumer is not None
        assert committer is not None
        partitions = sorted(committed)
        with kafka_errors("cannot read the partitions' offsets", metrics=self.metrics):
            ends = await consumer.end_offsets(partitions)
            earliest = await consumer.beginning_offsets(partitions)
        found = await self._with_s3_retries(
            positions_in_s3,
            self.store,
            self.spec,
            {tp.partition: ends[tp] for tp in partitions},
            self._row_group_records(),
        )
        for tp in partitions:
            in_s3 = found[tp.partition]
            if in_s3 is not None and in_s3.ignored:
                self._log.warning(
                    "s3_files_ignored",
                    partition=tp.partition,
                    count=len(in_s3.ignored),
                    first=in_s3.ignored[:3],
                )
            decided = resume(committed[tp], in_s3)
            self._assign(tp, decided.next_offset, decided.pending, generation)
            if decided.next_offset is None:
                # Where make_consumer's auto_offset_reset ("earliest") would start, made explicit.
                consumer.seek(tp, earliest[tp])
                self._log.warning(
                    "partition_position_unknown",
                    partition=tp.partition,
                    position=earliest[tp],
                    reason=decided.reason,
                )
                continue
            consumer.seek(tp, decided.next_offset)
            # From S3, Kafka lost the position: worth a warning. A committed offset taken as it
            # is (set by an operator, or by a worker before the position marker) is not.
            say = self._log.warning if decided.source == "s3" else self._log.info
            say(
                "partition_position_recovered",
                partition=tp.partition,
                source=decided.source,
                position=decided.next_offset,
                pending_last_offset=decided.pending.last if decided.pending else None,
                newest_file=in_s3.newest if in_s3 else None,
                reason=decided.reason,
            )
            try:
                if decided.pending is not None:
                    await committer.record_pending(tp, decided.pending, generation)
                else:
                    await committer.record_position(tp, decided.next_offset, generation)
            except FencedError as exc:
                # A rebalance is on its way: the partition's next owner recovers it again.
                self._fenced.add(tp)
                self._log.warning("position_record_fenced", partition=tp.partition, reason=str(exc))


def _writer_schema_ids(batches: dict[TopicPartition, list[Any]]) -> set[int]:
    """The registry ids in the batch's values that are in Confluent's wire format (magic byte,
    4-byte big-endian id): the ids the decoder will look up."""
    return {
        int.from_bytes(value[1:WIRE_HEADER_BYTES], "big")
        for records in batches.values()
        for record in records
        if (value := record.value) is not None and len(value) >= WIRE_HEADER_BYTES and value[0] == MAGIC
    }
