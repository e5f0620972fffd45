"""(c) The real stream worker, end to end, as a subprocess: Kafka → Parquet in S3 with checkpoints.

The worker runs exactly as deployed (``python -m loader worker run EVENT``),
with a spec written to a temporary folder: the benchmark's topic, a fresh
consumer group, production rolling defaults except a short ``max_age_s`` (so
the tail flushes quickly) and ``deployment.memory_budget_mb`` = the budget.

The clock runs until the group's committed offsets reach the topic's end
offsets, i.e. until every record is in a file in S3 and checkpointed. Start
and end come from the worker's own JSON log: ``partitions_assigned`` (fetching
starts right after it) and the last ``file_committed``.

The tail is drained, not waited for: once the worker's ``/metrics`` count every
record consumed, it gets SIGTERM, on which it rolls, uploads and commits every
open file at once, as in a deployment's rollout. Waiting instead for the last
files' ``max_age_s`` would add up to that age to the clock: a latency setting,
not throughput (with 2 s, up to 40% of a one-million-event run). RSS is read from
``/proc/<pid>/status``: ``VmHWM`` is the kernel's peak; ``VmRSS`` is also
sampled every 100 ms as a cross-check. Correctness is checked cheaply: the
Parquet footers' row counts add up to N and the files' offset ranges tile
every partition exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.cpu import CpuMeter, CpuUsage
from loader.config.settings import Settings
from loader.config.spec import EventSpec, load_spec
from loader.devstack.process import LOOPBACK, free_port
from loader.store.layout import parse_key

__all__ = ["WorkerResult", "check_files", "run_worker", "worker_env", "write_spec"]

KIB = 1024
POLL_S = 0.1
PSS_EVERY_S = 0.5
"""Reading a process's PSS (``smaps_rollup``) walks its page tables: about 3-4 ms of CPU for a
worker process. Every 100 ms over a supervisor and two children, that took a tenth of a core
from the worker it measures; VmRSS and the kernel's VmHWM stay at every poll."""


@dataclass
class WorkerResult:
    """What the worker did, how fast, and at what memory cost."""

    events: int = 0
    value_bytes: int = 0
    completed: bool = False
    seconds_from_assignment: float = 0.0
    seconds_from_start: float = 0.0
    startup_s: float = 0.0
    peak_rss_mib: float = 0.0
    """VmHWM: the kernel's high-water mark of the worker's resident set."""
    max_sampled_rss_mib: float = 0.0
    peak_pss_mib: float = 0.0
    """Peak of the summed PSS of the worker's processes: shared (forked) pages counted once."""
    exit_code: int | None = None
    drain_s: float = 0.0
    """From the SIGTERM (every record consumed) to the last commit: the drain's tail."""
    ends: dict[int, int] = field(default_factory=dict)
    """The topic's end offset of each partition (what "all committed" means)."""
    files_committed: int = 0
    rows_committed: int = 0
    cpu: CpuUsage | None = None
    """Cores used from assignment to the last commit (the worker, the services, the rest)."""
    stats: dict[str, Any] = field(default_factory=dict)
    """The worker's own counters, from its ``worker_stopped`` log line."""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    """Seconds in each stage, summed over the worker's processes (``worker_stopped``)."""
    problems: list[str] = field(default_factory=list)

    @property
    def eps(self) -> float:
        s = self.seconds_from_assignment
        return self.events / s if self.completed and s > 0 else 0.0

    @property
    def mbps(self) -> float:
        s = self.seconds_from_assignment
        return self.value_bytes / 1e6 / s if self.completed and s > 0 else 0.0

    @property
    def eps_from_start(self) -> float:
        s = self.seconds_from_start
        return self.events / s if self.completed and s > 0 else 0.0


def write_spec(
    specs_dir: Path,
    *,
    name: str,
    topic: str,
    partitions: int,
    group: str,
    schema_path: Path,
    bucket: str,
    prefix: str,
    budget_mb: int,
    max_age_s: float,
) -> EventSpec:
    """The worker's spec file: production rolling defaults, except the age and the budget."""
    document = {
        "name": name,
        "description": "Benchmark pipeline (bench/run).",
        "kafka": {"topic": topic, "partitions": partitions, "consumer_group": group},
        "schema": {"path": str(schema_path.resolve())},
        "s3": {"bucket": bucket, "prefix": prefix, "time_partition": "hour"},
        "rolling": {
            "max_records": 2_000_000,
            "max_file_bytes": 128 * 1024 * 1024,
            "max_age_s": max_age_s,
            "row_group_records": 100_000,
        },
        "snowflake": {"database": "BENCH", "schema": "EVENTS", "table": name.upper()},
        "deployment": {"replicas": 1, "memory_budget_mb": budget_mb},
    }
    specs_dir.mkdir(parents=True, exist_ok=True)
    path = specs_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return load_spec(path)


