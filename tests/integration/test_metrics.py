"""Prometheus metrics of real worker and loader processes, checked against S3 and the table."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from loader.devstack import DevStack, free_port
from loader.devstack.provision import provision
from loader.warehouse.connection import Warehouse
from loader.warehouse.manager import PipeManager
from tests.chaos.faulty_s3 import FaultyS3Proxy
from tests.integration.helpers import produce, sample_values, spec_on_disk
from tests.integration.workers import WorkerProcess, cli_env, worker_env
from tests.waiting import eventually

pytestmark = pytest.mark.integration

BROKEN: list[tuple[bytes | None, bytes | None]] = [
    (b"bad", b'{"event_id": "x"'),
    (b"bad", b""),
    (b"bad", b"[1, 2]"),
    (b"tomb", None),
]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _scrape(port: int) -> tuple[str, Samples]:
    """The endpoint's content type and every sample, by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        content_type = response.headers["Content-Type"]
        text = response.read().decode()
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return content_type, samples


def _value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels`` (0 if none)."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls)


def _scraped(port: int, name: str, **labels: str) -> float:
    """One value as the endpoint serves it now."""
    return _value(_scrape(port)[1], name, **labels)


def _by_partition(samples: Samples, event: str) -> dict[str, float]:
    return {
        dict(ls)["partition"]: v
        for (n, ls), v in samples.items()
        if n == "loader_consumer_lag_records" and ("event", event) in ls
    }


NOT_SERVING = (OSError,)
"""What scraping an endpoint that is not serving yet raises: "not yet" while waiting."""


def _wait_until_no_lag(port: int, event: str) -> None:
    eventually(
        lambda: set(_by_partition(_scrape(port)[1], event).values()) == {0.0},
        30,
        what="the lag to reach 0",
        ignoring=NOT_SERVING,
    )


def _fresh(values: list[tuple[bytes, bytes]]) -> tuple[list[tuple[bytes, bytes]], float]:
    """The sample events re-stamped with created_at = now (1 us apart); and the newest, as Unix time."""
    now = datetime.now(UTC)
    stamped = []
    for index, (key, value) in enumerate(values):
        document = json.loads(value)
        document["created_at"] = (now + timedelta(microseconds=index)).isoformat()
        stamped.append((key, json.dumps(document).encode()))
    return stamped, (now + timedelta(microseconds=len(values) - 1)).timestamp()


