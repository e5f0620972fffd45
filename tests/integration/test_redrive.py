"""Dead-letter re-drive end to end: records bad under schema v1 and good under v2 land once."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from loader.cli import cli
from loader.config.spec import EventSpec, load_spec
from loader.consume.kafka import make_producer
from loader.devstack import DevStack
from loader.ops.reconcile import reconcile
from loader.store.layout import dead_letter_of
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.manager import PipeManager
from loader.warehouse.objects import EventObjects
from loader.worker.worker import StreamWorker
from tests.integration.helpers import REPO, read_files, sample_values, spec_on_disk
from tests.integration.workers import cli_env, run_worker_until

pytestmark = pytest.mark.integration

RECORDS = 120
PARTITIONS = 2


def _fixable(i: int) -> bool:
    """Records without ``is_scheduled``: refused by v1 (required), taken by v2 (optional)."""
    return i % 5 == 1 and i < RECORDS - 10


def _hopeless(i: int) -> bool:
    """Records no schema takes."""
    return i % 17 == 3 and i < RECORDS - 10


def _produce(spec: EventSpec, settings: Any) -> tuple[set[str], int, int]:
    """Send every record to partition i % 2 (the last ten of each partition are good, so every
    range is finished); returns the fixable records' event ids, and how many were hopeless."""
    fixable: set[str] = set()
    hopeless = 0

    async def send() -> None:
        nonlocal hopeless
        producer = make_producer(spec, settings.kafka)
        await producer.start()
        try:
            for i, (key, value) in enumerate(sample_values(spec, RECORDS, seed=5)):
                event, sent = json.loads(value), value
                if _hopeless(i):
                    sent, hopeless = b"{not json", hopeless + 1
                elif _fixable(i):
                    del event["payload"]["is_scheduled"]
                    sent = json.dumps(event).encode()
                    fixable.add(event["event_id"])
                await producer.send(spec.kafka.topic, sent, key=key, partition=i % PARTITIONS)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(send())
    return fixable, hopeless, RECORDS - len(fixable) - hopeless


def _schema(path: Path, *, optional_is_scheduled: bool) -> None:
    """order_created's schema (v1), or v2 with ``is_scheduled`` optional."""
    document = json.loads((REPO / "schemas" / "order_created.avsc").read_text())
    if optional_is_scheduled:
        document["version"] = 2
        [field] = [f for f in document["fields"] if f["name"] == "is_scheduled"]
        field.update(type=["null", "boolean"], default=None)
    path.write_text(json.dumps(document))


def _objects_in(store: S3Store) -> dict[str, str]:
    return {info.key: info.etag for info in store.list_objects("")}


