"""``loader status`` on the real local services: lag, files and freshness match what really happened."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import GroupCoordinatorNotAvailableError
from click.testing import CliRunner

from loader.cli import cli
from loader.config.settings import Settings
from loader.config.spec import EventSpec
from loader.devstack import DevStack
from loader.ops.reconcile import reconcile
from loader.store.layout import parse_key
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.manager import PipeManager
from loader.worker.worker import StreamWorker
from tests.integration.helpers import produce, sample_values, spec_on_disk
from tests.integration.workers import cli_env, end_and_committed, run_worker_until
from tests.waiting import eventually

pytestmark = pytest.mark.integration

GOOD = 900
FIRST = 600
BAD = [b"not json", b"[1, 2]", b'{"event_id": "x"']
TOLERANCE_S = 0.5
"""Slack between the clock read around the command and the one it read itself."""


def _status(
    settings: Settings, spec: EventSpec, specs_dir: Path, **env: str
) -> tuple[dict[str, Any], float, float]:
    """``loader status EVENT --json`` and the wall clock just before and after it."""
    before = time.time()
    result = CliRunner().invoke(
        cli, ["status", spec.name, "--json", "--specs", str(specs_dir)], env=cli_env(settings, **env)
    )
    after = time.time()
    assert result.exit_code == 0, result.output
    [status] = json.loads(result.stdout)
    return status, before, after


def _real_lag(settings: Settings, spec: EventSpec) -> dict[str, int]:
    """Lag per partition measured independently: end offsets minus committed ones (a fresh
    topic starts at 0), keyed as in the JSON."""
    end, committed = eventually(
        lambda: end_and_committed(settings, spec),
        30,
        what="the group's committed offsets",
        interval_s=0.5,
        ignoring=(GroupCoordinatorNotAvailableError,),  # a new broker is still creating its offsets topic
    )
    return {str(p): end[p] - max(committed[p], 0) for p in end}


def _assert_age(age_s: float | None, newest: datetime, before: float, after: float) -> None:
    assert age_s is not None
    assert before - newest.timestamp() - TOLERANCE_S <= age_s <= after - newest.timestamp() + TOLERANCE_S


def _data_keys(store: S3Store, spec: EventSpec) -> list[str]:
    return [
        info.key
        for info in store.list_objects(spec.data_prefix)
        if (parsed := parse_key(info.key)) is not None and parsed.kind == "data"
    ]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_status_matches_kafka_s3_and_the_warehouse(
    dev_stack: DevStack, tmp_path: Path, unique_name: Callable[..., str]
) -> None:
    """Lag, files, dead letters and freshness follow the pipeline from produce to load."""
    settings = dev_stack.settings
    specs_dir = tmp_path / "specs"
    spec, store = spec_on_disk(
        settings, specs_dir, unique_name("status", sep="_"), bucket="it-status", partitions=2, max_records=200
    )
    good = sample_values(spec, GOOD)
    first, second = good[:FIRST], good[FIRST:] + [(b"bad", value) for value in BAD]
    newest_first, newest = (
        max(datetime.fromisoformat(json.loads(value)["created_at"]) for _, value in batch)
        for batch in (first, good)
    )

    # Nothing consumed yet: the whole topic is lag, S3 holds nothing.
    produce(settings, spec, first)
    status, _, _ = _status(settings, spec, specs_dir)
    assert status["lag"] == FIRST, status["unavailable"]
    assert status["lag_by_partition"] == _real_lag(settings, spec)
    assert (status["files_in_s3"], status["last_file"], status["freshness_s3_s"]) == (0, None, None)
    assert status["unavailable"] == {}

    # The first batch is in S3 and committed; the second waits in Kafka.
    worker = StreamWorker(spec, settings)
    run_worker_until(worker, lambda: worker.stats.records_read >= FIRST)
    produce(settings, spec, second)
    status, before, after = _status(settings, spec, specs_dir)
    assert status["lag"] == len(second)
    assert status["lag_by_partition"] == _real_lag(settings, spec)
    assert status["files_in_s3"] == len(_data_keys(store, spec))
    _assert_age(status["freshness_s3_s"], newest_first, before, after)

    worker = StreamWorker(spec, settings)
    run_worker_until(worker, lambda: worker.stats.records_read >= len(second))
    keys = _data_keys(store, spec)

    # Everything in S3, nothing loaded.
    status, before, after = _status(settings, spec, specs_dir)
    assert status["lag"] == 0
    assert status["lag_by_partition"] == _real_lag(settings, spec)
    assert set(status["lag_by_partition"].values()) == {0}
    assert status["files_in_s3"] == len(keys) == status["files_not_loaded"]
    assert status["last_file"] in keys
    assert status["dead_letters"] == len(BAD)
    _assert_age(status["freshness_s3_s"], newest, before, after)
    assert status["freshness_table_s"] is None
    assert status["last_load_time"] is None

    with Warehouse(settings.snowflake) as warehouse:
        manager = PipeManager(warehouse, settings)
        manager.apply(spec)
        loaded = reconcile(warehouse, store, manager.objects(spec))
        assert sorted(loaded.loaded) == sorted(keys)

    # Loaded: nothing waits, the table is as fresh as S3.
    status, before, after = _status(settings, spec, specs_dir)
    assert status["files_not_loaded"] == 0
    assert status["last_load_time"] is not None
    _assert_age(status["freshness_table_s"], newest, before, after)
    _assert_age(status["freshness_s3_s"], newest, before, after)
    assert status["unavailable"] == {}

    # The warehouse goes away: its columns are unavailable, Kafka's and S3's still come out.
    down = {"LOADER_SNOWFLAKE__PORT": str(_closed_port())}
    status, _, _ = _status(settings, spec, specs_dir, **down)
    assert "cannot connect to Snowflake" in status["unavailable"]["warehouse"]
    assert set(status["unavailable"]) == {"warehouse"}
    assert (status["files_not_loaded"], status["freshness_table_s"]) == (None, None)
    assert status["lag"] == 0
    assert status["files_in_s3"] == len(keys)
    _assert_age(status["freshness_s3_s"], newest, before, time.time())

    wide = cli_env(settings, COLUMNS="250", **down)  # one line per row
    table = CliRunner().invoke(cli, ["status", spec.name, "--specs", str(specs_dir)], env=wide)
    assert table.exit_code == 0, table.output
    [row] = [line for line in table.stdout.splitlines() if spec.name in line and "│" in line]
    assert row.count("unavailable") == 3, row  # not loaded, last load, table freshness
    assert row.split("│")[2].strip() == "0"  # the lag still shows
    assert f"{spec.name}: warehouse unavailable: cannot connect to Snowflake" in table.stdout
