"""``loader audit`` against the local services: a real pipeline is complete; each planted fault is named."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
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
from loader.warehouse.objects import EventObjects
from loader.worker.worker import StreamWorker
from tests.integration.helpers import produce, sample_values, spec_on_disk
from tests.integration.workers import cli_env, run_worker_until
from tests.waiting import eventually

pytestmark = pytest.mark.integration

RECORDS = 900
BAD = [b"not json", b"[1, 2]"]
PUSHGATEWAY = shutil.which("pushgateway") or str(
    Path.home() / ".cache" / "event-loader" / "bin" / "pushgateway"
)


@dataclass
class Pipeline:
    """An event type run end to end: files in S3, all loaded into its table."""

    settings: Settings
    spec: EventSpec
    specs_dir: Path
    store: S3Store
    objects: EventObjects
    data_keys: list[str]

    def audit(self, *args: str, **env: str) -> tuple[int, dict[str, Any]]:
        """``loader audit EVENT --json --settle 0``: its exit code and its JSON."""
        result = CliRunner().invoke(
            cli,
            ["audit", self.spec.name, "--json", "--settle", "0", "--specs", str(self.specs_dir), *args],
            env=cli_env(self.settings, **env),
        )
        assert result.stdout, result.output
        return result.exit_code, json.loads(result.stdout)

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        with Warehouse(self.settings.snowflake) as warehouse:
            return warehouse.execute(statement)


@pytest.fixture
def pipeline(dev_stack: DevStack, unique_name: Callable[..., str], tmp_path: Path) -> Pipeline:
    """Records (a few of them dead letters) through a worker into S3, loaded into the table."""
    settings = dev_stack.settings
    specs_dir = tmp_path / "specs"
    spec, store = spec_on_disk(
        settings, specs_dir, unique_name("aud", sep="_"), bucket="it-audit", partitions=2, max_records=200
    )
    values = sample_values(spec, RECORDS)
    messages = [(key, value) for key, value in values] + [(b"k", bad) for bad in BAD]
    produced = produce(settings, spec, messages)
    worker = StreamWorker(spec, settings)
    run_worker_until(worker, lambda: worker.stats.records_read >= produced)
    with Warehouse(settings.snowflake) as warehouse:
        manager = PipeManager(warehouse, settings)
        manager.apply(spec)
        objects = manager.objects(spec)
        report = reconcile(warehouse, store, objects)
        assert not report.failed
    keys = [info.key for info in store.list_objects(spec.data_prefix)]
    assert len(keys) >= 4
    return Pipeline(settings, spec, specs_dir, store, objects, keys)


def _ranges(pipeline: Pipeline) -> list[tuple[int, int, int, str]]:
    """(partition, first, last, key) of each data file, in offset order."""
    found = []
    for key in pipeline.data_keys:
        parsed = parse_key(key)
        assert parsed is not None
        found.append((parsed.partition, parsed.first_offset, parsed.last_offset, key))
    return sorted(found)


def _middle(pipeline: Pipeline) -> tuple[int, int, int, str]:
    """A data file with files before and after it in its partition."""
    ranges = _ranges(pipeline)
    for index in range(1, len(ranges) - 1):
        before, current, after = ranges[index - 1], ranges[index], ranges[index + 1]
        if before[0] == current[0] == after[0]:
            return current
    raise AssertionError(f"no partition has three files: {ranges}")


def _problems(document: dict[str, Any]) -> list[dict[str, Any]]:
    [event] = document["events"]
    problems: list[dict[str, Any]] = event["problems"]
    return problems


def test_a_complete_pipeline_is_complete(pipeline: Pipeline) -> None:
    """Every offset in a file, every file's rows in the table once: complete, exit 0, with the counts."""
    code, document = pipeline.audit()
    assert code == 0, document
    [event] = document["events"]
    assert document["complete"] is True
    assert event["problems"] == []
    assert event["rows"] == RECORDS
    assert event["dead_letters"] == len(BAD)
    assert event["table_checked"] == len(pipeline.data_keys)
    committed = {p: c["committed"] for p, c in event["partitions"].items()}
    assert sum(committed.values()) == RECORDS + len(BAD)
    assert all(c["last_offset"] + 1 == c["committed"] for c in event["partitions"].values())


def test_a_deleted_data_file_is_a_gap(pipeline: Pipeline, s3_client: Any) -> None:
    """Delete a data file in S3: audit names the gap (its offsets, the neighbours) and exits non-zero."""
    partition, first, last, key = _middle(pipeline)
    s3_client.delete_object(Bucket=pipeline.store.bucket, Key=key)
    code, document = pipeline.audit()
    assert code == 1
    [gap] = _problems(document)
    assert (gap["kind"], gap["partition"], gap["first_offset"], gap["last_offset"]) == (
        "gap",
        partition,
        first,
        last,
    )
    assert key not in gap["files"]
    assert len(gap["files"]) >= 2
    assert "loader reconcile" in gap["repair"]


