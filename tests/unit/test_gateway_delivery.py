"""The gateway's delivery against a fake producer and a fake bucket: deadlines, the in-flight cap, spills."""

from __future__ import annotations

import asyncio
import io
from typing import Any, cast

import aiokafka.errors
import pyarrow.parquet as pq
import pytest

from loader.config.settings import Settings
from loader.config.spec import EventSpec
from loader.errors import StorageError
from loader.gateway.delivery import KafkaDelivery
from loader.gateway.outbound import OutboundRecord
from loader.gateway.spill import Spiller
from loader.metrics import GATEWAY_SPILLED
from loader.ops.dead_letters import summarize_dead_letters
from loader.retry import Backoff
from loader.store.s3 import ObjectInfo, S3Store

pytestmark = pytest.mark.unit

SPEC = EventSpec.model_validate(
    {
        "name": "gw_unit",
        "kafka": {"topic": "t.gw_unit", "partitions": 2},
        "schema": {"mode": "raw"},
        "s3": {"bucket": "gw-unit", "prefix": "events/gw_unit"},
        "snowflake": {"database": "D", "schema": "S", "table": "GW_UNIT"},
    }
)


class Bucket:
    """A bucket in memory whose first ``failures`` writes raise StorageError."""

    def __init__(self, failures: int = 0) -> None:
        self.objects: dict[str, bytes] = {}
        self.failures = failures

    def put_new(self, body: bytes, key: str) -> bool:
        if self.failures:
            self.failures -= 1
            raise StorageError("S3 is down")
        if key in self.objects:
            return False
        self.objects[key] = body
        return True

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        return [
            ObjectInfo(k, len(v), "etag", None)
            for k, v in sorted(self.objects.items())
            if k.startswith(prefix)
        ]  # type: ignore[arg-type]

    def get_bytes(self, key: str) -> bytes:
        return self.objects[key]


class Batch:
    """A batch builder that takes every record."""

    def __init__(self) -> None:
        self.values: list[bytes] = []

    def append(self, *, key: bytes | None, value: bytes, timestamp: int, headers: Any) -> object:
        self.values.append(value)
        return self

    def close(self) -> None:
        return None


class Producer:
    """A producer whose batches are acknowledged only when ``answer`` is True (else never)."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.futures: list[asyncio.Future[Any]] = []
        self.records = 0
        """Records handed over in batches."""
        self.client = self  # readiness asks the client for metadata

    async def fetch_all_metadata(self) -> Any:
        return self

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1}

    def topics(self) -> set[str]:
        return {SPEC.kafka.topic, "loader-gateway-canary"}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def flush(self) -> None:
        await asyncio.gather(*self.futures, return_exceptions=True)

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    async def send(self, topic: str, value: bytes, **_: Any) -> asyncio.Future[Any]:
        """The canary's send."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(type("Meta", (), {"partition": 0, "offset": 0})())
        return future

    def create_batch(self) -> Batch:
        return Batch()

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.answer:
            future.set_result(type("Meta", (), {"partition": partition, "offset": 100 + self.records})())
        self.records += len(batch.values)
        self.futures.append(future)
        return future


def records(count: int) -> list[OutboundRecord]:
    return [
        OutboundRecord(f"v{i}".encode(), None, (("event_id", f"e{i}".encode()),), 1_700_000_000_000)
        for i in range(count)
    ]


def delivery(producer: Producer, bucket: Bucket, **gateway: Any) -> KafkaDelivery:
    settings = Settings().model_copy(update={"gateway": Settings().gateway.model_copy(update=gateway)})
    spiller = Spiller(settings.aws, store_for=lambda _: bucket, backoff=lambda: Backoff(0.01, 0.02))
    return KafkaDelivery(
        [SPEC],
        settings,
        make_producer=lambda _: producer,
        spiller=spiller,
        check_interval_s=60,
        stop_flush_s=0.2,
    )


def test_sync_unacknowledged_by_deadline_is_failed_retryable() -> None:
    """Sync mode answers failed/retryable for records the broker does not acknowledge by the deadline."""

    async def run() -> list[Any]:
        gateway = delivery(Producer(answer=False), Bucket(), mode="sync", delivery_timeout_s=0.2)
        await gateway.start()
        try:
            return await gateway.send(SPEC, records(3))
        finally:
            await gateway.stop()

    outcomes = asyncio.run(run())
    assert all(o.state == "failed" and o.retryable and "within 0.2 s" in (o.error or "") for o in outcomes)


