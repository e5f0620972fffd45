"""Helpers for integration tests: throwaway specs, producing samples, reading files back."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from aiokafka import TopicPartition

from loader.config.settings import Settings
from loader.config.spec import EventSpec, load_spec
from loader.consume.kafka import ensure_topic, make_consumer, make_producer
from loader.devstack.samples import SampleEvents
from loader.encode.decode import BatchDecoder
from loader.encode.parquet import write_parquet
from loader.schema.avro import load_avro_schema
from loader.store.layout import FileRange, data_key
from loader.store.s3 import S3Store
from tests.unit.fakes import FakeRecord
from tests.waiting import eventually_async

REPO = Path(__file__).parents[2]


def make_spec(
    name: str, *, base: str = "order_created", partitions: int = 4, bucket: str, **rolling: Any
) -> EventSpec:
    """A spec like the example ``base`` but with its own topic, prefix, table and group."""
    return EventSpec.model_validate(
        {
            "name": name,
            "kafka": {"topic": f"t.{name}", "partitions": partitions},
            "schema": {"path": str(REPO / "schemas" / f"{base}.avsc")},
            "s3": {"bucket": bucket, "prefix": f"events/{name}"},
            "rolling": {"max_age_s": 1.0, **rolling},
            "snowflake": {"database": "TESTS", "schema": "EVENTS", "table": name.upper()},
        }
    )


def spec_on_disk(
    settings: Settings,
    specs_dir: Path,
    name: str,
    *,
    bucket: str,
    partitions: int,
    deployment: dict[str, Any] | None = None,
    **rolling: Any,
) -> tuple[EventSpec, S3Store]:
    """A throwaway event type written as a spec file (worker processes read it), with its
    topic and bucket created."""
    specs_dir.mkdir(exist_ok=True)
    spec = make_spec(name, partitions=partitions, bucket=bucket, **rolling)
    document = spec.model_dump(by_alias=True, mode="json", exclude={"source_path"})
    if deployment:
        document["deployment"] = deployment
    (specs_dir / f"{name}.yaml").write_text(yaml.safe_dump(document))
    spec = load_spec(specs_dir / f"{name}.yaml")
    asyncio.run(ensure_topic(spec, settings.kafka))
    store = S3Store(settings.aws, spec.s3.bucket)
    store.create_bucket()
    return spec, store


def sample_values(spec: EventSpec, count: int, seed: int = 1, start: int = 0) -> list[tuple[bytes, bytes]]:
    assert spec.schema_path is not None
    samples = SampleEvents(spec.name, load_avro_schema(spec.schema_path), seed=seed)
    return [samples.encoded(i) for i in range(start, start + count)]


Message = tuple[bytes | None, bytes | None] | tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


def produce(settings: Settings, spec: EventSpec, messages: Iterable[Message]) -> int:
    """Produce (key, value[, headers]) messages to the spec's topic; returns how many."""

    async def _run() -> int:
        producer = make_producer(spec, settings.kafka)
        count = 0
        try:
            await producer.start()
            for key, value, *headers in messages:
                await producer.send(spec.kafka.topic, value, key=key, headers=headers[0] if headers else None)
                count += 1
            await producer.flush()
        finally:
            await producer.stop()
        return count

    return asyncio.run(_run())


def read_files(store: S3Store, prefix: str) -> dict[str, pa.Table]:
    """Every Parquet file under ``prefix``, by key."""
    return {
        info.key: pq.read_table(io.BytesIO(store.get_bytes(info.key))) for info in store.list_objects(prefix)
    }


def read_topic(settings: Settings, spec: EventSpec, topic: str) -> list[Any]:
    """Every record of ``topic`` (with the spec's partition count) up to its current end
    (aiokafka ConsumerRecords, in partition order)."""

    async def _run() -> list[Any]:
        consumer = make_consumer(spec, settings.kafka, group_id=None)
        records: list[Any] = []
        try:
            await consumer.start()
            partitions = [TopicPartition(topic, p) for p in range(spec.kafka.partitions)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            for tp in partitions:

                async def at_end(tp: TopicPartition = tp) -> bool:
                    batch = await consumer.getmany(tp, timeout_ms=1000)
                    records.extend(batch.get(tp, []))
                    return await consumer.position(tp) >= ends[tp]

                if await consumer.position(tp) < ends[tp]:
                    await eventually_async(at_end, 60, what=f"{tp} read to its end offset {ends[tp]}")
        finally:
            await consumer.stop()
        return records

    return asyncio.run(_run())


def upload_sample_file(store: S3Store, spec: EventSpec, first: int, count: int) -> str:
    """Encode ``count`` sample events with the spec's current schema and put them in S3."""
    assert spec.schema_path is not None
    schema = load_avro_schema(spec.schema_path)
    samples = SampleEvents(spec.name, schema, seed=first)
    records = [FakeRecord("t", 0, first + i, 1_764_230_400_000, *samples.encoded(i)) for i in range(count)]
    batch = BatchDecoder(schema).decode(records)
    assert not batch.rejected
    sink = io.BytesIO()
    write_parquet(batch.table, sink, 1000)
    key = data_key(spec, FileRange("t", 0, first, first + count - 1, 490_063))
    store.upload_fileobj(io.BytesIO(sink.getvalue()), key)
    return key
