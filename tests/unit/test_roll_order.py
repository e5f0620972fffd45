"""The order of steps inside a roll: record → upload (dead letters, then data) → commit; and
the hand-over of a fetched batch to the processing thread.

Drives a StreamWorker's real assignment, processing and roll path (``on_assigned``,
``_process_batches``, ``_roll_expired``, the chain of ``_finish`` tasks) with the clock and
store it accepts, and a recording committer put where ``run()`` would put the real one (with
a placeholder consumer, which assignment only checks is set): the narrowest seam, since
``run()`` builds both around a live broker. No production code changed for these tests.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiokafka import TopicPartition

from loader.checkpoint import Committed, PendingFile
from loader.checkpoint.committer import Generation
from loader.config.settings import AwsSettings, KafkaSettings, Settings, SnowflakeSettings
from loader.config.spec import EventSpec, load_specs
from loader.devstack.samples import SampleEvents
from loader.encode.avro_registry import wire_value
from loader.errors import FencedError, RegistryError
from loader.schema import load_avro_schema
from loader.store.layout import FileRange
from loader.store.s3 import ObjectInfo
from loader.worker.partition import pending_for
from loader.worker.worker import StreamWorker
from tests.unit.fakes import FakeRecord

pytestmark = pytest.mark.unit

BASE = {s.name: s for s in load_specs(Path(__file__).parents[2] / "pipelines")}["order_created"]
assert BASE.schema_path is not None
SCHEMA = load_avro_schema(BASE.schema_path)
TOPIC = BASE.kafka.topic
TP = TopicPartition(TOPIC, 1)
HOUR = 3_600_000
PINNED = Generation(4, "member-a")
SETTINGS = Settings(
    kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"),
    aws=AwsSettings(region="us-east-1"),
    snowflake=SnowflakeSettings(account="acct", user="u"),
)


@dataclass
class Clock:
    """The worker's monotonic clock, moved by the test."""

    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class RecordingStore:
    """S3 as the worker uses it: uploads keep a copy of the bytes; ``present`` keys exist."""

    steps: list[tuple[Any, ...]]
    present: set[str] = field(default_factory=set)
    objects: dict[str, bytes] = field(default_factory=dict)

    def upload_file(self, path: Path, key: str) -> None:
        self.steps.append(("upload", key))
        self.objects[key] = path.read_bytes()

    def exists(self, key: str) -> bool:
        self.steps.append(("exists", key))
        return key in self.present

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        for key in sorted(self.present | self.objects.keys()):
            if key.startswith(prefix):
                yield ObjectInfo(key, 1, "etag")