def test_worker_and_loader_metrics_match_s3_and_the_table(
    dev_stack: DevStack, tmp_path: Path, unique_name: Callable[..., str]
) -> None:
    """The worker's counts equal what is in S3, lag drops to 0, S3 freshness is the newest row's
    age and grows; the loader counts every file loaded and knows the table's newest row."""
    settings = dev_stack.settings
    name = unique_name("metrics", sep="_")
    specs = tmp_path / "specs"
    spec, store = spec_on_disk(settings, specs, name, bucket="metrics-events", partitions=3, max_records=700)
    queue_url = asyncio.run(provision(settings, [spec], queue_name=unique_name("mq")))
    with Warehouse(settings.snowflake) as warehouse:
        PipeManager(warehouse, settings).apply(spec)
    good, newest = _fresh(sample_values(spec, 3_000))
    produced = produce(settings, spec, [*good, *BROKEN])
    assert settings.aws.endpoint_url is not None

    worker = WorkerProcess(
        name, specs, worker_env(settings, settings.aws.endpoint_url), tmp_path / "w.log", free_port()
    )
    try:
        eventually(
            lambda: (
                _scraped(worker.web_port, "loader_records_written_total", event=name)
                + _scraped(worker.web_port, "loader_records_dead_lettered_total", event=name)
                == produced
            ),
            90,
            what="every record to be committed",
            ignoring=NOT_SERVING,
        )
        _wait_until_no_lag(worker.web_port, name)
        content_type, samples = _scrape(worker.web_port)
        data_files = list(store.list_objects(spec.data_prefix))
        assert content_type.startswith("text/plain; version=0.0.4")
        assert _value(samples, "loader_records_consumed_total", event=name) == produced
        assert _value(samples, "loader_records_written_total", event=name) == len(good)
        assert _value(samples, "loader_records_dead_lettered_total", event=name) == len(BROKEN)
        assert _value(samples, "loader_files_written_total", event=name) == len(data_files) > 0
        assert _value(samples, "loader_bytes_written_total", event=name) == sum(f.size for f in data_files)
        assert _value(samples, "loader_file_size_bytes_count", event=name) == len(data_files)
        assert _value(samples, "loader_bytes_consumed_total", event=name) == sum(
            len(v or b"") for _, v in [*good, *BROKEN]
        )
        assert _value(samples, "loader_upload_duration_seconds_count", event=name) >= len(data_files)
        assert sorted(_by_partition(samples, name)) == ["0", "1", "2"]
        assert _value(samples, "loader_newest_created_at_seconds", event=name, where="s3") == pytest.approx(
            newest, abs=1e-5
        )
        age = _value(samples, "loader_freshness_seconds", event=name, where="s3")
        assert 0 < age < 120
        time.sleep(1.1)
        later = _scraped(worker.web_port, "loader_freshness_seconds", event=name, where="s3")
        assert later >= age + 1  # nothing new arrives: freshness grows
    finally:
        assert worker.signal(signal.SIGTERM) == 0

    loader_port = free_port()
    command = [sys.executable, "-m", "loader", "pipes", "run", name, "--specs", str(specs)]
    with (tmp_path / "loader.log").open("ab") as log:
        loader = subprocess.Popen(
            [*command, "--metrics-port", str(loader_port)],
            env=cli_env(settings, LOADER_AWS__NOTIFICATIONS_QUEUE_URL=queue_url),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        eventually(
            lambda: _scraped(loader_port, "loader_files_loaded_total", event=name) == len(data_files),
            90,
            what="every file to be loaded",
            ignoring=NOT_SERVING,
        )
        eventually(
            lambda: _scraped(loader_port, "loader_newest_created_at_seconds", event=name, where="table") > 0,
            40,
            what="the table's freshness",
            ignoring=NOT_SERVING,
        )
        content_type, samples = _scrape(loader_port)
        assert content_type.startswith("text/plain; version=0.0.4")
        assert _value(samples, "loader_rows_loaded_total", event=name) == len(good)
        assert _value(samples, "loader_load_latency_seconds_count", event=name) == len(data_files)
        assert 0 < _value(samples, "loader_load_latency_seconds_sum", event=name) < 300 * len(data_files)
        table_newest = _value(samples, "loader_newest_created_at_seconds", event=name, where="table")
        assert table_newest == pytest.approx(newest, abs=1e-5)
        assert 0 < _value(samples, "loader_freshness_seconds", event=name, where="table") < 300
        assert _value(samples, "loader_errors_total", event=name, component="snowflake") == 0
    finally:
        loader.send_signal(signal.SIGTERM)
        assert loader.wait(timeout=60) == 0


def test_pool_metrics_are_the_sum_over_children(
    dev_stack: DevStack, tmp_path: Path, unique_name: Callable[..., str]
) -> None:
    """With --processes 2, the supervisor's /metrics adds up both children, and its folder goes."""
    settings = dev_stack.settings
    name = unique_name("mpool", sep="_")
    specs = tmp_path / "specs"
    spec, store = spec_on_disk(settings, specs, name, bucket="metrics-pool", partitions=4, max_records=1_000)
    produced = produce(settings, spec, sample_values(spec, 6_000))
    assert settings.aws.endpoint_url is not None
    env = worker_env(settings, settings.aws.endpoint_url) | {"LOADER_WORKER_PROCESSES": "2"}
    pool = WorkerProcess(name, specs, env, tmp_path / "pool.log", web_port=free_port())
    try:
        eventually(
            lambda: _scraped(pool.web_port, "loader_records_written_total", event=name) == produced,
            90,
            what="both children to commit everything",
            ignoring=NOT_SERVING,
        )
        _wait_until_no_lag(pool.web_port, name)
        _content_type, samples = _scrape(pool.web_port)
        assigned = [
            json.loads(line)
            for line in pool.log_path.read_text().splitlines()
            if '"partitions_assigned"' in line
        ]
        assert {entry.get("process") for entry in assigned if entry["partitions"]} == {0, 1}
        assert _value(samples, "loader_records_consumed_total", event=name) == produced
        data_files = list(store.list_objects(spec.data_prefix))
        assert _value(samples, "loader_files_written_total", event=name) == len(data_files)
        assert sorted(_by_partition(samples, name)) == ["0", "1", "2", "3"]
        assert not any("pid" in dict(labels) for _, labels in samples)
    finally:
        assert pool.signal(signal.SIGTERM) == 0
    assert not list(Path(tempfile.gettempdir()).glob(f"loader-metrics-{name}-*"))


def test_s3_throttling_is_counted_per_attempt(
    dev_stack: DevStack, tmp_path: Path, unique_name: Callable[..., str]
) -> None:
    """Every 503 SlowDown S3 answers counts as one throttling error, even those botocore retries away."""
    settings = dev_stack.settings
    name = unique_name("mthrottle", sep="_")
    specs = tmp_path / "specs"
    spec, _store = spec_on_disk(
        settings, specs, name, bucket="metrics-throttle", partitions=2, max_records=300
    )
    assert settings.aws.endpoint_url is not None
    with FaultyS3Proxy(settings.aws.endpoint_url, seed=11) as proxy:
        worker = WorkerProcess(name, specs, worker_env(settings, proxy.url), tmp_path / "w.log", free_port())
        try:
            eventually(
                lambda: worker.probe("/readyz") == 200,
                60,
                what="the worker to be ready",
                ignoring=NOT_SERVING,
            )
            proxy.failure_rate = 0.5
            produced = produce(settings, spec, sample_values(spec, 3_000))
            eventually(
                lambda: _scraped(worker.web_port, "loader_records_written_total", event=name) == produced,
                120,
                what="every record to be committed through the faults",
                ignoring=NOT_SERVING,
            )
            assert proxy.injected > 0
            eventually(
                lambda: (
                    _scraped(
                        worker.web_port, "loader_errors_total", event=name, component="s3", kind="throttling"
                    )
                    == proxy.injected
                ),
                10,
                what="one throttling error per 503 sent",
                ignoring=NOT_SERVING,
            )
        finally:
            assert worker.signal(signal.SIGTERM) == 0
