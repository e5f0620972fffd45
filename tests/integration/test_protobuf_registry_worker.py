"""Confluent wire-format Protobuf end to end, against the real registry (Apicurio, started by the
session's dev stack): v1 and v2 serialized by confluent-kafka's ProtobufSerializer, one value
framed by hand, and broken values, through a real worker process, S3, `loader pipes apply` and
the SQS loader, into the table."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from loader.cli import cli
from loader.config.spec import load_spec
from loader.consume.kafka import ensure_topic
from loader.devstack import DevStack
from loader.devstack.process import free_port
from loader.encode.avro_registry import wire_value
from loader.notify.provision import ensure_queue
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.objects import EventObjects
from loader.warehouse.sqs_loader import SqsLoader
from tests.integration.helpers import produce, read_files
from tests.integration.loading import run_loader_until
from tests.integration.workers import WorkerProcess, cli_env, end_and_committed, wait_until_caught_up
from tests.protobuf_orders import MESSAGE, READER, make_order, order_classes, order_file

pytestmark = pytest.mark.integration

GOOD = 120


def test_protobuf_values_load_in_the_specs_shape_and_bad_values_are_dead_letters(
    dev_stack: DevStack, tmp_path: Path, unique_name: Callable[..., str]
) -> None:
    """v1 and v2 values interleaved (and one framed by hand) are rows of the spec's shape, v2's
    field in _EXTRA; bad bytes, an index naming no message and an unknown id are dead letters
    with their reason; every offset is a row or a dead letter, once."""
    settings = dev_stack.settings
    registry_url = settings.schema_registry.url
    assert registry_url, "the session's dev stack has no schema registry"
    name = unique_name("pbreg", sep="_")
    specs_dir = tmp_path / "specs"
    specs_dir.mkdir()
    (specs_dir / f"{name}.avsc").write_text(json.dumps(READER))
    document = {
        "name": name,
        "kafka": {"topic": f"t.{name}", "partitions": 2},
        "schema": {"path": f"{name}.avsc", "format": "protobuf-registry", "message": MESSAGE},
        "s3": {"bucket": "it-protobuf-registry", "prefix": f"events/{name}"},
        "rolling": {"max_age_s": 1.0},
        "snowflake": {"database": "TESTS", "schema": "EVENTS", "table": name.upper()},
    }
    (specs_dir / f"{name}.yaml").write_text(yaml.safe_dump(document))
    spec = load_spec(specs_dir / f"{name}.yaml")
    asyncio.run(ensure_topic(spec, settings.kafka))
    store = S3Store(settings.aws, spec.s3.bucket)
    store.create_bucket()
    queue_url = ensure_queue(settings, unique_name("pbreg"))
    env = cli_env(
        settings, LOADER_AWS__NOTIFICATIONS_QUEUE_URL=queue_url, LOADER_SCHEMA_REGISTRY__URL=registry_url
    )
    applied = CliRunner().invoke(cli, ["pipes", "apply", name, "--specs", str(specs_dir)], env=env)
    assert applied.exit_code == 0, applied.output

    classes = {"v1": order_classes(order_file())[1], "v2": order_classes(order_file(version=2))[1]}
    context = SerializationContext(spec.kafka.topic, MessageField.VALUE)
    sent: dict[str, tuple[str, int, str | None]] = {}
    messages: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []
    with SchemaRegistryClient({"url": registry_url}) as client:
        serializers = {
            version: ProtobufSerializer(cls, client, {"use.deprecated.format": False})
            for version, cls in classes.items()
        }
        for index in range(GOOD):
            version = ("v1", "v2")[(index // 3 + index) % 2]
            extra = {"channel": "app"} if version == "v2" else {}
            message = make_order(classes[version], index, **extra)
            value = serializers[version](message, context)
            assert value is not None
            event_id = str(uuid.uuid4())
            sent[event_id] = (message.order_id, message.amount_cents, extra.get("channel"))
            headers = [("event_id", event_id.encode()), ("created_at", b"2026-11-27T08:00:00Z")]
            messages.append((f"k-{index}".encode(), value, headers))
    first = messages[0][1]
    schema_id = int.from_bytes(first[1:5], "big")
    hand = make_order(classes["v1"], GOOD)
    messages.append(
        (
            b"hand",
            wire_value(schema_id, b"\x02\x02" + hand.SerializeToString()),
            [("event_id", b"hand-1"), ("created_at", b"2026-11-27T08:00:00Z")],
        )
    )
    sent["hand-1"] = (hand.order_id, hand.amount_cents, None)
    bad = {
        b"bad-bytes": first[:7] + b"\x0a\xff",
        b"bad-index": first[:5] + b"\x02\x0a" + first[7:],
        b"bad-unknown-id": wire_value(2_000_000_000, first[5:]),
    }
    for position, (key, value) in zip((17, 61, 100), bad.items(), strict=True):
        messages.insert(position, (key, value, messages[0][2]))
    produced = produce(settings, spec, messages)

    worker = WorkerProcess(name, specs_dir, env, tmp_path / "worker.log", free_port())
    try:
        assert worker.wait_until_assigned(90), worker.log_tail()
        wait_until_caught_up(
            settings,
            spec,
            180,
            what="the worker to commit every record",
            check=lambda: None if worker.alive else pytest.fail(f"the worker died: {worker.log_tail()}"),
        )
    finally:
        assert worker.signal(signal.SIGTERM) == 0, worker.log_tail()

    dead = [row for table in read_files(store, spec.dead_letter_prefix).values() for row in table.to_pylist()]
    reasons = {row["_KEY"]: row["_REASON"] for row in dead}
    assert sorted(reasons) == sorted(bad), reasons
    assert reasons[b"bad-bytes"].startswith(f"schema id {schema_id}: not a valid Protobuf {MESSAGE}")
    assert (
        reasons[b"bad-index"]
        == f"schema id {schema_id}: message indexes [5] name no message of the writer schema"
    )
    assert reasons[b"bad-unknown-id"].startswith(
        "schema id 2000000000: the schema registry has no such schema"
    )

    run_loader_until(
        SqsLoader(settings, [spec], queue_url=queue_url, wait_time_s=1, visibility_timeout_s=10),
        lambda loader: loader.stats.rows_loaded >= len(sent),
        120,
        what=f"{len(sent)} rows loaded",
        join_timeout_s=30,
    )
    table = EventObjects.for_spec(spec, settings.snowflake).table
    with Warehouse(settings.snowflake) as warehouse:
        rows = warehouse.execute(
            f'SELECT "_EVENT_ID", "ORDER_ID", "AMOUNT_CENTS", "_EXTRA", "_PARTITION", "_OFFSET" FROM {table}'
        )
    loaded = {row[0]: (row[1], row[2], json.loads(row[3]).get("channel")) for row in rows}
    assert len(loaded) == len(rows) == len(sent)
    assert loaded == sent

    ends, _committed = end_and_committed(settings, spec)
    seen = Counter((row[4], row[5]) for row in rows) + Counter(
        (row["_PARTITION"], row["_OFFSET"]) for row in dead
    )
    assert set(seen.values()) == {1}
    assert sorted(seen) == [(p, o) for p in range(spec.kafka.partitions) for o in range(ends[p])]
    assert sum(seen.values()) == produced