def test_sync_acknowledged_carries_partition_and_offset() -> None:
    """Sync mode answers acknowledged with the batch's partition and base offset plus the record's place."""

    async def run() -> list[Any]:
        gateway = delivery(Producer(answer=True), Bucket(), mode="sync")
        await gateway.start()
        try:
            return await gateway.send(SPEC, records(2))
        finally:
            await gateway.stop()

    outcomes = asyncio.run(run())
    partition = outcomes[0].partition
    assert partition in (0, 1)  # keyless: one sticky partition for the batch
    assert [(o.state, o.partition, o.offset) for o in outcomes] == [
        ("acknowledged", partition, 100),
        ("acknowledged", partition, 101),
    ]


def test_async_spills_at_the_deadline_through_s3_failures() -> None:
    """Async records never acknowledged are spilled (S3 failing twice first) as dead letters, counted."""
    bucket = Bucket(failures=2)
    before = GATEWAY_SPILLED.labels(SPEC.name)._value.get()

    async def run() -> list[Any]:
        gateway = delivery(Producer(answer=False), bucket, mode="async", delivery_timeout_s=0.2)
        await gateway.start()
        try:
            outcomes = await gateway.send(SPEC, records(4))
            await asyncio.sleep(1.0)
            return outcomes
        finally:
            await gateway.stop()

    outcomes = asyncio.run(run())
    assert {o.state for o in outcomes} == {"buffered"}
    (key,) = bucket.objects
    assert key.startswith("events/gw_unit/dead-letter/gateway/dt=")
    table = pq.read_table(io.BytesIO(bucket.objects[key]))
    assert table.column("_HEADERS").to_pylist() == [
        [{"key": "event_id", "key_bytes": None, "value": f"e{i}".encode()}] for i in range(4)
    ]
    assert table.column("_OFFSET").null_count == 4 and set(table.column("_TOPIC").to_pylist()) == {
        "t.gw_unit"
    }
    assert "not acknowledged by Kafka within 0.2 s" in table.column("_REASON")[0].as_py()
    assert GATEWAY_SPILLED.labels(SPEC.name)._value.get() - before == 4
    summary = summarize_dead_letters(SPEC, cast(S3Store, bucket))
    assert (summary.files, summary.records, summary.unsent, dict(summary.by_partition)) == (1, 4, 4, {})
    assert summary.to_json()["unsent"] == 4


def test_stop_spills_what_async_mode_still_holds() -> None:
    """Stopping before the deadline spills the records still unacknowledged: no waiting, no dropping."""
    bucket = Bucket()

    async def run() -> None:
        gateway = delivery(Producer(answer=False), bucket, mode="async", delivery_timeout_s=600)
        await gateway.start()
        await gateway.send(SPEC, records(3))
        await gateway.stop()

    asyncio.run(run())
    (body,) = bucket.objects.values()
    assert pq.read_table(io.BytesIO(body)).num_rows == 3


def test_in_flight_cap_refuses_whole_request() -> None:
    """Beyond max_in_flight_records a request is failed/retryable at once and never reaches the producer."""
    producer = Producer(answer=False)

    async def run() -> tuple[list[Any], list[Any]]:
        gateway = delivery(producer, Bucket(), mode="async", max_in_flight_records=5, delivery_timeout_s=600)
        await gateway.start()
        try:
            return await gateway.send(SPEC, records(4)), await gateway.send(SPEC, records(2))
        finally:
            await gateway.stop()

    taken, refused = asyncio.run(run())
    assert {o.state for o in taken} == {"buffered"}
    assert all(o.state == "failed" and o.retryable for o in refused)
    assert producer.records == 4


def test_out_of_order_sequence_is_retryable() -> None:
    """A record failed with OutOfOrderSequenceNumber (lost producer state) is retryable, not a rejection."""

    class Broken(Producer):
        async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future[Any]:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_exception(aiokafka.errors.OutOfOrderSequenceNumber())
            self.futures.append(future)
            return future

    async def run() -> list[Any]:
        gateway = delivery(Broken(answer=False), Bucket(), mode="sync")
        await gateway.start()
        try:
            return await gateway.send(SPEC, records(2))
        finally:
            await gateway.stop()

    assert all(o.state == "failed" and o.retryable for o in asyncio.run(run()))
