"""What every ``bench/run`` mode shares: the local services, the bucket, progress lines, and one
checked run of the worker on a topic.

The main comparison (:mod:`bench.main`) and the scaling table (:mod:`bench.scaling`)
both start the services that are not configured, write into one bucket and run
the real worker on a topic they filled, then check its files.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError

from bench.produce import Produced
from bench.worker_run import FilesCheck, WorkerResult, check_files, run_worker, write_spec
from loader.config.settings import Settings, load_settings
from loader.devstack import DevStack, running_stack
from loader.store.aws import aws_client

__all__ = [
    "BUCKET",
    "REPO",
    "ensure_bucket",
    "say",
    "wait_for_group_coordinator",
    "with_services",
    "worker_on",
    "worker_problems",
]

REPO = Path(__file__).resolve().parents[1]
BUCKET = "loader-bench"
T = TypeVar("T")


def say(message: str) -> None:
    """Progress goes to stderr; stdout holds only the results (its last line is JSON)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _start_services(work_dir: Path) -> DevStack:
    """Start what is not configured. The benchmark never talks to Snowflake, so it is marked
    configured for the launch only: no fakesnow process is started for nothing."""
    base = load_settings()
    if not base.snowflake.account:
        base = base.model_copy(update={"snowflake": base.snowflake.model_copy(update={"account": "unused"})})
    return DevStack.launch(base, work_dir=work_dir)


def _stop_services(stack: DevStack) -> None:
    """Stop the services with Ctrl-C ignored: a second Ctrl-C must not leave a broker running."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        stack.stop()
    finally:
        signal.signal(signal.SIGINT, previous)


def _service_pids(stack: DevStack) -> dict[str, int]:
    """Kafka's and moto's pids when we know them (started here, or by `loader dev up`)."""
    services = list(stack.services)
    with contextlib.suppress(Exception):  # a stale or unreadable state file: just no pids
        detached = running_stack()
        if detached is not None:
            services += detached.services
    return {s.name: s.pid for s in services if s.name in ("kafka", "moto")}


def with_services(
    keep: bool, measure: Callable[[Settings, Path, dict[str, int]], Coroutine[Any, Any, T]]
) -> T | None:
    """Run ``measure(settings, work_dir, service pids)`` in a temp work dir, with the services that
    are not configured started for it; stop them and remove the dir (unless ``keep``) after.
    None when it was interrupted (Ctrl-C)."""
    work_dir = Path(tempfile.mkdtemp(prefix="loader-bench-"))
    try:
        say(f"starting the local services that are not configured (work dir {work_dir})")
        stack = _start_services(work_dir / "stack")
        try:
            return asyncio.run(measure(load_settings(**stack.overrides), work_dir, _service_pids(stack)))
        except KeyboardInterrupt:
            say("interrupted")
            return None
        finally:
            say("stopping the services the benchmark started")
            _stop_services(stack)
    finally:
        if keep:
            say(f"kept {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)


def ensure_bucket(s3: Any) -> None:
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)


async def wait_for_group_coordinator(bootstrap: str, timeout_s: float = 60.0) -> None:
    """Wait until the broker has a group coordinator. A fresh broker creates its offsets topic on
    the first request for one and answers "not available" meanwhile, which would fail the first
    poll of a worker's committed offsets."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                await admin.find_coordinator("bench")
            except GroupCoordinatorNotAvailableError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
            else:
                return
    finally:
        await admin.close()


async def worker_on(
    settings: Settings,
    work_dir: Path,
    pids: dict[str, int],
    produced: Produced,
    *,
    name: str,
    topic: str,
    partitions: int,
    group: str,
    prefix: str,
    schema_path: Path,
    budget_mb: int,
    max_age_s: float,
    processes: int,
    replicas: int = 1,
    profile: Path | None = None,
    profile_native: bool = False,
) -> tuple[WorkerResult, FilesCheck]:
    """The worker subprocess on ``topic`` until everything is committed, and the check of its files."""
    spec = write_spec(
        work_dir / "specs",
        name=name,
        topic=topic,
        partitions=partitions,
        group=group,
        schema_path=schema_path,
        bucket=BUCKET,
        prefix=prefix,
        budget_mb=budget_mb,
        max_age_s=max_age_s,
    )
    worker = await run_worker(
        settings,
        spec,
        events=produced.events,
        value_bytes=produced.value_bytes,
        work_dir=work_dir,
        timeout_s=max(180.0, produced.events / 5_000),
        service_pids=pids,
        replicas=replicas,
        worker_processes=processes,
        profile=profile,
        profile_native=profile_native,
    )
    return worker, check_files(aws_client("s3", settings.aws), spec, worker.ends)


def worker_problems(worker: WorkerResult, files: FilesCheck, events: int) -> list[str]:
    """What was wrong with one worker run: its own problems, its files', an incomplete run, and
    a row count other than the events produced (empty: every event is in exactly one file)."""
    problems = [*worker.problems, *files.problems]
    if not worker.completed:
        problems.append("the worker did not commit every record: its figures are zero")
    if files.rows != events:
        problems.append(f"{files.rows:,} rows in S3 for {events:,} events")
    return problems
