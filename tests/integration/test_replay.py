"""Replay from S3: reload a range into a new table or the event's own, and re-publish to Kafka."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from click.testing import CliRunner

from loader.cli import cli
from loader.config.spec import EventSpec
from loader.consume.kafka import ensure_topic
from loader.devstack import DevStack
from loader.ops.reconcile import reconcile
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.manager import PipeManager
from loader.warehouse.objects import EventObjects
from loader.worker.worker import StreamWorker
from tests.integration.helpers import Message, produce, read_files, read_topic, sample_values, spec_on_disk
from tests.integration.workers import cli_env, run_worker_until

pytestmark = pytest.mark.integration

EVENTS = 900


def _messages(spec: EventSpec) -> list[Message]:
    """A third with plain headers, a third with the envelope in headers (and a binary one), a third bare."""
    messages: list[Message] = []
    for i, (key, value) in enumerate(sample_values(spec, EVENTS, seed=11)):
        if i % 3 == 0:
            messages.append((key, value, [("trace", f"trace-{i}".encode())]))
        elif i % 3 == 1:
            event = json.loads(value)
            envelope = [(name, str(event[name]).encode()) for name in ("event_id", "created_at", "source")]
            headers = [*envelope, ("bin", bytes([0xFF, i % 256]))]
            messages.append((key, json.dumps(event["payload"]).encode(), headers))
        else:
            messages.append((key, value))
    return messages


def _event_id(record: Any) -> str:
    headers = dict(record.headers)
    if "event_id" in headers:
        return str(headers["event_id"].decode())
    return str(json.loads(record.value)["event_id"])


@pytest.fixture(scope="module")
def loaded_event(
    dev_stack: DevStack, tmp_path_factory: pytest.TempPathFactory
) -> tuple[EventSpec, Path, EventObjects]:
    """An event type whose records are in S3 and loaded into its table once."""
    settings = dev_stack.settings
    specs_dir = tmp_path_factory.mktemp("replay") / "pipelines"
    spec, _store = spec_on_disk(
        settings,
        specs_dir,
        f"replay_{uuid.uuid4().hex[:8]}",
        bucket="it-replay",
        partitions=3,
        max_records=200,
    )
    produced = produce(settings, spec, _messages(spec))
    worker = StreamWorker(spec, settings)
    run_worker_until(worker, lambda: worker.stats.records_read >= produced)
    assert worker.stats.rows_written == EVENTS
    with Warehouse(settings.snowflake) as warehouse:
        manager = PipeManager(warehouse, settings)
        manager.apply(spec)
        objects = manager.objects(spec)
        assert reconcile(warehouse, S3Store(settings.aws, spec.s3.bucket), objects).failed == []
        assert warehouse.execute(objects.count_statement())[0][0] == EVENTS
    return spec, specs_dir, objects


def _rows(warehouse: Warehouse, table: str) -> list[tuple[Any, ...]]:
    return sorted(warehouse.execute(f'SELECT "_PARTITION", "_OFFSET", "_EVENT_ID", "ORDER_ID" FROM {table}'))


def _file_rows(store: S3Store, spec: EventSpec) -> list[tuple[Any, ...]]:
    table = pa.concat_tables(read_files(store, spec.data_prefix).values())
    columns = [table.column(c).to_pylist() for c in ("_PARTITION", "_OFFSET", "_EVENT_ID", "ORDER_ID")]
    return sorted(zip(*columns, strict=True))


def test_replay_into_a_new_table_equals_the_files(
    dev_stack: DevStack, loaded_event: tuple[EventSpec, Path, EventObjects], unique_name: Callable[..., str]
) -> None:
    """Dry run changes nothing; the real run creates the table and its rows equal the files' rows."""
    spec, specs_dir, objects = loaded_event
    settings = dev_stack.settings
    env = cli_env(settings)
    target = unique_name("replayed", sep="_").upper()
    runner = CliRunner()
    base = ["replay", "load", spec.name, "--specs", str(specs_dir), "--into", target]

    dry = runner.invoke(cli, [*base, "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    files = len(read_files(S3Store(settings.aws, spec.s3.bucket), spec.data_prefix))
    assert f"{files} files in range, 0 already loaded" in dry.output
    assert "a new table" in dry.output
    with Warehouse(settings.snowflake) as warehouse:
        listed = warehouse.execute(f"SHOW TABLES LIKE '{target}' IN SCHEMA {objects.schema_name}")
        assert listed == []

    done = runner.invoke(cli, base, env=env)
    assert done.exit_code == 0, done.output
    assert f"loaded {files} files ({EVENTS:,} rows) into {target}" in done.output
    with Warehouse(settings.snowflake) as warehouse:
        assert _rows(warehouse, objects.table_named(target)) == _file_rows(
            S3Store(settings.aws, spec.s3.bucket), spec
        )
        again = runner.invoke(cli, base, env=env)  # loaded before: nothing to do
        assert again.exit_code == 0, again.output
        assert "loading 0" in again.output and f"{files} already loaded" in again.output
        assert warehouse.execute(f"SELECT COUNT(*) FROM {objects.table_named(target)}")[0][0] == EVENTS


def test_forced_replay_into_the_event_table_warns_and_needs_consent(
    dev_stack: DevStack, loaded_event: tuple[EventSpec, Path, EventObjects], unique_name: Callable[..., str]
) -> None:
    """Without --force the event's table gets nothing twice; --force warns, asks, then repeats rows."""
    spec, specs_dir, objects = loaded_event
    settings = dev_stack.settings
    env = cli_env(settings)
    runner = CliRunner()
    # Into a table of its own so the other tests' counts stay put.
    target = unique_name("forced", sep="_").upper()
    base = ["replay", "load", spec.name, "--specs", str(specs_dir), "--into", target]
    assert runner.invoke(cli, base, env=env).exit_code == 0
    plain = runner.invoke(cli, ["replay", "load", spec.name, "--specs", str(specs_dir)], env=env)
    assert plain.exit_code == 0, plain.output
    assert "loading 0" in plain.output
    with Warehouse(settings.snowflake) as warehouse:
        assert warehouse.execute(objects.count_statement())[0][0] == EVENTS

        refused = runner.invoke(cli, [*base, "--force"], env=env)
        assert refused.exit_code == 2, refused.output
        assert "will appear twice" in refused.output and "pass --yes" in refused.output
        assert warehouse.execute(f"SELECT COUNT(*) FROM {objects.table_named(target)}")[0][0] == EVENTS

        forced = runner.invoke(cli, [*base, "--force", "--yes"], env=env)
        assert forced.exit_code == 0, forced.output
        rows = _rows(warehouse, objects.table_named(target))
    assert len(rows) == 2 * EVENTS
    assert sorted(set(rows)) == _file_rows(S3Store(settings.aws, spec.s3.bucket), spec)


def test_commands_say_the_load_history_is_the_load_history_fallback(
    dev_stack: DevStack, loaded_event: tuple[EventSpec, Path, EventObjects]
) -> None:
    """fakesnow has no COPY_HISTORY: reconcile, replay load and status --json each say they read
    LOAD_HISTORY instead and what it cannot show, and still count every file as loaded."""
    spec, specs_dir, _objects = loaded_event
    env = cli_env(dev_stack.settings)
    runner = CliRunner()
    files = len(read_files(S3Store(dev_stack.settings.aws, spec.s3.bucket), spec.data_prefix))
    note = "note: COPY_HISTORY unavailable ("
    reconciled = runner.invoke(cli, ["reconcile", spec.name, "--specs", str(specs_dir), "--dry-run"], env=env)
    assert reconciled.exit_code == 0, reconciled.output
    assert f"{files} already loaded, 0 missing, 0 unknown to LOAD_HISTORY; would load 0" in reconciled.stdout
    assert note in reconciled.stdout and "no Snowpipe loads" in reconciled.stdout
    replayed = runner.invoke(
        cli, ["replay", "load", spec.name, "--specs", str(specs_dir), "--dry-run"], env=env
    )
    assert replayed.exit_code == 0, replayed.output
    assert note in replayed.stdout and f"{files} already loaded" in replayed.stdout
    status = runner.invoke(cli, ["status", spec.name, "--specs", str(specs_dir), "--json"], env=env)
    assert status.exit_code == 0, status.output
    [document] = json.loads(status.stdout)
    assert document["load_history"] == "LOAD_HISTORY"
    assert document["load_history_note"].startswith("COPY_HISTORY unavailable (")
    assert (document["files_not_loaded"], document["files_unknown"]) == (0, 0)
    assert "load_history_fallback" in status.stderr  # and the log warns


def test_replay_range_outside_the_data_selects_nothing(
    dev_stack: DevStack, loaded_event: tuple[EventSpec, Path, EventObjects]
) -> None:
    spec, specs_dir, _objects = loaded_event
    later = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H")
    result = CliRunner().invoke(
        cli,
        ["replay", "load", spec.name, "--specs", str(specs_dir), "--since", later, "--dry-run"],
        env=cli_env(dev_stack.settings),
    )
    assert result.exit_code == 0, result.output
    assert "0 files in range" in result.output


@pytest.mark.parametrize("keep_partitions", [False, True])
def test_publish_sends_the_records_back_with_keys_headers_and_timestamps(
    dev_stack: DevStack,
    loaded_event: tuple[EventSpec, Path, EventObjects],
    unique_name: Callable[..., str],
    keep_partitions: bool,
) -> None:
    """Every archived record reaches the new topic once, with its key, headers, timestamp and partition,
    and a value that decodes to the same row."""
    spec, specs_dir, _objects = loaded_event
    settings = dev_stack.settings
    topic = unique_name("replayed")
    target = spec.model_copy(update={"kafka": spec.kafka.model_copy(update={"topic": topic})})
    command = ["replay", "publish", spec.name, "--specs", str(specs_dir), "--topic", topic]
    if keep_partitions:  # and the loader creates the topic, like the event's
        command += ["--keep-partitions", "--create-topic"]
    else:
        asyncio.run(ensure_topic(target, settings.kafka))
    runner = CliRunner()
    dry = runner.invoke(cli, [*command, "--dry-run"], env=cli_env(settings))
    assert dry.exit_code == 0, dry.output
    assert f"{EVENTS:,} records (dry run: nothing sent)" in dry.output
    if not keep_partitions:
        assert read_topic(settings, target, topic) == []

    result = runner.invoke(cli, command, env=cli_env(settings))
    assert result.exit_code == 0, result.output
    assert f"published {EVENTS:,} records" in result.output

    originals = {_event_id(r): r for r in read_topic(settings, spec, spec.kafka.topic)}
    replayed = read_topic(settings, target, topic)
    assert len(replayed) == len(originals) == EVENTS
    for record in replayed:
        original = originals.pop(_event_id(record))
        assert record.key == original.key
        assert record.headers == original.headers
        assert record.timestamp == original.timestamp
        assert record.partition == original.partition  # by key (same partitioner) or kept as read
        assert json.loads(record.value) == json.loads(original.value)
    assert originals == {}


def test_keep_partitions_into_a_smaller_topic_is_refused_before_sending(
    dev_stack: DevStack, loaded_event: tuple[EventSpec, Path, EventObjects], unique_name: Callable[..., str]
) -> None:
    spec, specs_dir, _objects = loaded_event
    settings = dev_stack.settings
    topic = unique_name("narrow")
    one_partition = spec.kafka.model_copy(update={"topic": topic, "partitions": 1})
    narrow = spec.model_copy(update={"kafka": one_partition})
    asyncio.run(ensure_topic(narrow, settings.kafka))
    result = CliRunner().invoke(
        cli,
        ["replay", "publish", spec.name, "--specs", str(specs_dir), "--topic", topic, "--keep-partitions"],
        env=cli_env(settings),
    )
    assert result.exit_code == 2, result.output
    assert "--keep-partitions" in result.output and "has 1 partitions" in result.output
    assert read_topic(settings, narrow, topic) == []  # nothing was sent


def test_publish_to_a_missing_topic_says_how_to_create_it(
    dev_stack: DevStack, loaded_event: tuple[EventSpec, Path, EventObjects], unique_name: Callable[..., str]
) -> None:
    spec, specs_dir, _objects = loaded_event
    result = CliRunner().invoke(
        cli,
        ["replay", "publish", spec.name, "--specs", str(specs_dir), "--topic", unique_name("missing")],
        env=cli_env(dev_stack.settings),
    )
    assert result.exit_code == 2, result.output
    assert "does not exist" in result.output and "--create-topic" in result.output
    assert "published" not in result.output


def test_publish_into_the_own_topic_is_refused_without_force(
    dev_stack: DevStack, loaded_event: tuple[EventSpec, Path, EventObjects]
) -> None:
    spec, specs_dir, _objects = loaded_event
    result = CliRunner().invoke(
        cli,
        ["replay", "publish", spec.name, "--specs", str(specs_dir), "--topic", spec.kafka.topic],
        env=cli_env(dev_stack.settings),
    )
    assert result.exit_code == 2
    assert "own topic" in result.output and "--force" in result.output
