"""A new event type flows end to end from its scaffold alone: new-event, pipes apply, worker, loader.

No code and no scaffolded file is edited: the test's topic, partitions and
bucket are options of ``loader new-event``; everything else is the scaffold's
defaults (including its 5-minute freshness bound, so the worker's own
shutdown rolls the files).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from loader.cli import cli
from loader.config.spec import load_specs
from loader.consume.kafka import ensure_topic
from loader.devstack import DevStack
from loader.notify.provision import ensure_queue
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.sqs_loader import SqsLoader
from loader.worker.worker import StreamWorker
from tests.integration.helpers import produce
from tests.integration.loading import run_loader_until
from tests.integration.workers import cli_env, run_worker_until

pytestmark = pytest.mark.integration

EVENTS = 300


def _events(name: str) -> list[tuple[bytes, bytes]]:
    """Events whose payloads match the scaffolded schema: id, an optional note, created_at."""
    start = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    events = []
    for i in range(EVENTS):
        key = f"evt-{i:04d}"
        payload: dict[str, object] = {
            "id": key,
            "created_at": (start + timedelta(seconds=i, microseconds=i)).isoformat(),
        }
        if i % 3 == 1:
            payload["note"] = f"note {i}"
        elif i % 3 == 2:
            payload["note"] = None  # the third kind leaves the optional field out
        envelope = {
            "event_id": f"e-{i}",
            "event_name": name,
            "created_at": start.isoformat(),
            "source": "test",
            "schema_version": 1,
            "payload": payload,
        }
        events.append((key.encode(), json.dumps(envelope).encode()))
    return events


def test_scaffolded_event_type_flows_to_its_table(
    dev_stack: DevStack, tmp_path: Path, unique_name: Callable[..., str]
) -> None:
    """Scaffold, apply, produce, run the worker and the SQS loader: the table holds exactly the events."""
    settings = dev_stack.settings
    name = unique_name("scaffolded", sep="_")
    specs_dir = tmp_path / "pipelines"
    runner = CliRunner()
    scaffolded = runner.invoke(
        cli,
        [
            "new-event",
            name,
            "--specs",
            str(specs_dir),
            "--topic",
            f"t.{name}",
            "--partitions",
            "2",
            "--bucket",
            "it-new-event",
        ],
    )
    assert scaffolded.exit_code == 0, scaffolded.output
    [spec] = load_specs(specs_dir, [name])

    # What infrastructure as code provides: the topic, the bucket and the notifications queue.
    asyncio.run(ensure_topic(spec, settings.kafka))
    S3Store(settings.aws, spec.s3.bucket).create_bucket()
    queue_url = ensure_queue(settings, unique_name("new-event"))
    env = cli_env(settings, LOADER_AWS__NOTIFICATIONS_QUEUE_URL=queue_url)

    planned = runner.invoke(cli, ["plan", name, "--json", "--specs", str(specs_dir)], env=env)
    assert planned.exit_code == 0, planned.output
    plan = json.loads(planned.output)
    applied = runner.invoke(cli, ["pipes", "apply", name, "--specs", str(specs_dir)], env=env)
    assert applied.exit_code == 0, applied.output
    again = runner.invoke(cli, ["pipes", "plan", name, "--specs", str(specs_dir)], env=env)
    assert f"-- {name}: no changes" in again.output

    events = _events(name)
    assert produce(settings, spec, events) == EVENTS
    worker = StreamWorker(spec, settings)
    run_worker_until(worker, lambda: worker.stats.records_read >= EVENTS)
    assert worker.stats.rows_written == EVENTS
    assert worker.stats.dead_lettered == 0

    run_loader_until(
        SqsLoader(settings, [spec], queue_url=queue_url, wait_time_s=1, visibility_timeout_s=10),
        lambda loader: loader.stats.rows_loaded >= EVENTS,
        60,
        what=f"{EVENTS} rows loaded",
        join_timeout_s=30,
    )

    table = plan["snowflake"]["table"]
    with Warehouse(settings.snowflake) as warehouse:
        rows = warehouse.execute(f'SELECT "ID", "NOTE", "CREATED_AT", "_EVENT_ID" FROM {table}')
        warehouse.execute(f'USE SCHEMA "{spec.snowflake.database}"."{spec.snowflake.schema_}"')
        described = warehouse.execute(f"DESC TABLE {table}")
    loaded = sorted((i, note, at.astimezone(UTC), event_id) for i, note, at, event_id in rows)
    expected = sorted(
        (
            payload["id"],
            payload.get("note"),
            datetime.fromisoformat(payload["created_at"]),
            envelope["event_id"],
        )
        for envelope in (json.loads(value) for _, value in events)
        for payload in [envelope["payload"]]
    )
    assert loaded == expected
    assert [(c[0], c[3] == "Y") for c in described] == [
        (c["name"], c["nullable"]) for c in plan["snowflake"]["columns"]
    ]
