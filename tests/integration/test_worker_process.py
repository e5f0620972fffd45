"""The worker as operators run it: probes, SIGTERM mid-stream, restart after kill -9."""

from __future__ import annotations

import json
import signal
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from loader.config.settings import Settings
from loader.config.spec import EventSpec
from loader.devstack import DevStack, free_port
from tests.integration.helpers import produce, sample_values, spec_on_disk
from tests.integration.workers import WorkerProcess, end_and_committed, offsets_in_s3, worker_env
from tests.waiting import eventually

pytestmark = pytest.mark.integration


def _scraped(worker: WorkerProcess, name: str) -> dict[str, float]:
    """The worker's /metrics samples of ``name``'s event, by sample name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("event") == name
    }


def _caught_up(settings: Settings, spec: EventSpec) -> bool:
    ends, committed = end_and_committed(settings, spec)
    return ends == committed


def test_probes_sigterm_and_restart(
    dev_stack: DevStack, tmp_path: Path, unique_name: Callable[..., str]
) -> None:
    """Not ready before recovery, ready after; SIGTERM mid-stream loses and duplicates nothing."""
    settings = dev_stack.settings
    name = unique_name("proc", sep="_")
    specs = tmp_path / "specs"
    spec, store = spec_on_disk(settings, specs, name, bucket="proc-events", partitions=3, max_records=3_000)
    assert settings.aws.endpoint_url is not None
    env = worker_env(settings, settings.aws.endpoint_url)
    values = sample_values(spec, 30_000)
    produce(settings, spec, values[:10_000])

    first = WorkerProcess(name, specs, env, tmp_path / "first.log", web_port=free_port())
    eventually(lambda: first.probe("/readyz") == 200, 60, what="the first worker to be ready")
    assert first.probe("/healthz") == 200
    # What the alerting rules read: readiness as a metric, and the spec's freshness bound.
    scraped = _scraped(first, name)
    assert scraped["loader_ready"] == 1.0
    assert scraped["loader_rolling_max_age_seconds"] == spec.rolling.max_age_s
    assert first.signal(signal.SIGKILL) == -signal.SIGKILL

    # A cold worker joining behind a dead member is alive but not ready until it owns and
    # has recovered its partitions (the dead member's session must expire first).
    second = WorkerProcess(name, specs, env, tmp_path / "second.log", web_port=free_port())
    eventually(lambda: second.probe("/healthz") == 200, 60, what="the second worker to answer")
    statuses = []
    eventually(lambda: statuses.append(second.probe("/readyz")) or statuses[-1] == 200, 60, what="readiness")
    assert 503 in statuses, statuses

    produce(settings, spec, values[10_000:])
    eventually(
        lambda: b"file_committed" in second.log_path.read_bytes(), 30, what="a file from the second worker"
    )
    assert second.signal(signal.SIGTERM) == 0  # mid-stream: graceful
    stopped = [
        json.loads(line) for line in second.log_path.read_text().splitlines() if '"worker_stopped"' in line
    ]
    assert stopped, "the stop is logged with its counts"
    assert stopped[0]["records_read"] > 0

    third = WorkerProcess(name, specs, env, tmp_path / "third.log", web_port=free_port())
    eventually(lambda: third.probe("/readyz") == 200, 60, what="the third worker to be ready")
    eventually(lambda: _caught_up(settings, spec), 90, what="the third worker to catch up")
    assert third.signal(signal.SIGTERM) == 0

    rows, dead, _ranges = offsets_in_s3(store, spec)
    ends, _ = end_and_committed(settings, spec)
    assert sum(ends.values()) == 30_000
    assert not [k for k, n in Counter(rows + dead).items() if n > 1]
    assert set(rows) == {(p, o) for p, end in ends.items() for o in range(end)}


def test_process_pool_shares_partitions_exactly_once(
    dev_stack: DevStack, tmp_path: Path, unique_name: Callable[..., str]
) -> None:
    """With --processes 2 both children own partitions, the pool is ready, and SIGTERM loses nothing."""
    settings = dev_stack.settings
    name = unique_name("pool", sep="_")
    specs = tmp_path / "specs"
    spec, store = spec_on_disk(settings, specs, name, bucket="pool-events", partitions=4, max_records=2_000)
    assert settings.aws.endpoint_url is not None
    produce(settings, spec, sample_values(spec, 12_000))
    env = worker_env(settings, settings.aws.endpoint_url) | {"LOADER_WORKER_PROCESSES": "2"}
    pool = WorkerProcess(name, specs, env, tmp_path / "pool.log", web_port=free_port())
    eventually(lambda: pool.probe("/readyz") == 200, 60, what="the pool to be ready")
    eventually(lambda: _caught_up(settings, spec), 90, what="the pool to catch up")
    assigned = [
        json.loads(line) for line in pool.log_path.read_text().splitlines() if '"partitions_assigned"' in line
    ]
    owners = {entry.get("process") for entry in assigned if entry["partitions"]}
    assert owners == {0, 1}, assigned
    assert pool.signal(signal.SIGTERM) == 0

    rows, dead, _ranges = offsets_in_s3(store, spec)
    ends, _ = end_and_committed(settings, spec)
    assert not [k for k, n in Counter(rows + dead).items() if n > 1]
    assert set(rows) == {(p, o) for p, end in ends.items() for o in range(end)}
