"""Nothing dropped silently, end to end: unknown payload fields land in _EXTRA, are counted,
and `schemas drift` suggests the fields that make them columns, compatibly."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from loader import metrics
from loader.cli import cli
from loader.config.spec import EventSpec, load_spec
from loader.devstack import DevStack
from loader.ops.reconcile import reconcile
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.manager import PipeManager
from loader.worker.worker import StreamWorker
from tests.integration.avro_events import READER, AvroProducer, avro_spec_on_disk
from tests.integration.helpers import REPO, produce, sample_values, spec_on_disk
from tests.integration.workers import cli_env, run_worker_until

pytestmark = pytest.mark.integration

RECORDS = 60
LATER = 12


def _unknown(i: int) -> dict[str, Any] | None:
    """The unknown fields record ``i`` carries (None: none): top level, and in array items."""
    if i % 3 == 0:
        return None
    extra: dict[str, Any] = {"coupon": f"SAVE{i}"}
    if i % 3 == 2:
        extra["loyalty"] = {"tier": "gold", "points": i}
        extra["items"] = "gift"  # marker: the first item gets an unknown "gift" field
    return extra


def _with_unknown(value: bytes, extra: dict[str, Any] | None) -> tuple[bytes, dict[str, Any] | None]:
    """The record's value with the unknown fields added, and the _EXTRA expected for it."""
    if extra is None:
        return value, None
    event = json.loads(value)
    payload = event["payload"]
    expected: dict[str, Any] = {}
    for key, field_value in extra.items():
        if key == "items":
            payload["items"][0]["gift"] = True
            expected["items"] = [{"gift": True}] + [None] * (len(payload["items"]) - 1)
        else:
            payload[key] = field_value
            expected[key] = field_value
    return json.dumps(event).encode(), expected


