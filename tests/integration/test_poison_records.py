"""No record stops a pipeline: compressed batches, odd header keys and timestamps from a real broker.

Records are produced with confluent-kafka (librdkafka, not aiokafka), except the
header key that is not UTF-8: no client sends one (librdkafka's binding takes
``str`` keys), so that batch is written byte by byte (``tests/batches.py``) and
sent in a Produce request.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import pytest
from aiokafka import TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.produce import ProduceRequest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from loader.config.spec import EventSpec
from loader.devstack import DevStack
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.load import load_files
from loader.warehouse.objects import EventObjects
from loader.worker.worker import StreamWorker
from tests.batches import RawRecord, batch_bytes
from tests.integration.helpers import make_spec, read_files, sample_values
from tests.integration.workers import end_and_committed, run_worker_until

pytestmark = pytest.mark.integration

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
YEAR_3000_MS = 32_503_680_000_000
TIMESTAMPS = {  # key -> Kafka timestamp no row can hold
    b"ts-none": -1,
    b"ts-negative": -2,
    b"ts-year-minus-1199": -100_000_000_000_000,
    b"ts-after-9999": 300_000_000_000_000,
}


def _create_topic(bootstrap: str, spec: EventSpec) -> None:
    """The topic, accepting any CreateTime: Kafka 4 refuses timestamps over an hour ahead by
    default, but brokers configured otherwise (and Kafka 3) take them."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = NewTopic(spec.kafka.topic, 1, 1, config={"message.timestamp.after.max.ms": str(2**63 - 1)})
    for future in admin.create_topics([topic]).values():
        future.result(timeout=30)


def _produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes, int | None]], codec: str) -> None:
    """Send (key, value, timestamp) with librdkafka, compressed with ``codec``; fail on any error."""
    errors: list[str] = []

    def delivered(error: object, _message: object) -> None:
        if error is not None:
            errors.append(str(error))

    producer = Producer({"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 20})
    for key, value, timestamp in messages:
        producer.produce(topic, value, key, partition=0, timestamp=timestamp or 0, on_delivery=delivered)
    if producer.flush(30) or errors:
        raise KafkaException(f"produce with {codec} failed: {errors}")


def _produce_batch(bootstrap: str, topic: str, data: bytes) -> None:
    """Send one ready-made record batch to partition 0."""

    async def _run() -> None:
        client = AIOKafkaClient(bootstrap_servers=bootstrap)
        await client.bootstrap()
        try:
            await client._wait_on_metadata(topic)
            leader = client.cluster.leader_for_partition(TopicPartition(topic, 0))
            response = await client.send(leader, ProduceRequest(None, 1, 10_000, [(topic, [(0, data)])]))
        finally:
            await client.close()
        [(_topic, [(_partition, error, *_)])] = response.topics
        assert error == 0, f"produce error {error}"

    asyncio.run(_run())


def test_codecs_header_keys_and_timestamps(dev_stack: DevStack, unique_name: Callable[..., str]) -> None:
    """Every codec loads; a bad header key or timestamp is a dead letter with its reason; the
    worker stays ready and commits everything; read = rows + dead letters, in S3 and the table."""
    settings = dev_stack.settings
    bootstrap = settings.kafka.bootstrap_for("default")
    spec = make_spec(unique_name("poison", sep="_"), bucket="it-poison", partitions=1)
    _create_topic(bootstrap, spec)
    store = S3Store(settings.aws, spec.s3.bucket)
    store.create_bucket()
    topic = spec.kafka.topic
    values = iter(value for _key, value in sample_values(spec, 200, seed=5))

    rows: list[bytes] = []
    for codec in CODECS:
        batch = [(f"{codec}-{i}".encode(), next(values), None) for i in range(20)]
        _produce(bootstrap, topic, batch, codec)
        rows += [key for key, _, _ in batch]
    _produce(bootstrap, topic, [(key, next(values), ts) for key, ts in TIMESTAMPS.items()], "none")
    # A clock centuries ahead is a valid row, in a folder of its own; the records after it are not.
    after = [(f"after-far-{i}".encode(), next(values), None) for i in range(5)]
    _produce(bootstrap, topic, [(b"ts-year-3000", next(values), YEAR_3000_MS), *after], "zstd")
    rows += [b"ts-year-3000", *(key for key, _, _ in after)]
    now_ms = 1_800_000_000_000
    raw = [
        RawRecord(next(values), now_ms, key=b"header-good-0", headers=[(b"trace", b"1")]),
        RawRecord(next(values), now_ms, key=b"header-bad", headers=[(b"trace", b"2"), (b"\xff\xfe", b"v")]),
        RawRecord(next(values), now_ms, key=b"header-good-1"),
    ]
    _produce_batch(bootstrap, topic, batch_bytes(raw, codec="lz4"))
    rows += [b"header-good-0", b"header-good-1"]
    produced = len(rows) + len(TIMESTAMPS) + 1

    worker = StreamWorker(spec, settings)
    run_worker_until(worker, lambda: worker.ready.is_set() and worker.stats.records_read >= produced)
    assert worker.stats.records_read == produced

    data = read_files(store, spec.data_prefix)
    dead = read_files(store, spec.dead_letter_prefix)
    row_keys = [key for table in data.values() for key in table.column("_KEY").to_pylist()]
    assert sorted(row_keys) == sorted(rows)
    letters = {row["_KEY"]: row for table in dead.values() for row in table.to_pylist()}
    assert sorted(letters) == sorted([*TIMESTAMPS, b"header-bad"])
    for key, timestamp in TIMESTAMPS.items():
        assert letters[key]["_KAFKA_TIMESTAMP_MS"] == timestamp
        assert "Kafka timestamp" in letters[key]["_REASON"]
    assert letters[b"ts-none"]["_REASON"] == "the record has no Kafka timestamp (-1)"
    assert letters[b"header-bad"]["_REASON"] == "header key b'\\xff\\xfe' is not UTF-8"
    assert [h["key_bytes"] for h in letters[b"header-bad"]["_HEADERS"]] == [None, b"\xff\xfe"]
    assert letters[b"header-bad"]["_VALUE"] == raw[1].value

    folders = {
        key: path.split("/data/")[1][:13]
        for path, table in data.items()
        for key in table.column("_KEY").to_pylist()
    }
    assert folders[b"ts-year-3000"] == "dt=3000-01-01"
    assert {folders[key] for key, _, _ in after} == {folders[b"zstd-0"]}

    ends, committed = end_and_committed(settings, spec)
    assert committed == ends  # nothing left behind, nothing skipped

    objects = EventObjects.for_spec(spec, settings.snowflake)
    with Warehouse(settings.snowflake) as warehouse:
        for statement in objects.create_statements():
            warehouse.execute(statement)
        assert all(r.done for r in load_files(warehouse, store, objects, list(data)))
        loaded = warehouse.execute(f'SELECT "_KEY", "_PARTITION" FROM {objects.table}')
    assert sorted(bytes(r[0]) for r in loaded) == sorted(rows)
    # Per partition: records read = rows loaded + dead letters.
    per_partition = Counter(r[1] for r in loaded) + Counter(row["_PARTITION"] for row in letters.values())
    assert per_partition == {0: produced}