def worker_env(settings: Settings, state_dir: Path, tmp_dir: Path, processes: int = 1) -> dict[str, str]:
    """The worker's environment: the benchmark's services, JSON logs, its own temp and state dirs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOADER_")}
    aws = settings.aws
    assert settings.kafka.bootstrap_servers is not None
    env |= {
        "LOADER_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "LOADER_AWS__REGION": aws.region,
        "LOADER_LOG_FORMAT": "json",
        "LOADER_LOG_LEVEL": "INFO",
        # Its own state dir: a `loader dev up` stack recorded elsewhere must not leak in.
        "LOADER_STATE_DIR": str(state_dir),
        # No /healthz, /readyz, /metrics listener unless asked: run_worker gives each worker a
        # free loopback port of its own (its /metrics tell when every record is consumed).
        "LOADER_WEB_PORT": "0",
        "LOADER_WORKER_PROCESSES": str(processes),
        # As in the container image: fewer malloc arenas, less fragmentation across threads.
        "MALLOC_ARENA_MAX": "2",
        # Spool files land in the run's temp dir, which is removed at the end.
        "TMPDIR": str(tmp_dir),
    }
    if aws.endpoint_url:
        env["LOADER_AWS__ENDPOINT_URL"] = aws.endpoint_url
    if aws.access_key_id and aws.secret_access_key:
        env["LOADER_AWS__ACCESS_KEY_ID"] = aws.access_key_id.get_secret_value()
        env["LOADER_AWS__SECRET_ACCESS_KEY"] = aws.secret_access_key.get_secret_value()
    return env


def _status_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in KiB (empty once the process is gone)."""
    values: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def _pss_kib(pid: int) -> int:
    """Proportional set size of ``pid`` in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/<pid>/task/*/children)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                queue.extend(int(child) for child in task.read_text().split())
            except OSError:
                continue
    return found


def _log_events(path: Path) -> Iterator[dict[str, Any]]:
    """The worker's JSON log lines (other lines, e.g. library warnings, are skipped)."""
    with path.open("rb") as lines:
        for line in lines:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    yield event


def _when(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["timestamp"])).timestamp()


async def _offsets(admin: AIOKafkaAdminClient, group: str, tps: list[TopicPartition]) -> dict[int, int]:
    committed = await admin.list_consumer_group_offsets(group, partitions=tps)
    return {tp.partition: (committed[tp].offset if tp in committed else -1) for tp in tps}


def _consumed(port: int, event: str) -> float:
    """``loader_records_consumed_total`` of ``event`` on a worker's ``/metrics`` (0 until it
    answers)."""
    prefix = f'loader_records_consumed_total{{event="{event}"}} '
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=2) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith(prefix):
                    return float(line[len(prefix) :])
    except OSError:
        pass
    return 0.0


async def _end_offsets(bootstrap: str, tps: list[TopicPartition]) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