def test_deleted_table_rows_are_named(pipeline: Pipeline) -> None:
    """Delete a file's row range from the table: audit names that file with the rows missing."""
    partition, first, last, key = _middle(pipeline)
    cut = first + (last - first) // 2
    pipeline.sql(
        f'DELETE FROM {pipeline.objects.table} WHERE "_PARTITION" = {partition}'
        f' AND "_OFFSET" BETWEEN {first} AND {cut}'
    )
    code, document = pipeline.audit()
    assert code == 1
    [problem] = _problems(document)
    assert problem["kind"] == "table_missing"
    assert (problem["partition"], problem["first_offset"], problem["last_offset"]) == (partition, first, last)
    assert key in problem["files"]
    assert f"holds {last - cut} rows" in problem["detail"]
    assert "DELETE FROM" in problem["repair"]
    assert "FORCE = TRUE" in problem["repair"]


def test_a_duplicated_row_range_is_named(pipeline: Pipeline) -> None:
    """Insert a file's rows a second time: audit names that file's duplicates."""
    partition, first, last, key = _middle(pipeline)
    table = pipeline.objects.table
    pipeline.sql(
        f"INSERT INTO {table} SELECT * FROM {table}"
        f' WHERE "_PARTITION" = {partition} AND "_OFFSET" BETWEEN {first} AND {first + 9}'
    )
    code, document = pipeline.audit()
    assert code == 1
    [problem] = _problems(document)
    assert problem["kind"] == "table_duplicate"
    assert (problem["partition"], problem["first_offset"], problem["last_offset"]) == (partition, first, last)
    assert key in problem["files"]
    rows = last - first + 1
    assert f"holds {rows + 10} rows ({rows} distinct offsets)" in problem["detail"]


def test_a_forged_overlapping_file_is_named(pipeline: Pipeline, s3_client: Any) -> None:
    """Copy a data file under a key claiming part of its neighbour's range: audit names the overlap."""
    partition, first, last, key = _middle(pipeline)
    forged = key.replace(f"-{last:020d}.parquet", f"-{last + 5:020d}.parquet")
    assert forged != key
    s3_client.copy_object(
        Bucket=pipeline.store.bucket, Key=forged, CopySource={"Bucket": pipeline.store.bucket, "Key": key}
    )
    code, document = pipeline.audit()
    assert code == 1
    kinds = {p["kind"] for p in _problems(document)}
    overlaps = {
        (p["partition"], p["first_offset"], p["last_offset"]): p["files"]
        for p in _problems(document)
        if p["kind"] == "overlap"
    }
    # It overlaps the file it was copied from, and the first five offsets of the next one.
    assert set(overlaps) == {(partition, first, last), (partition, last + 1, last + 5)}
    assert key in overlaps[partition, first, last]
    assert all(forged in files for files in overlaps.values())
    # The forged file's rows do not fill its claimed range either.
    assert "file_count" in kinds


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    """A real Prometheus Pushgateway (built by .ci/run from the Go module proxy) on 127.0.0.1."""
    if not Path(PUSHGATEWAY).is_file():
        pytest.skip("no pushgateway binary (.ci/run builds it into ~/.cache/event-loader/bin)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "pushgateway.log").open("wb") as log:
        process = subprocess.Popen(
            [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            eventually(
                lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=2).status == 200,
                30,
                what="the pushgateway to be ready",
                ignoring=(OSError,),
            )
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)


def _pushed(url: str, event: str) -> dict[str, float]:
    """The audit samples the Pushgateway serves for ``event``, by metric name."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith("loader_audit_") and f'event="{event}"' in line:
            found[line.split("{", 1)[0]] = float(line.rsplit(" ", 1)[1])
    return found


def test_the_audit_result_reaches_a_pushgateway(pipeline: Pipeline, pushgateway: str, s3_client: Any) -> None:
    """--pushgateway (the CronJob sets it): 0 problems when complete, the count after a fault, the time."""
    before = time.time()
    code, _ = pipeline.audit(LOADER_AUDIT__PUSHGATEWAY_URL=pushgateway)
    assert code == 0
    first = _pushed(pushgateway, pipeline.spec.name)
    assert first["loader_audit_problems"] == 0
    assert before <= first["loader_audit_last_run_timestamp_seconds"] <= time.time()

    _, _, _, key = _middle(pipeline)
    s3_client.delete_object(Bucket=pipeline.store.bucket, Key=key)
    code, document = pipeline.audit("--pushgateway", pushgateway)
    assert code == 1
    second = _pushed(pushgateway, pipeline.spec.name)
    assert second["loader_audit_problems"] == len(_problems(document)) == 1
    assert (
        second["loader_audit_last_run_timestamp_seconds"] >= first["loader_audit_last_run_timestamp_seconds"]
    )
