"""``bench/run`` end to end, small: the session's services, a correct run, a full summary, nothing left."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from bench.harness import BUCKET, REPO
from loader.devstack import DevStack
from tests.integration.workers import cli_env

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MARKER = "LOADER_BENCH_SMOKE_RUN"
"""An environment variable every process of the run inherits: finds any it left running."""


def _bench_keys(s3: S3Client) -> set[str]:
    """Every object the benchmarks wrote into the session's S3 so far."""
    if BUCKET not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        return set()
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="bench/")
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def _topics(bootstrap: str) -> set[str]:
    """The topics on the session's Kafka."""

    async def listed() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    return asyncio.run(listed())


def _processes_with(marker: str) -> list[int]:
    """Pids of live processes whose environment holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours
            continue
        if marker.encode() in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def test_bench_run_small_is_correct_reports_its_figures_and_leaves_nothing(
    dev_stack: DevStack, s3_client: S3Client, tmp_path: Path
) -> None:
    """A small bench/run on the session's Kafka and moto exits 0, finds every event in exactly one
    S3 file, prints positive rates and stage times in its JSON line, and leaves no process or temp dir."""
    settings = dev_stack.settings
    assert settings.kafka.bootstrap_servers is not None
    keys_before, topics_before = _bench_keys(s3_client), _topics(settings.kafka.bootstrap_servers)
    temp = tmp_path / "tmp"
    temp.mkdir()
    marker = uuid.uuid4().hex
    env = cli_env(settings, LOADER_STATE_DIR=str(tmp_path / "state"))
    if settings.schema_registry.url:  # else bench/run would start a registry of its own
        env["LOADER_SCHEMA_REGISTRY__URL"] = settings.schema_registry.url
    env |= {"PYTHON": sys.executable, "TMPDIR": str(temp), MARKER: marker}
    command = ["--events", "20000", "--partitions", "4", "--compression", "none", "--budget-mb", "512"]
    result = subprocess.run(
        [str(REPO / "bench" / "run"), *command],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=180,
        check=False,
    )
    output = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"

    assert result.returncode == 0, output
    assert "correctness: every event is in exactly one S3 file" in result.stdout, output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    for rate in ("worker_eps", "raw_eps", "naive_eps"):
        assert summary[rate] > 0, summary
    stages = summary["stage_seconds"]
    assert isinstance(stages, dict), summary
    assert stages["decode"] > 0, stages
    assert stages["parquet"] > 0, stages
    # It used the session's services: its topic is on this Kafka, the worker's files in this S3.
    new_topics = _topics(settings.kafka.bootstrap_servers) - topics_before
    assert any(topic.startswith("bench.") for topic in new_topics), sorted(new_topics)
    written = _bench_keys(s3_client) - keys_before
    assert any("/worker/" in key and key.endswith(".parquet") for key in written), sorted(written)[:20]
    assert not _processes_with(f"{MARKER}={marker}"), "processes of the run are still alive"
    assert not list(temp.iterdir()), "the run left files in its temp dir"
