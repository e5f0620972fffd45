"""Re-publish an event's archived records from S3 to a Kafka topic.

Each data file's rows become the records they were consumed as: same key,
headers and Kafka timestamp, and a value that decodes to the same row (see
:mod:`loader.encode.reencode`). Files go out in (partition, offset) order and
the producer is idempotent, so a partition's records keep their order and a
retried send is not duplicated. By default records are partitioned by key,
as the original producer's default partitioner did; ``keep_partitions`` sends
each to the partition it was read from instead. Publishing into the event's
own topic loads its records a second time (new offsets are new rows), so it
is refused unless forced.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
from aiokafka.admin import AIOKafkaAdminClient

from loader.config.settings import KafkaSettings
from loader.config.spec import EventSpec
from loader.consume.errors import kafka_errors
from loader.consume.kafka import client_kwargs, ensure_topic, make_producer
from loader.encode.reencode import RecordEncoder
from loader.errors import ConfigError
from loader.schema.model import EventSchema
from loader.store.footer import parquet_footer
from loader.store.layout import parse_key
from loader.store.listing import data_files
from loader.store.s3 import ObjectInfo, S3Store

__all__ = ["PublishPlan", "plan_publish", "publish", "topic_partitions"]


@dataclass(frozen=True)
class PublishPlan:
    """The files of the range, in send order, and how many records they hold."""

    event: str
    topic: str
    files: list[ObjectInfo]
    records: int

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)


def plan_publish(
    store: S3Store,
    spec: EventSpec,
    *,
    topic: str,
    since: datetime | None,
    until: datetime | None,
    force: bool = False,
) -> PublishPlan:
    """The files to send (partition, then offset order) and their record count from the footers."""
    if topic == spec.kafka.topic and not force:
        raise ConfigError(
            f"{topic} is {spec.name}'s own topic: its workers would load every record again as new rows. "
            "Publish to another topic, or pass --force if duplicates in the table are what you want"
        )

    def order(info: ObjectInfo) -> tuple[str, int, int]:
        parsed = parse_key(info.key)
        assert parsed is not None  # data_files lists parsed data keys only
        return parsed.topic, parsed.partition, parsed.first_offset

    files = sorted(data_files(store, spec, since, until), key=order)
    records = sum(parquet_footer(store, f.key).num_rows for f in files)
    return PublishPlan(event=spec.name, topic=topic, files=files, records=records)


async def topic_partitions(
    spec: EventSpec, settings: KafkaSettings, topic: str, *, create: bool = False
) -> int:
    """How many partitions ``topic`` has (``create``: made like the event's topic if missing);
    a clear error when it does not exist."""
    if create:
        like_event = spec.model_copy(update={"kafka": spec.kafka.model_copy(update={"topic": topic})})
        await ensure_topic(like_event, settings)
    admin = AIOKafkaAdminClient(**client_kwargs(spec, settings))
    try:
        with kafka_errors(f"cannot read the metadata of topic {topic}"):
            await admin.start()
            if topic not in await admin.list_topics():
                raise ConfigError(
                    f"topic {topic} does not exist: create it first, or pass --create-topic (it gets "
                    f"{spec.kafka.topic}'s {spec.kafka.partitions} partitions, which keeps each key's "
                    "records on the partition they were read from)"
                )
            (described,) = await admin.describe_topics([topic])
            return len(described["partitions"])
    finally:
        await admin.close()


async def publish(
    plan: PublishPlan,
    store: S3Store,
    spec: EventSpec,
    schema: EventSchema,
    settings: KafkaSettings,
    *,
    partitions: int,
    keep_partitions: bool = False,
    on_file: Callable[[int], None] = lambda records: None,
) -> int:
    """Send every record of the plan's files to its topic (which has ``partitions``
    partitions, see :func:`topic_partitions`); returns how many were sent."""
    if keep_partitions:  # refused before anything is sent: one file's partition is in its key
        for info in plan.files:
            parsed = parse_key(info.key)
            assert parsed is not None  # data_files lists parsed data keys only
            if parsed.partition >= partitions:
                raise ConfigError(
                    f"--keep-partitions: {info.key} holds partition {parsed.partition} "
                    f"but {plan.topic} has {partitions} partitions"
                )
    encoder = RecordEncoder(schema, raw=spec.schema_ref.mode == "raw")
    producer = make_producer(spec, settings, enable_idempotence=True, acks="all")
    sent = 0
    try:
        with kafka_errors(lambda: f"publishing to {plan.topic} failed after {sent} records"):
            await producer.start()
            with tempfile.TemporaryDirectory(prefix="loader-replay-") as scratch:
                for info in plan.files:
                    local = Path(scratch) / "file.parquet"
                    store.download_file(info.key, local)
                    in_file = 0
                    for batch in pq.ParquetFile(local).iter_batches(batch_size=10_000):
                        deliveries = [
                            await producer.send(
                                plan.topic,
                                record.value,
                                key=record.key,
                                partition=record.partition if keep_partitions else None,
                                timestamp_ms=record.timestamp_ms,
                                headers=record.headers,
                            )
                            for record in encoder.records(batch)
                        ]
                        for delivery in deliveries:  # acknowledged a batch at a time: bounded memory
                            await delivery
                        in_file += len(deliveries)
                    sent += in_file
                    on_file(in_file)
    finally:
        await producer.stop()
    return sent