def test_redriven_dead_letters_land_once_and_the_rest_stay(
    dev_stack: DevStack, tmp_path: Path, unique_name: Callable[..., str]
) -> None:
    """v1 dead-letters records without a required field; after v2 and `pipes apply` (which adds
    _REDRIVEN_AT to an older table) a re-drive loads each once, with its original partition and
    offset and _REDRIVEN_AT set; a second re-drive changes nothing; `dead-letters` lists the rest."""
    settings = dev_stack.settings
    specs_dir = tmp_path / "pipelines"
    name = f"redrive_{uuid.uuid4().hex[:8]}"
    spec, store = spec_on_disk(
        settings, specs_dir, name, bucket=unique_name("it-redrive"), partitions=PARTITIONS, max_records=25
    )
    schema_file = tmp_path / "order_created.avsc"
    _schema(schema_file, optional_is_scheduled=False)
    spec_file = specs_dir / f"{name}.yaml"
    document = yaml.safe_load(spec_file.read_text())
    document["schema"]["path"] = str(schema_file)
    spec_file.write_text(yaml.safe_dump(document))
    spec = load_spec(spec_file)

    fixable, hopeless, good = _produce(spec, settings)
    worker = StreamWorker(spec, settings)
    run_worker_until(worker, lambda: worker.stats.records_read >= RECORDS)
    assert (worker.stats.rows_written, worker.stats.dead_lettered) == (good, len(fixable) + hopeless)

    runner = CliRunner()
    env = cli_env(settings)

    def loader(*args: str) -> Result:
        return runner.invoke(cli, [*args, "--specs", str(specs_dir)], env=env)

    with Warehouse(settings.snowflake) as warehouse:
        manager = PipeManager(warehouse, settings)
        manager.apply(spec)
        objects = manager.objects(spec)
        assert reconcile(warehouse, store, objects).failed == []
        assert warehouse.execute(objects.count_statement())[0][0] == good
        warehouse.execute(f'ALTER TABLE {objects.table} DROP COLUMN "_REDRIVEN_AT"')  # a table from before

    before = _objects_in(store)
    refused = loader("dead-letters", "redrive", name)  # the table lacks _REDRIVEN_AT
    assert refused.exit_code == 2, refused.output
    assert f"run `loader pipes apply {name}` first" in refused.output
    assert _objects_in(store) == before

    _schema(schema_file, optional_is_scheduled=True)
    dry = loader("dead-letters", "redrive", name, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"{len(fixable)} now decode ({len(fixable)} new, 0 re-driven before" in dry.output
    assert (
        f"{hopeless} still bad" in dry.output and f"still bad: {hopeless} x not a JSON object" in dry.output
    )
    assert "would write" in dry.output and f"run `loader pipes apply {name}` first" in dry.output
    assert _objects_in(store) == before

    applied = loader("pipes", "apply", name)
    assert applied.exit_code == 0, applied.output
    assert "_REDRIVEN_AT" in applied.output

    done = loader("dead-letters", "redrive", name)
    assert done.exit_code == 0, done.output
    assert (
        f"({len(fixable)} new, 0 re-driven before, 0 already in data files), {hopeless} still bad"
        in done.output
    )
    now = _objects_in(store)
    assert {k: e for k, e in now.items() if dead_letter_of(k) is None} == before  # no file changed
    assert (
        any(dead_letter_of(key) is not None for key in now)
        and f"({len(fixable)} rows) into {name.upper()}" in done.output
    )
    archived = {
        json.loads(row["_VALUE"])["event_id"]: (row["_PARTITION"], row["_OFFSET"])
        for table in read_files(store, spec.dead_letter_prefix).values()
        for row in table.to_pylist()
        if row["_VALUE"] != b"{not json"
    }
    objects = EventObjects.for_spec(load_spec(spec_file), settings.snowflake)
    select_redriven = (
        f'SELECT "_EVENT_ID", "_PARTITION", "_OFFSET", "_REDRIVEN_AT" FROM {objects.table}'
        ' WHERE "_REDRIVEN_AT" IS NOT NULL'
    )
    with Warehouse(settings.snowflake) as warehouse:
        rows = warehouse.execute(select_redriven)
        assert {row[0]: (row[1], row[2]) for row in rows} == {e: archived[e] for e in fixable}
        assert len(rows) == len(fixable) and {row[1] for row in rows} == {0, 1}
        assert len({row[3] for row in rows}) == 1  # one run, one moment
        total = warehouse.execute(objects.count_statement())[0][0]
        distinct = f'SELECT COUNT(DISTINCT "_PARTITION" || \':\' || "_OFFSET") FROM {objects.table}'
        assert total == warehouse.execute(distinct)[0][0] == good + len(fixable)

        after = _objects_in(store)
        again = loader("dead-letters", "redrive", name)
        assert again.exit_code == 0, again.output
        assert f"(0 new, {len(fixable)} re-driven before" in again.output
        assert "wrote" not in again.output
        assert _objects_in(store) == after
        assert warehouse.execute(objects.count_statement())[0][0] == total
        assert sorted(warehouse.execute(select_redriven)) == sorted(rows)

        reconciled = reconcile(warehouse, store, objects, dry_run=True)
        assert (reconciled.missing, reconciled.unknown, reconciled.failed) == ([], [], [])

    listed = loader("dead-letters", name, "--json")
    assert listed.exit_code == 0, listed.output
    [summary] = json.loads(listed.output)
    assert (summary["records"], summary["redriven"]) == (hopeless, len(fixable))
    assert summary["by_reason"] == {"not a JSON object": hopeless}