def _start_profiler(pid: int, out: Path, *, native: bool) -> subprocess.Popen[bytes] | None:
    """py-spy on the worker and its children, all threads, idle ones included; ``native``
    adds C frames (pyarrow, aiokafka's record parser) at about twice the slowdown."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print(f"py-spy not found (pip install py-spy): no profile written to {out}", file=sys.stderr)
        return None
    formats = {".svg": "flamegraph", ".json": "speedscope"}
    fmt = formats.get(out.suffix, "raw")  # raw: collapsed stacks, one line each, for grep and sort
    return subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "100",
            "--threads",
            "--subprocesses",  # --processes N: the children do the work
            "--idle",  # waits show too: where a thread sleeps is what this looks for
            *(["--native"] if native else []),
            "--format",
            fmt,
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _spawn(spec: EventSpec, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``loader worker run`` exactly as deployed, its own session, its log (stdout+stderr) in a file."""
    assert spec.source_path is not None
    command = ["-m", "loader", "worker", "run", spec.name, "--specs", str(spec.source_path.parent)]
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, *command],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def run_worker(
    settings: Settings,
    spec: EventSpec,
    *,
    events: int,
    value_bytes: int,
    work_dir: Path,
    timeout_s: float,
    service_pids: dict[str, int],
    replicas: int = 1,
    worker_processes: int = 1,
    profile: Path | None = None,
    profile_native: bool = False,
) -> WorkerResult:
    """Run the worker (``replicas`` processes in its group) until it has consumed every record,
    then SIGTERM it (it drains) and wait until every record is committed (or ``timeout_s``)."""
    bootstrap = settings.kafka.bootstrap_for(spec.kafka.cluster)
    tps = [TopicPartition(spec.kafka.topic, p) for p in range(spec.kafka.partitions)]
    ends = await _end_offsets(bootstrap, tps)
    (work_dir / "worker-tmp").mkdir(parents=True, exist_ok=True)
    env = worker_env(settings, work_dir / "worker-state", work_dir / "worker-tmp", worker_processes)
    logs = [work_dir / f"worker-{i}.log" for i in range(replicas)]
    ports = [free_port() for _ in logs]
    result = WorkerResult(events=events, value_bytes=value_bytes, ends=ends)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    started_at = time.time()
    processes = [
        _spawn(spec, env | {"LOADER_WEB_PORT": str(port)}, log) for log, port in zip(logs, ports, strict=True)
    ]
    profiler = _start_profiler(processes[0].pid, profile, native=profile_native) if profile else None
    names = ["worker"] if replicas == 1 else [f"worker-{i}" for i in range(replicas)]
    meter = CpuMeter({**dict(zip(names, (p.pid for p in processes), strict=True)), **service_pids})
    metering = draining = False
    signalled_at = 0.0
    max_rss = dict.fromkeys(names, 0)
    hwm = dict.fromkeys(names, 0)
    max_pss = dict.fromkeys(names, 0)

    pss_read_at = 0.0

    def sample() -> None:
        nonlocal pss_read_at
        # A worker with --processes N is a supervisor and N forked children: count the tree.
        with_pss = time.monotonic() - pss_read_at >= PSS_EVERY_S
        if with_pss:
            pss_read_at = time.monotonic()
        for name, process in zip(names, processes, strict=True):
            pids = _process_tree(process.pid)
            tree = [_status_kib(pid) for pid in pids]
            max_rss[name] = max(max_rss[name], sum(s.get("VmRSS", 0) for s in tree))
            hwm[name] = max(hwm[name], sum(s.get("VmHWM", 0) for s in tree))
            if with_pss:
                max_pss[name] = max(max_pss[name], sum(_pss_kib(pid) for pid in pids))

    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not metering and any(b'"partitions_assigned"' in log.read_bytes() for log in logs):
                # Fetching starts now: measure CPU from here to the last commit, over every
                # process of each worker (a supervisor and its children with --processes).
                tree = {
                    (name if i == 0 else f"{name}.{i}"): pid
                    for name, process in zip(names, processes, strict=True)
                    for i, pid in enumerate(_process_tree(process.pid))
                }
                meter = CpuMeter({**tree, **service_pids})
                meter.start()
                metering = True
            sample()
            if metering:
                meter.sample()
            if not draining:
                exited = [p.returncode for p in processes if p.poll() is not None]
                if exited:
                    result.problems.append(f"a worker exited early with code {exited[0]}")
                    break
                consumed = await asyncio.gather(
                    *(asyncio.to_thread(_consumed, port, spec.name) for port in ports)
                )
                if sum(consumed) >= events:
                    for process in processes:
                        process.send_signal(signal.SIGTERM)
                    draining = True
                    signalled_at = time.time()
            if await _offsets(admin, spec.consumer_group, tps) == ends:
                result.completed = True
                break
            await asyncio.sleep(POLL_S)
        else:
            result.problems.append(f"not every record was committed within {timeout_s:.0f}s")
        sample()
    finally:
        await admin.close()
        result.exit_code = _stop(processes, result.problems, signalled=draining)
        if profiler is not None:
            profiler.wait(timeout=120)
    result.peak_rss_mib = max(hwm.values()) / KIB
    result.max_sampled_rss_mib = max(max_rss.values()) / KIB
    result.peak_pss_mib = max(max_pss.values()) / KIB
    _read_logs(logs, started_at, result)
    if result.completed:
        ended = started_at + result.seconds_from_start  # the last file_committed
        result.cpu = meter.stop(work_ended=ended) if metering else None
        if draining:
            result.drain_s = max(0.0, ended - signalled_at)
    return result


