"""Confluent wire-format Avro end to end, against the real registry (Apicurio, started by the
session's dev stack): a producer serializing v1 and v2 with confluent-kafka's AvroSerializer, one
value framed by hand around fastavro's body, and broken values, through a real worker process,
S3, `loader pipes apply` and the SQS loader, into the table."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from loader.cli import cli
from loader.devstack import DevStack
from loader.devstack.process import free_port
from loader.encode.avro_registry import wire_value
from loader.notify.provision import ensure_queue
from loader.warehouse.connection import Warehouse
from loader.warehouse.objects import EventObjects
from loader.warehouse.sqs_loader import SqsLoader
from tests.integration.avro_events import AvroProducer, avro_spec_on_disk
from tests.integration.helpers import produce, read_files
from tests.integration.loading import run_loader_until
from tests.integration.workers import (
    WorkerProcess,
    cli_env,
    end_and_committed,
    run_worker_process_until_caught_up,
)

pytestmark = pytest.mark.integration

GOOD = 240
UNKNOWN_ID = 2_000_000_000


def test_v1_and_v2_in_one_partition_load_in_the_specs_shape_and_bad_values_are_dead_letters(
    dev_stack: DevStack, tmp_path: Path, unique_name: Callable[..., str]
) -> None:
    """v1 and v2 records interleaved in each partition (and one framed by hand) are rows of the
    spec's shape, coupon NULL for v1; a wrong magic byte, an unknown schema id and a truncated
    body are dead letters with their reason; every offset is a row or a dead letter, once; a
    re-drive (which looks writer schemas up in the registry) finds them still bad."""
    settings = dev_stack.settings
    registry_url = settings.schema_registry.url
    assert registry_url, "the session's dev stack has no schema registry"
    name = unique_name("avroreg", sep="_")
    specs_dir = tmp_path / "specs"
    spec, store = avro_spec_on_disk(settings, specs_dir, name, bucket="it-avro-registry", partitions=2)
    queue_url = ensure_queue(settings, unique_name("avroreg"))
    env = cli_env(
        settings,
        LOADER_AWS__NOTIFICATIONS_QUEUE_URL=queue_url,
        LOADER_SCHEMA_REGISTRY__URL=registry_url,
    )
    applied = CliRunner().invoke(cli, ["pipes", "apply", name, "--specs", str(specs_dir)], env=env)
    assert applied.exit_code == 0, applied.output

    versions = {i: ("v1", "v2")[(i // 3 + i) % 2] for i in range(GOOD)}  # runs of both, in each partition
    with AvroProducer(registry_url, spec.kafka.topic) as producer:
        messages = [producer.message(i, versions[i]) for i in range(GOOD)]
        messages.append(producer.hand_framed_message(GOOD))
    assert producer.ids["v1"] != producer.ids["v2"]
    good_v1 = messages[0]
    bad = {
        b"bad-magic": b"\x01" + good_v1[1][1:],
        b"bad-unknown-id": wire_value(UNKNOWN_ID, good_v1[1][5:]),
        b"bad-truncated": good_v1[1][:-3],
    }
    headers = good_v1[2]
    # Among the good ones, so that they share batches and files with them.
    for position, (key, value) in zip((17, 101, 180), bad.items(), strict=True):
        messages.insert(position, (key, value, headers))
    produced = produce(settings, spec, messages)

    worker = WorkerProcess(name, specs_dir, env, tmp_path / "worker.log", free_port())
    run_worker_process_until_caught_up(settings, spec, worker, 180, what="the worker to commit every record")

    dead = [row for table in read_files(store, spec.dead_letter_prefix).values() for row in table.to_pylist()]
    reasons = {row["_KEY"]: row["_REASON"] for row in dead}
    assert sorted(reasons) == sorted(bad), reasons
    assert reasons[b"bad-magic"] == "magic byte is 0x01, not 0: not in the Confluent wire format"
    assert reasons[b"bad-unknown-id"].startswith(
        f"schema id {UNKNOWN_ID}: the schema registry has no such schema"
    ), reasons[b"bad-unknown-id"]
    truncated = reasons[b"bad-truncated"]
    assert truncated.startswith(f"schema id {producer.ids['v1']}: "), truncated
    assert {row["_VALUE"] for row in dead} == set(bad.values())  # the bytes as sent

    # Both writer versions share a data file (so a batch) in some partition.
    files = read_files(store, spec.data_prefix)
    assert any(
        {v is None for v in table.column("COUPON").to_pylist()} == {True, False}
        and len(set(table.column("_SCHEMA_VERSION").to_pylist())) == 2
        for table in files.values()
    ), "no data file holds both v1 and v2 records"

    good = len(producer.sent)
    run_loader_until(
        SqsLoader(settings, [spec], queue_url=queue_url, wait_time_s=1, visibility_timeout_s=10),
        lambda loader: loader.stats.rows_loaded >= good,
        120,
        what=f"{good} rows loaded",
        join_timeout_s=30,
    )
    table = EventObjects.for_spec(spec, settings.snowflake).table
    with Warehouse(settings.snowflake) as warehouse:
        rows = warehouse.execute(
            'SELECT "_EVENT_ID", "PAYMENT_ID", "AMOUNT_CENTS", "CURRENCY", "ATTEMPTS", "COUPON", '
            f'"_SCHEMA_VERSION", "_PARTITION", "_OFFSET" FROM {table}'
        )
    loaded = {row[0]: row[1:6] for row in rows}
    assert len(loaded) == len(rows) == good
    assert loaded == {
        event_id: (d["payment_id"], d["amount_cents"], d["currency"], d["attempts"], d.get("coupon"))
        for event_id, d in producer.sent.items()
    }
    assert Counter(row[6] for row in rows) == Counter(
        {1: Counter(versions.values())["v1"], 2: Counter(versions.values())["v2"] + 1}
    )
    assert any(row[5] is not None for row in rows), "no v2 row carries its coupon"

    # Every offset of every partition exactly once: a row or a dead letter.
    ends, _committed = end_and_committed(settings, spec)
    seen = Counter((row[7], row[8]) for row in rows) + Counter(
        (row["_PARTITION"], row["_OFFSET"]) for row in dead
    )
    assert set(seen.values()) == {1}
    assert sorted(seen) == [(p, o) for p in range(spec.kafka.partitions) for o in range(ends[p])]
    assert sum(seen.values()) == produced

    # Re-driven with the registry (the command passes it): the bad values are still bad, as they were.
    redriven = CliRunner().invoke(cli, ["dead-letters", "redrive", name, "--specs", str(specs_dir)], env=env)
    assert redriven.exit_code == 0, redriven.output
    assert f"{len(bad)} records; 0 now decode" in redriven.output, redriven.output
    assert f"{len(bad)} still bad" in redriven.output, redriven.output
    assert "the schema registry has no such schema" in redriven.output, redriven.output