def _variant(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _unknown_counted(event: str) -> dict[str, float]:
    return {
        sample.labels["field"]: sample.value
        for family in metrics.REGISTRY.collect()
        if family.name == "loader_unknown_fields"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels["event"] == event
    }


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def _spec_with_schema(
    settings: Any, tmp_path: Path, name: str, bucket: str
) -> tuple[EventSpec, S3Store, Path, Path]:
    """A throwaway spec whose schema file (order_created's) sits in a git repository of its own,
    so that `schemas check --against HEAD` compares a changed schema with its committed version."""
    specs_dir = tmp_path / "pipelines"
    _, store = spec_on_disk(settings, specs_dir, name, bucket=bucket, partitions=2, max_records=20)
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    schema_file = schemas / "order_created.avsc"
    schema_file.write_text((REPO / "schemas" / "order_created.avsc").read_text())
    _git(schemas, "init", "-q")
    _git(schemas, "add", "order_created.avsc")
    _git(schemas, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "v1")
    spec_file = specs_dir / f"{name}.yaml"
    document = yaml.safe_load(spec_file.read_text())
    document["schema"]["path"] = str(schema_file)
    spec_file.write_text(yaml.safe_dump(document))
    return load_spec(spec_file), store, specs_dir, schema_file


def test_unknown_fields_land_in_extra_and_drift_suggests_compatible_fields(
    dev_stack: DevStack, tmp_path: Path, unique_name: Callable[..., str]
) -> None:
    """Events with unknown fields (top level, in array items) through a real worker: each row's
    _EXTRA holds exactly its unknown fields (NULL for the others), loaded after `pipes apply`
    adds _EXTRA to an older table; they are counted by path; `schemas drift` lists them and its
    suggestion, written to the schema file, passes `schemas check`; after `pipes apply`, new
    files load the new columns."""
    settings = dev_stack.settings
    name = f"extra_{uuid.uuid4().hex[:8]}"
    spec, store, specs_dir, schema_file = _spec_with_schema(settings, tmp_path, name, unique_name("it-extra"))
    runner, env = CliRunner(), cli_env(settings)

    def loader(*args: str) -> Result:
        return runner.invoke(cli, [*args, "--specs", str(specs_dir)], env=env)

    with Warehouse(settings.snowflake) as warehouse:
        manager = PipeManager(warehouse, settings)
        manager.apply(spec)
        objects = manager.objects(spec)
        warehouse.execute(f'ALTER TABLE {objects.table} DROP COLUMN "_EXTRA"')  # a table from before

    expected: dict[str, dict[str, Any] | None] = {}
    messages = []
    for i, (key, value) in enumerate(sample_values(spec, RECORDS, seed=7)):
        sent, extra = _with_unknown(value, _unknown(i))
        expected[json.loads(sent)["event_id"]] = extra
        messages.append((key, sent))
    produce(settings, spec, messages)
    worker = StreamWorker(spec, settings)
    run_worker_until(worker, lambda: worker.stats.records_read >= RECORDS)
    assert (worker.stats.rows_written, worker.stats.dead_lettered) == (RECORDS, 0)
    with_coupon = sum(1 for e in expected.values() if e)
    with_loyalty = sum(1 for e in expected.values() if e and "loyalty" in e)
    assert _unknown_counted(name) == {
        "coupon": with_coupon,
        "loyalty": with_loyalty,
        "items[].gift": with_loyalty,
    }

    applied = loader("pipes", "apply", name)
    assert applied.exit_code == 0, applied.output
    assert "_EXTRA" in applied.output
    with Warehouse(settings.snowflake) as warehouse:
        assert reconcile(warehouse, store, objects).failed == []
        rows = warehouse.execute(f'SELECT "_EVENT_ID", "_EXTRA" FROM {objects.table}')
    assert {row[0]: _variant(row[1]) for row in rows} == expected

    drift = loader("schemas", "drift", name, "--json", "--write", str(schema_file))
    assert drift.exit_code == 0, drift.output
    report = json.loads(drift.stdout)
    by_path = {f["path"]: f for f in report["fields"]}
    assert {p: f["count"] for p, f in by_path.items()} == {
        "coupon": with_coupon,
        "items[].gift": with_loyalty,
        "loyalty": with_loyalty,
    }
    assert by_path["items[].gift"]["samples"] == [True]
    assert all(f["first_seen"] and f["last_seen"] for f in by_path.values())
    added = {(s["in_record"], s["field"]["name"]): s["field"]["type"] for s in report["add"]}
    assert added[("", "coupon")] == ["null", "string"]
    assert added[("items[]", "gift")] == ["null", "boolean"]
    assert added[("", "loyalty")][1]["fields"] == [
        {"name": "tier", "type": ["null", "string"], "default": None},
        {"name": "points", "type": ["null", "int"], "default": None},
    ]

    checked = loader("schemas", "check", "--against", "HEAD")
    assert checked.exit_code == 0, checked.output
    assert "1 changed since HEAD, all backward compatible" in checked.output

    # The new schema: the fields are columns now; new files load them, and _EXTRA is NULL.
    spec = load_spec(specs_dir / f"{name}.yaml")
    applied = loader("pipes", "apply", name)
    assert applied.exit_code == 0, applied.output
    assert "COUPON" in applied.output and "LOYALTY" in applied.output
    later: dict[str, str] = {}
    messages = []
    for i, (key, value) in enumerate(sample_values(spec, LATER, seed=8, start=RECORDS)):
        sent, _ = _with_unknown(value, {"coupon": f"LATE{i}"})
        later[json.loads(sent)["event_id"]] = f"LATE{i}"
        messages.append((key, sent))
    produce(settings, spec, messages)
    worker = StreamWorker(spec, settings)
    run_worker_until(worker, lambda: worker.stats.records_read >= LATER)
    with Warehouse(settings.snowflake) as warehouse:
        objects = PipeManager(warehouse, settings).objects(spec)
        assert reconcile(warehouse, store, objects).failed == []
        ids = ", ".join(f"'{event_id}'" for event_id in later)
        rows = warehouse.execute(
            f'SELECT "_EVENT_ID", "COUPON", "_EXTRA" FROM {objects.table} WHERE "_EVENT_ID" IN ({ids})'
        )
    assert {row[0]: (row[1], row[2]) for row in rows} == {e: (c, None) for e, c in later.items()}


def test_avro_writer_only_fields_land_in_extra(
    dev_stack: DevStack, tmp_path: Path, unique_name: Callable[..., str]
) -> None:
    """avro-registry values of a writer version ahead of the spec (v2's coupon, which the spec's
    v1 schema lacks), serialized against the real registry, through a real worker: v2 rows have
    exactly {"coupon": …} in _EXTRA, v1 rows NULL; `schemas drift` suggests the optional field."""
    settings = dev_stack.settings
    assert settings.schema_registry.url, "the session's dev stack has no schema registry"
    name = unique_name("avroextra", sep="_")
    specs_dir = tmp_path / "specs"
    spec, store = avro_spec_on_disk(
        settings, specs_dir, name, bucket=unique_name("it-avro-extra"), partitions=2
    )
    reader = {**READER, "version": 1, "fields": [f for f in READER["fields"] if f["name"] != "coupon"]}
    (specs_dir / f"{name}.avsc").write_text(json.dumps(reader))
    spec = load_spec(specs_dir / f"{name}.yaml")

    count = 40
    with AvroProducer(settings.schema_registry.url, spec.kafka.topic) as producer:
        messages = [producer.message(i, ("v1", "v2")[i % 2]) for i in range(count)]
    produce(settings, spec, messages)
    expected = {
        event_id: ({"coupon": datum["coupon"]} if "coupon" in datum else None)
        for event_id, datum in producer.sent.items()
    }
    worker = StreamWorker(spec, settings)
    run_worker_until(worker, lambda: worker.stats.records_read >= count)
    assert (worker.stats.rows_written, worker.stats.dead_lettered) == (count, 0)

    with Warehouse(settings.snowflake) as warehouse:
        manager = PipeManager(warehouse, settings)
        manager.apply(spec)
        objects = manager.objects(spec)
        assert reconcile(warehouse, store, objects).failed == []
        rows = warehouse.execute(f'SELECT "_EVENT_ID", "_EXTRA" FROM {objects.table}')
    assert {row[0]: _variant(row[1]) for row in rows} == expected

    env = cli_env(settings)
    drift = CliRunner().invoke(cli, ["schemas", "drift", name, "--json", "--specs", str(specs_dir)], env=env)
    assert drift.exit_code == 0, drift.output
    report = json.loads(drift.stdout)
    assert [(f["path"], f["count"]) for f in report["fields"]] == [("coupon", count // 2)]
    assert [s["field"] for s in report["add"]] == [
        {"name": "coupon", "type": ["null", "string"], "default": None}
    ]