@dataclass
class RecordingConsumer:
    """The consumer calls recovery makes: pauses, offsets of a partition of 1,000 records, seeks."""

    seeks: list[tuple[int, int]] = field(default_factory=list)
    paused: set[TopicPartition] = field(default_factory=set)
    paused_while_recovering: set[TopicPartition] = field(default_factory=set)

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.paused_while_recovering = set(self.paused)
        return dict.fromkeys(partitions, 1_000)

    async def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(partitions, 0)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp.partition, offset))

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused |= set(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused -= set(partitions)


@dataclass
class RecordingCommitter:
    """The Committer surface the worker calls, writing each call into the shared step list."""

    steps: list[tuple[Any, ...]]
    committed: Committed = field(default_factory=lambda: Committed(None, None))
    refuse_pending: bool = False
    generations: list[Generation] = field(default_factory=list)

    def current_generation(self) -> Generation:
        return PINNED

    async def fetch(self, partitions: list[TopicPartition]) -> dict[TopicPartition, Committed]:
        return dict.fromkeys(partitions, self.committed)

    async def record_pending(self, tp: TopicPartition, pending: PendingFile, generation: Generation) -> None:
        self.generations.append(generation)
        if self.refuse_pending:
            raise FencedError("commit refused (IllegalGenerationError): the group moved on")
        self.steps.append(("record_pending", tp.partition, pending.first, pending.last))

    async def record_done(self, tp: TopicPartition, last_offset: int, generation: Generation) -> None:
        self.generations.append(generation)
        self.steps.append(("record_done", tp.partition, last_offset))

    async def record_position(self, tp: TopicPartition, next_offset: int, generation: Generation) -> None:
        self.generations.append(generation)
        self.steps.append(("record_position", tp.partition, next_offset))


@dataclass
class Rig:
    worker: StreamWorker
    store: RecordingStore
    committer: RecordingCommitter
    consumer: RecordingConsumer
    clock: Clock
    steps: list[tuple[Any, ...]]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """A worker on the injected clock and store, with a recording committer in place."""
    steps: list[tuple[Any, ...]] = []
    store, committer, clock = RecordingStore(steps), RecordingCommitter(steps), Clock()
    worker = StreamWorker(_spec(), SETTINGS, store=store, clock=clock, spool_dir=tmp_path)  # type: ignore[arg-type]
    consumer = RecordingConsumer()
    worker._committer = committer  # type: ignore[assignment]
    worker._consumer = consumer
    yield Rig(worker, store, committer, consumer, clock, steps)
    worker._processing_pool.shutdown(wait=True)
    worker._io_pool.shutdown(wait=True)


def _spec(**rolling: object) -> EventSpec:
    return BASE.model_copy(update={"rolling": BASE.rolling.model_copy(update=rolling)})


def _records(first: int, count: int, bad: frozenset[int] = frozenset()) -> list[FakeRecord]:
    """Sample events at ``first..first+count-1``; offsets in ``bad`` carry a value that is no JSON."""
    samples = SampleEvents("order_created", SCHEMA, seed=11)
    records = []
    for offset in range(first, first + count):
        key, value = samples.encoded(offset)
        records.append(
            FakeRecord(TOPIC, 1, offset, 10 * HOUR + offset, key, b"not json" if offset in bad else value)
        )
    return records


async def _settle(worker: StreamWorker) -> None:
    """Wait for every roll chain the worker scheduled."""
    await asyncio.gather(*worker._chains.values())
    assert worker._fatal is None


def _pending(first: int, last: int) -> PendingFile:
    return pending_for(BASE, FileRange(TOPIC, 1, first, last, 10), 1_000)


def test_a_roll_is_recorded_then_uploads_dead_letters_then_data_then_commits(rig: Rig) -> None:
    """The marker is committed before any upload, dead letters go before data, the final commit last."""
    records = _records(500, 6, bad=frozenset({502}))

    async def scenario() -> None:
        await rig.worker.on_assigned({TP})
        await rig.worker._process_batches({TP: records})
        assert rig.steps == []  # nothing rolls before max_age_s
        rig.clock.now += BASE.rolling.max_age_s
        await rig.worker._roll_expired()
        await _settle(rig.worker)

    asyncio.run(scenario())
    pending = _pending(500, 505)
    assert rig.steps == [
        ("record_pending", 1, 500, 505),
        ("upload", pending.dlq),
        ("upload", pending.key),
        ("record_done", 1, 505),
    ]
    assert rig.committer.generations == [PINNED, PINNED]
    data = pq.read_table(pa.BufferReader(rig.store.objects[pending.key]))
    dead = pq.read_table(pa.BufferReader(rig.store.objects[pending.dlq]))
    assert data.column("_OFFSET").to_pylist() == [500, 501, 503, 504, 505]
    assert dead.column("_OFFSET").to_pylist() == [502]
    assert (
        rig.worker.stats.files_written,
        rig.worker.stats.rows_written,
        rig.worker.stats.dead_lettered,
    ) == (1, 5, 1)


def _assert_in_thread_before_the_next_fetch(rig: Rig) -> None:
    """Hand a batch over, then hold the event loop without yielding, as the next getmany's
    unpacking does: the processing thread must have the batch all the same."""
    entered = threading.Event()
    process = rig.worker._process

    def spy(batches: dict[TopicPartition, list[Any]], now: float) -> Any:
        entered.set()
        return process(batches, now)

    rig.worker._process = spy  # type: ignore[method-assign]

    async def scenario() -> None:
        await rig.worker.on_assigned({TP})
        await rig.worker._hand_over({TP: _records(500, 6)})
        assert entered.wait(timeout=5), "the batch was still waiting for the event loop"
        await rig.worker._processed()

    asyncio.run(scenario())
    assert rig.worker.stats.records_read == 6


def test_a_fetched_batch_is_in_the_processing_thread_before_the_next_fetch(rig: Rig) -> None:
    """The loop's next ``getmany`` unpacks records without yielding to the event loop: the batch
    before it must already be in the processing thread, not in a task waiting to start."""
    _assert_in_thread_before_the_next_fetch(rig)


@dataclass
class WaitingConsumer:
    """getmany as aiokafka's waits for records: nothing arrives within its timeout."""

    waits: list[float] = field(default_factory=list)

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        self.waits.append(timeout_ms)
        await asyncio.sleep(timeout_ms / 1000)
        return {}


def test_a_stop_ends_the_wait_for_records_at_once(rig: Rig) -> None:
    """A SIGTERM drains now: the fetch waiting for records returns nothing at once, not after
    its timeout (cancelled while it waits, getmany has taken no record)."""
    consumer = WaitingConsumer()
    rig.worker._fetch_timeout_ms = 30_000

    async def scenario() -> tuple[dict[TopicPartition, list[Any]], float]:
        asyncio.get_running_loop().call_later(0.05, rig.worker.stop)
        started = asyncio.get_running_loop().time()
        batches = await rig.worker._fetch(consumer)  # type: ignore[arg-type]
        return batches, asyncio.get_running_loop().time() - started

    batches, waited_s = asyncio.run(scenario())
    assert consumer.waits == [30_000]
    assert batches == {}
    assert waited_s < 5


def test_records_fetched_as_the_stop_comes_are_returned(rig: Rig) -> None:
    """Records getmany took are never dropped by a stop that comes at the same time."""
    records = _records(0, 3)

    class Ready:
        async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
            rig.worker.stop()
            return {TP: records}

    assert asyncio.run(rig.worker._fetch(Ready())) == {TP: records}  # type: ignore[arg-type]


def test_rolls_of_one_partition_finish_in_order(rig: Rig) -> None:
    """A partition's second file is recorded only after the first one's final commit."""
    rig.worker.spec = _spec(max_records=3)

    async def scenario() -> None:
        await rig.worker.on_assigned({TP})
        await rig.worker._process_batches({TP: _records(0, 6)})
        await _settle(rig.worker)

    asyncio.run(scenario())
    first, second = _pending(0, 2), _pending(3, 5)
    assert rig.steps == [
        ("record_pending", 1, 0, 2),
        ("upload", first.key),
        ("record_done", 1, 2),
        ("record_pending", 1, 3, 5),
        ("upload", second.key),
        ("record_done", 1, 5),
    ]


def test_a_fenced_roll_uploads_nothing_and_commits_nothing(rig: Rig) -> None:
    """When recording the roll is refused, no upload and no final commit follow."""
    rig.committer.refuse_pending = True

    async def scenario() -> None:
        await rig.worker.on_assigned({TP})
        await rig.worker._process_batches({TP: _records(0, 3)})
        rig.clock.now += BASE.rolling.max_age_s
        await rig.worker._roll_expired()
        await _settle(rig.worker)

    asyncio.run(scenario())
    assert rig.steps == []
    assert rig.store.objects == {}
    assert rig.worker.stats.rolls_fenced == 1
    assert rig.worker.stats.files_written == 0


def test_a_recovered_roll_already_in_s3_only_commits(rig: Rig) -> None:
    """A pending roll whose data file exists is neither recorded again nor re-uploaded: one commit."""
    pending = _pending(200, 204)
    rig.committer.committed = Committed(200, pending)
    rig.store.present.add(pending.key)

    async def scenario() -> None:
        await rig.worker.on_assigned({TP})
        await rig.worker._process_batches({TP: _records(200, 5)})
        await _settle(rig.worker)

    asyncio.run(scenario())
    assert rig.steps == [("exists", pending.key), ("record_done", 1, 204)]
    assert rig.committer.generations == [PINNED]
    assert rig.worker.stats.recoveries == 1


def test_a_recovered_roll_missing_from_s3_is_uploaded_then_committed_without_recording_again(
    rig: Rig,
) -> None:
    """A pending roll not yet in S3 is rebuilt and uploaded, dead letters first, then committed."""
    pending = _pending(200, 204)
    rig.committer.committed = Committed(200, pending)

    async def scenario() -> None:
        await rig.worker.on_assigned({TP})
        await rig.worker._process_batches({TP: _records(200, 5, bad=frozenset({201}))})
        await _settle(rig.worker)

    asyncio.run(scenario())
    assert rig.steps == [
        ("exists", pending.key),
        ("exists", pending.dlq),
        ("upload", pending.dlq),
        ("upload", pending.key),
        ("record_done", 1, 204),
    ]


def test_without_a_checkpoint_a_partition_resumes_after_its_files_in_s3_and_records_that(rig: Rig) -> None:
    """No committed offset, files in S3 up to offset 99: the consumer seeks to 100, the position is
    committed before anything is read, and the next file starts there."""
    rig.store.present |= {_pending(0, 49).key, _pending(50, 99).key}

    async def scenario() -> None:
        await rig.worker.on_assigned({TP})
        assert rig.consumer.seeks == [(1, 100)]
        assert rig.steps == [("record_position", 1, 100)]
        # Nothing fetched meanwhile was handed out before the partition had its state.
        assert (rig.consumer.paused_while_recovering, rig.consumer.paused) == ({TP}, set())
        await rig.worker._process_batches({TP: _records(0, 105)})  # fetched before the seek landed
        rig.clock.now += BASE.rolling.max_age_s
        await rig.worker._roll_expired()
        await _settle(rig.worker)

    asyncio.run(scenario())
    pending = _pending(100, 104)
    assert rig.steps[1:] == [
        ("record_pending", 1, 100, 104),
        ("upload", pending.key),
        ("record_done", 1, 104),
    ]
    data = pq.read_table(pa.BufferReader(rig.store.objects[pending.key]))
    assert data.column("_OFFSET").to_pylist() == [100, 101, 102, 103, 104]


def test_without_a_checkpoint_dead_letters_without_their_data_file_are_finished_first(rig: Rig) -> None:
    """The newest range in S3 has only its dead letters: it is recorded as pending, re-read, and
    only its data file is uploaded (the dead letters' bytes stay), then reading goes on after it."""
    done, partial = _pending(0, 199), _pending(200, 204)
    rig.store.present |= {done.key, partial.dlq}

    async def scenario() -> None:
        await rig.worker.on_assigned({TP})
        assert rig.consumer.seeks == [(1, 200)]
        await rig.worker._process_batches({TP: _records(200, 5, bad=frozenset({201}))})
        await _settle(rig.worker)

    asyncio.run(scenario())
    assert rig.steps == [
        ("record_pending", 1, 200, 204),
        ("exists", partial.key),
        ("exists", partial.dlq),
        ("upload", partial.key),
        ("record_done", 1, 204),
    ]
    data = pq.read_table(pa.BufferReader(rig.store.objects[partial.key]))
    assert data.column("_OFFSET").to_pylist() == [200, 202, 203, 204]
    assert rig.worker.stats.recoveries == 1


def test_with_neither_a_checkpoint_nor_files_a_partition_starts_at_the_earliest_offset(rig: Rig) -> None:
    """Nothing in Kafka or S3: the consumer seeks to the earliest offset and nothing is committed."""

    async def scenario() -> None:
        await rig.worker.on_assigned({TP})

    asyncio.run(scenario())
    assert rig.consumer.seeks == [(1, 0)]
    assert rig.steps == []


def test_a_batch_fetched_before_the_partition_was_assigned_again_is_dropped(rig: Rig) -> None:
    """Records fetched for a partition that is then revoked and assigned again (an eager
    rebalance) go to no file: the new owner state starts at the committed offset, and the
    stale batch, past it, would leave a gap. The records are fetched again from there."""
    rig.committer.committed = Committed(100, None, by_loader=True)

    async def scenario() -> None:
        await rig.worker.on_assigned({TP})
        fetched_for = {TP: rig.worker._partitions[TP]}  # what getmany's batch was for
        stale = _records(150, 5)  # the first owner had spooled 100..149, discarded on revocation
        await rig.worker.on_revoked({TP})
        await rig.worker.on_assigned({TP})
        await rig.worker._process_batches({TP: stale}, fetched_for)
        await rig.worker._process_batches({TP: _records(100, 55)})  # fetched again from 100
        rig.clock.now += BASE.rolling.max_age_s
        await rig.worker._roll_expired()
        await _settle(rig.worker)

    asyncio.run(scenario())
    pending = _pending(100, 154)
    assert rig.steps == [
        ("record_pending", 1, 100, 154),
        ("upload", pending.key),
        ("record_done", 1, 154),
    ]
    data = pq.read_table(pa.BufferReader(rig.store.objects[pending.key]))
    assert data.column("_OFFSET").to_pylist() == list(range(100, 155))


@dataclass
class _Registry:
    """A schema registry client with every writer schema of the batches in its cache, or
    none, and whose lookups fail the way an outage does (transient)."""

    cached: bool

    def prefetch_cached(self, ids: set[int]) -> bool:
        return self.cached

    def prefetch(self, ids: set[int]) -> None:
        raise RegistryError("schema registry unreachable: connection refused")

    def close(self) -> None:
        pass


def _wire_records(first: int, count: int) -> list[FakeRecord]:
    """Records whose values name writer schema 7 in Confluent's wire format."""
    return [
        FakeRecord(TOPIC, 1, offset, 10 * HOUR + offset, None, wire_value(7, b"\x02"))
        for offset in range(first, first + count)
    ]


def test_with_cached_schemas_a_batch_is_in_the_processing_thread_before_the_next_fetch(rig: Rig) -> None:
    """With a schema registry too, a batch whose writer schemas are cached needs no lookup
    thread: it is in the processing thread before the loop's next getmany."""
    rig.worker._registry = _Registry(cached=True)  # type: ignore[assignment]
    _assert_in_thread_before_the_next_fetch(rig)


def test_a_later_batch_never_moves_a_partition_forward_past_one_not_taken(rig: Rig) -> None:
    """While the registry is down, the first batch not taken rewinds its partition to its first
    offset; a batch fetched before that seek (the loop fetches while the thread processes)
    must not seek past it, or the records in between would never be taken."""
    rig.committer.committed = Committed(100, None, by_loader=True)
    rig.worker._registry = _Registry(cached=False)  # type: ignore[assignment]
    rig.consumer.assignment = lambda: {TP}  # type: ignore[attr-defined]

    async def scenario() -> None:
        await rig.worker.on_assigned({TP})
        await rig.worker._process_batches({TP: _wire_records(100, 5)})
        await rig.worker._process_batches({TP: _wire_records(105, 5)})  # fetched before the seek
        await rig.worker.on_revoked({TP})
        await rig.worker.on_assigned({TP})  # a new state, positioned by its recovery
        await rig.worker._process_batches({TP: _wire_records(100, 5)})

    asyncio.run(scenario())
    assert rig.consumer.seeks == [(1, 100), (1, 100)]
    assert rig.steps == []  # nothing taken, nothing rolled