def _stop(processes: list[subprocess.Popen[bytes]], problems: list[str], *, signalled: bool) -> int:
    """SIGTERM every worker (they roll and commit what they hold), unless ``signalled`` already
    (a second one would cut the drain short), and wait; the worst exit code."""
    for process in processes:
        if process.poll() is None and not signalled:
            process.send_signal(signal.SIGTERM)
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(timeout=60))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait())
            problems.append("a worker did not stop within 60s of SIGTERM")
    return max(codes, key=abs)


def _read_logs(logs: list[Path], started_at: float, result: WorkerResult) -> None:
    """Timings and counters from the workers' logs: the first assignment, the last commit."""
    assigned: list[float] = []
    commits: list[float] = []
    for log_path in logs:
        first_assignment = None
        for event in _log_events(log_path):
            name = event.get("event")
            if name == "partitions_assigned" and first_assignment is None:
                first_assignment = _when(event)
            elif name == "file_committed":
                commits.append(_when(event))
                result.files_committed += 1
                result.rows_committed += int(event.get("rows", 0))
            elif name == "worker_stopped":
                for key, value in event.items():
                    if isinstance(value, int) and key not in ("event", "timestamp", "level"):
                        result.stats[key] = result.stats.get(key, 0) + value
                for stage, seconds in (event.get("stage_seconds") or {}).items():
                    result.stage_seconds[stage] = result.stage_seconds.get(stage, 0.0) + float(seconds)
            elif event.get("level") in ("error", "critical"):
                result.problems.append(f"worker logged {name}: {event.get('error') or event.get('reason')}")
        if first_assignment is not None:
            assigned.append(first_assignment)
    if not assigned or not commits:
        result.completed = False
        result.problems.append(f"no partitions_assigned/file_committed lines in {logs[0].parent}")
        return
    result.startup_s = min(assigned) - started_at
    result.seconds_from_assignment = max(commits) - min(assigned)
    result.seconds_from_start = max(commits) - started_at


@dataclass(frozen=True)
class FilesCheck:
    """What is in S3 under the spec's prefixes."""

    files: int
    rows: int
    data_bytes: int
    dead_letter_files: int
    problems: list[str]


def _footer_rows(s3: Any, bucket: str, key: str) -> int:
    """A Parquet file's row count from its footer alone (two small range reads at most)."""
    tail: bytes = s3.get_object(Bucket=bucket, Key=key, Range="bytes=-65536")["Body"].read()
    footer = int.from_bytes(tail[-8:-4], "little")
    if footer + 8 > len(tail):
        tail = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=-{footer + 8}")["Body"].read()
    rows: int = pq.read_metadata(io.BytesIO(b"PAR1" + tail[-(footer + 8) :])).num_rows
    return rows


def _keys(s3: Any, bucket: str, prefix: str) -> Iterator[tuple[str, int]]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            yield item["Key"], int(item["Size"])


def check_files(s3: Any, spec: EventSpec, ends: dict[int, int]) -> FilesCheck:
    """Footer row counts, and whether the files' ranges tile each partition exactly once."""
    bucket = spec.s3.bucket
    rows = size = files = 0
    problems: list[str] = []
    ranges: dict[int, list[tuple[int, int]]] = {}
    for key, length in _keys(s3, bucket, spec.data_prefix):
        parsed = parse_key(key)
        if parsed is None:
            problems.append(f"unexpected key {key}")
            continue
        files += 1
        size += length
        count = _footer_rows(s3, bucket, key)
        rows += count
        ranges.setdefault(parsed.partition, []).append((parsed.first_offset, parsed.last_offset))
        if count != parsed.last_offset - parsed.first_offset + 1:
            problems.append(f"{key}: {count} rows for {parsed.last_offset - parsed.first_offset + 1} offsets")
    for partition, end in ends.items():
        expected = 0
        for first, last in sorted(ranges.get(partition, [])):
            if first != expected:
                problems.append(f"partition {partition}: offsets {expected}..{first - 1} not covered once")
            expected = last + 1
        if expected != end:
            problems.append(f"partition {partition}: files end at {expected}, the topic at {end}")
    dead = sum(1 for _ in _keys(s3, bucket, spec.dead_letter_prefix))
    if dead:
        problems.append(f"{dead} dead-letter files (the sample events are all valid)")
    return FilesCheck(files, rows, size, dead, problems)
