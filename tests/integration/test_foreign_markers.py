"""Commit metadata another client wrote never stops the worker nor steers its uploads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from loader.checkpoint.marker import PendingFile
from loader.config.settings import Settings
from loader.config.spec import EventSpec
from loader.consume.kafka import ensure_topic
from loader.devstack import DevStack
from loader.store.s3 import S3Store
from loader.worker.worker import StreamWorker
from tests.integration.helpers import make_spec, produce, read_files, sample_values
from tests.integration.workers import end_and_committed, run_worker_until

pytestmark = pytest.mark.integration

ESCAPE_KEY = "events/elsewhere/escape.parquet"


def _commit(settings: Settings, spec: EventSpec, commits: dict[int, OffsetAndMetadata]) -> None:
    """Commit for the worker's group as any other client of it could."""

    async def _run() -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka.bootstrap_servers,
            group_id=spec.consumer_group,
            enable_auto_commit=False,
        )
        await consumer.start()
        offsets = {TopicPartition(spec.kafka.topic, p): c for p, c in commits.items()}
        consumer.assign(list(offsets))
        try:
            await consumer.commit(offsets)
        finally:
            await consumer.stop()

    asyncio.run(_run())


def test_foreign_commit_metadata_is_ignored_and_the_offsets_still_count(
    dev_stack: DevStack, unique_name: Callable[..., str]
) -> None:
    """Markers that do not parse, or that name keys of someone's choosing, are ignored: the worker
    stays up, writes nothing outside its own keys, and loads from the committed offsets."""
    settings = dev_stack.settings
    spec = make_spec(unique_name("markers", sep="_"), bucket="it-markers", partitions=3, max_records=100)
    store = S3Store(settings.aws, spec.s3.bucket)
    store.create_bucket()
    asyncio.run(ensure_topic(spec, settings.kafka))
    produced = produce(settings, spec, sample_values(spec, 300))
    hostile = PendingFile(first=10, last=19, period=490_000, rg=5, key=ESCAPE_KEY, dlq=ESCAPE_KEY + ".dlq")
    _commit(
        settings,
        spec,
        {
            0: OffsetAndMetadata(10, '{"v":1}'),  # parses as JSON, no fields: was a KeyError
            1: OffsetAndMetadata(10, hostile.encode()),  # our format, someone else's keys
            2: OffsetAndMetadata(10, "[" * 4_000),
        },
    )
    ends, _ = end_and_committed(settings, spec)
    worker = StreamWorker(spec, settings)
    run_worker_until(worker, lambda: worker.stats.records_read >= produced - 30, timeout_s=60)

    assert worker.stats.records_read == produced - 30  # each partition from its committed offset 10
    assert not list(store.list_objects("events/elsewhere/"))
    files = read_files(store, spec.data_prefix)
    offsets = sorted(
        (partition, offset)
        for table in files.values()
        for partition, offset in zip(
            table.column("_PARTITION").to_pylist(), table.column("_OFFSET").to_pylist(), strict=True
        )
    )
    assert offsets == sorted((p, o) for p in range(3) for o in range(10, ends[p]))
    assert end_and_committed(settings, spec)[1] == ends
