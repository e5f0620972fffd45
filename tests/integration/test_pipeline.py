"""The first end-to-end slice on real services: Kafka → worker → S3 → SQS → loader → fakesnow."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from loader.cli import cli
from loader.consume.kafka import ensure_topic
from loader.devstack import DevStack
from loader.devstack.provision import provision
from loader.schema.avro import load_avro_schema
from loader.store.aws import aws_client
from loader.store.layout import parse_key
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.manager import PipeManager
from loader.warehouse.objects import EventObjects
from loader.warehouse.sqs_loader import SqsLoader
from loader.worker.worker import StreamWorker
from tests.integration.helpers import make_spec, produce, read_files, sample_values
from tests.integration.loading import run_loader_until
from tests.integration.workers import run_worker_until, worker_env

pytestmark = pytest.mark.integration

BROKEN = [
    b'{"event_id": "x"',
    b"",
    b"[1, 2]",
    b'{"event_id":"e","created_at":"2026-11-27T00:00:00Z","payload":{}}',
]


def test_events_flow_from_kafka_to_the_table(dev_stack: DevStack, unique_name: Callable[..., str]) -> None:
    """Every produced record ends in S3 (as a row or a dead letter) and every good one in the table."""
    settings = dev_stack.settings
    name = unique_name("slice", sep="_")
    spec = make_spec(name, bucket="it-slice", partitions=4)
    queue_url = asyncio.run(provision(settings, [spec], queue_name=unique_name("q")))
    objects = EventObjects(spec, load_avro_schema(spec.schema_path), settings.snowflake)  # type: ignore[arg-type]
    with Warehouse(settings.snowflake) as warehouse:
        PipeManager(warehouse, settings).apply(spec)

    good = sample_values(spec, 2500)
    produced = produce(settings, spec, good + [(b"bad", value) for value in BROKEN] + [(b"tomb", None)])
    assert produced == 2500 + len(BROKEN) + 1

    worker = StreamWorker(spec, settings)
    run_worker_until(worker, lambda: worker.stats.rows_written + worker.stats.dead_lettered >= produced)
    assert worker.stats.records_read == produced

    # S3: every offset exactly once, in data or dead-letter files, and keys match contents.
    store = S3Store(settings.aws, spec.s3.bucket)
    data = read_files(store, spec.data_prefix)
    dead = read_files(store, spec.dead_letter_prefix)
    seen: list[tuple[int, int]] = []
    for key, table in {**data, **dead}.items():
        parsed = parse_key(key)
        assert parsed is not None, key
        offsets = table.column("_OFFSET").to_pylist()
        assert set(table.column("_PARTITION").to_pylist()) == {parsed.partition}
        assert parsed.first_offset <= min(offsets) and max(offsets) <= parsed.last_offset
        seen += [(parsed.partition, o) for o in offsets]
    assert len(seen) == len(set(seen)) == produced
    reasons = [r for t in dead.values() for r in t.column("_REASON").to_pylist()]
    assert len(reasons) == len(BROKEN) + 1 and all(reasons)

    # A poison message on the queue must not be deleted (the redrive policy handles it).
    sqs = aws_client("sqs", settings.aws)
    sqs.send_message(QueueUrl=queue_url, MessageBody="this is not an S3 notification")

    run_loader_until(
        SqsLoader(settings, [spec], queue_url=queue_url, wait_time_s=1, visibility_timeout_s=5),
        lambda loader: loader.stats.rows_loaded >= 2500,
        60,
        what="2500 rows loaded",
        join_timeout_s=30,
    )

    with Warehouse(settings.snowflake) as warehouse:
        rows = warehouse.execute(f"SELECT _PARTITION, _OFFSET FROM {objects.table}")
        sample = warehouse.execute(f"SELECT ORDER_ID, _EVENT_ID FROM {objects.table} WHERE _OFFSET = 0")
    assert len(rows) == len(set(rows)) == 2500
    good_offsets = {(p, o) for p, o in seen} - {
        (p, o)
        for t in dead.values()
        for p, o in zip(t.column("_PARTITION").to_pylist(), t.column("_OFFSET").to_pylist(), strict=True)
    }
    assert set(rows) == good_offsets
    produced_ids = {json.loads(v)["payload"]["order_id"] for _, v in good}
    assert {order_id for order_id, _ in sample} <= produced_ids

    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    waiting = int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )
    assert waiting == 1  # only the poison message is left


def test_dead_letters_command_lists_rejects(
    dev_stack: DevStack, tmp_path: Path, unique_name: Callable[..., str]
) -> None:
    """`loader dead-letters` counts every rejected record with a readable reason."""
    settings = dev_stack.settings
    name = unique_name("dlq", sep="_")
    spec = make_spec(name, bucket="it-dlq", partitions=1)
    specs_dir = tmp_path / "specs"
    specs_dir.mkdir()
    (specs_dir / f"{name}.yaml").write_text(
        yaml.safe_dump(spec.model_dump(by_alias=True, mode="json", exclude={"source_path"}))
    )
    asyncio.run(ensure_topic(spec, settings.kafka))
    S3Store(settings.aws, spec.s3.bucket).create_bucket()
    produced = produce(settings, spec, sample_values(spec, 50) + [(b"bad", value) for value in BROKEN])
    worker = StreamWorker(spec, settings)
    run_worker_until(worker, lambda: worker.stats.rows_written + worker.stats.dead_lettered >= produced)

    assert settings.aws.endpoint_url is not None
    result = CliRunner().invoke(
        cli,
        ["dead-letters", name, "--json", "--specs", str(specs_dir)],
        env=worker_env(settings, settings.aws.endpoint_url),
    )
    assert result.exit_code == 0, result.output
    [summary] = json.loads(result.output)
    assert summary["records"] == len(BROKEN)
    assert sum(summary["by_partition"].values()) == len(BROKEN)
    assert all(sample["reason"] for sample in summary["samples"])
