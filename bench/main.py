"""``bench/run``: the throughput benchmark of the product issue, in one run.

1. Start the local services that are not configured (Kafka, moto) in a temp dir.
2. Produce N realistic events (an example schema averaging 350-400 bytes of
   JSON) to a fresh topic with many partitions, once.
3. Read that topic three ways: (a) raw ``getmany``, no decoding; (b) a naive
   loader; (c) the real worker subprocess, Kafka → Parquet in S3 with
   checkpoints, until every offset is committed.
4. Produce the same events again to a second topic, compressed (``--compression``,
   zstd by default), and run (d) the same worker on it: d/c is what decompressing
   costs the worker.
5. Decode the same events alone, as JSON and as Avro from a schema registry (e), in this
   process (:mod:`bench.avro_decode`): the Avro path's rate against JSON's; then (f) the
   ``store_updated`` sample events as JSON and as Protobuf from a registry
   (:mod:`bench.protobuf_decode`).
6. Print events/s and MB/s of each, the ratios c/a, c/b, d/c, e's avro/json and f's
   protobuf/json, the worker's peak
   RSS against its budget, and, last, one JSON line for scripts.

Missing a target is reported, not an error (exit 0): the numbers are the
product. A run whose worker did not load every record exactly once exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.avro_decode import DecodeRates, measure_decoding
from bench.consume import FETCH_MAX_RECORDS, Measured, consume_naive, consume_raw
from bench.cpu import CpuMeter, CpuUsage
from bench.produce import Produced, create_topic, pick_schema, produce
from bench.protobuf_decode import measure_protobuf_decoding
from bench.worker_run import FilesCheck, WorkerResult, check_files, run_worker, write_spec
from loader.config.settings import Settings, load_settings
from loader.devstack import DevStack, running_stack
from loader.logs import configure_logging
from loader.store.aws import aws_client

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[1]
BUCKET = "loader-bench"
TARGET_RATIO_RAW = 0.7
STRETCH_RATIO_RAW = 0.85
TARGET_RATIO_NAIVE = 4.0
TARGET_WORKER_CORES = 1.6
"""Cores the worker's processes use together while they run (on this 2-core machine)."""
RSS_HEADROOM_MB = 150
DECODE_EVENTS = 100_000
"""Events decoded each way in the decoding-only comparison (e)."""


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run", description="Raw aiokafka vs a naive loader vs the stream worker, on one topic."
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the topic (default 1000000)")
    parser.add_argument("--partitions", type=int, default=12, help="topic partitions (default 12)")
    parser.add_argument("--budget-mb", type=int, default=256, help="the worker's memory budget (default 256)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the sample events (default 7)")
    parser.add_argument(
        "--max-age-s",
        type=float,
        default=2.0,
        help="the worker spec's rolling.max_age_s: how soon the tail is flushed (default 2)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help="the worker's processes (`loader worker run --processes`; default: one per core)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="worker processes in the group for (c) (default 1: the issue's figure is one worker)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy profile of the worker: a flame graph (.svg), speedscope (.json) or collapsed stacks",
    )
    parser.add_argument(
        "--profile-native",
        action="store_true",
        help="with --profile: C frames too (pyarrow, aiokafka's parser), at about twice the slowdown",
    )
    parser.add_argument(
        "--compression",
        choices=["zstd", "lz4", "snappy", "gzip", "none"],
        default="zstd",
        help="codec of the second topic, read by (d) the worker (default zstd; none skips (d))",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, spec) and print it")
    args = parser.parse_args(argv)
    if min(args.events, args.partitions, args.replicas) < 1 or args.budget_mb < 64:
        parser.error("--events, --partitions and --replicas must be positive, --budget-mb at least 64")
    return args


def _say(message: str) -> None:
    """Progress goes to stderr; stdout holds only the results (its last line is JSON)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _services(work_dir: Path) -> DevStack:
    """Start what is not configured. The benchmark never talks to Snowflake, so it is marked
    configured for the launch only: no fakesnow process is started for nothing."""
    base = load_settings()
    if not base.snowflake.account:
        base = base.model_copy(update={"snowflake": base.snowflake.model_copy(update={"account": "unused"})})
    return DevStack.launch(base, work_dir=work_dir)


def _stop_uninterrupted(stack: DevStack) -> None:
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


def _ensure_bucket(s3: Any) -> None:
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)


async def _worker_on(
    args: argparse.Namespace,
    settings: Settings,
    work_dir: Path,
    service_pids: dict[str, int],
    *,
    name: str,
    topic: str,
    group: str,
    prefix: str,
    schema_path: Path,
    produced: Produced,
) -> tuple[WorkerResult, FilesCheck]:
    """The worker subprocess on ``topic`` until everything is committed, and the check of its files."""
    spec = write_spec(
        work_dir / "specs",
        name=name,
        topic=topic,
        partitions=args.partitions,
        group=group,
        schema_path=schema_path,
        bucket=BUCKET,
        prefix=prefix,
        budget_mb=args.budget_mb,
        max_age_s=args.max_age_s,
    )
    worker = await run_worker(
        settings,
        spec,
        events=produced.events,
        value_bytes=produced.value_bytes,
        work_dir=work_dir,
        timeout_s=max(180.0, produced.events / 5_000),
        service_pids=service_pids,
        replicas=args.replicas,
        worker_processes=args.processes,
        profile=args.profile,
        profile_native=args.profile_native,
    )
    return worker, check_files(aws_client("s3", settings.aws), spec, worker.ends)


async def _measure(
    args: argparse.Namespace, settings: Settings, work_dir: Path, service_pids: dict[str, int]
) -> tuple[
    str, Produced, Measured, Measured, WorkerResult, FilesCheck, tuple[WorkerResult, FilesCheck] | None
]:
    """Produce once, then the three readings of the same topic, then the check of the worker's
    files; then the worker again on a compressed copy of the topic (unless --compression none)."""
    bootstrap = settings.kafka.bootstrap_for("default")
    s3 = aws_client("s3", settings.aws)
    _ensure_bucket(s3)
    run_id = f"{time.strftime('%Y%m%d%H%M%S')}{uuid.uuid4().hex[:6]}"
    name, _average, averages = pick_schema(REPO / "schemas", args.seed)
    schema_path = REPO / "schemas" / f"{name}.avsc"
    sizes = ", ".join(f"{n} {a:.0f} B" for n, a in averages.items())
    _say(f"event schema: {name} (average JSON sizes of the examples: {sizes})")
    topic = f"bench.{name}.{run_id}"
    await create_topic(bootstrap, topic, args.partitions)
    _say(f"producing {args.events:,} events to {topic} ({args.partitions} partitions)")
    produced = await produce(bootstrap, topic, args.partitions, name, schema_path, args.events, args.seed)
    _say(f"produced in {produced.seconds:.1f}s ({produced.events / produced.seconds:,.0f} events/s)")

    _say("(a) raw getmany consumption")
    in_process = CpuMeter({"bench": os.getpid(), **service_pids})
    raw = await consume_raw(bootstrap, topic, args.partitions, produced.events, args.budget_mb, in_process)
    _say(f"(a) {raw.eps:,.0f} events/s")
    _say("(b) naive loader (json.loads, from_pylist, Parquet, put_object, commit)")
    naive = await consume_naive(
        bootstrap,
        topic,
        args.partitions,
        produced.events,
        args.budget_mb,
        group_id=f"bench.{run_id}.naive",
        s3=s3,
        bucket=BUCKET,
        prefix=f"bench/{run_id}/naive",
        meter=in_process,
    )
    _say(f"(b) {naive.eps:,.0f} events/s")

    _say("(c) the stream worker, end to end (subprocess)")
    worker, files = await _worker_on(
        args,
        settings,
        work_dir,
        service_pids,
        name=f"bench_{name}",
        topic=topic,
        group=f"bench.{run_id}.worker",
        prefix=f"bench/{run_id}/worker",
        schema_path=schema_path,
        produced=produced,
    )
    _say(f"(c) {worker.eps:,.0f} events/s, files checked")
    if args.compression == "none":
        return name, produced, raw, naive, worker, files, None
    compressed_topic = f"{topic}.{args.compression}"
    await create_topic(bootstrap, compressed_topic, args.partitions)
    _say(f"producing the same events to {compressed_topic}, {args.compression}-compressed")
    again = await produce(
        bootstrap,
        compressed_topic,
        args.partitions,
        name,
        schema_path,
        args.events,
        args.seed,
        compression=args.compression,
    )
    assert again.events == produced.events
    _say(f"(d) the stream worker on the {args.compression} topic")
    compressed = await _worker_on(
        args,
        settings,
        work_dir / "compressed",
        service_pids,
        name=f"bench_{name}_{args.compression}",
        topic=compressed_topic,
        group=f"bench.{run_id}.worker.{args.compression}",
        prefix=f"bench/{run_id}/worker-{args.compression}",
        schema_path=schema_path,
        produced=again,
    )
    _say(f"(d) {compressed[0].eps:,.0f} events/s, files checked")
    return name, produced, raw, naive, worker, files, compressed


def _ratio(top: float, bottom: float) -> float:
    return top / bottom if bottom > 0 else 0.0


def _worker_cores(worker: WorkerResult) -> float:
    """Cores the worker's own processes (the supervisor and its children) used in its window."""
    if worker.cpu is None:
        return 0.0
    return sum(used for name, used in worker.cpu.cores.items() if name.startswith("worker"))


def _stages_line(worker: WorkerResult) -> str:
    """The worker's own account of where its processes' time went (they overlap: see
    :mod:`loader.worker.stages`)."""
    if not worker.stage_seconds:
        return "stages: not reported"
    stages = ", ".join(f"{stage} {seconds:.2f}" for stage, seconds in worker.stage_seconds.items())
    return f"stage seconds, summed over the processes: {stages}"


def _report(
    args: argparse.Namespace,
    name: str,
    produced: Produced,
    raw: Measured,
    naive: Measured,
    worker: WorkerResult,
    files: FilesCheck,
    compressed: tuple[WorkerResult, FilesCheck] | None,
    decoding: DecodeRates,
    protobuf: DecodeRates,
) -> bool:
    """Print the table and the JSON line; True when the workers' output is correct."""
    ratio_raw = _ratio(worker.eps, raw.eps)
    ratio_naive = _ratio(worker.eps, naive.eps)
    rss_limit = args.budget_mb + RSS_HEADROOM_MB
    # With several processes, forked pages are shared: PSS counts each page once (RSS sums
    # would count the imported code once per process). One process: its kernel peak (VmHWM).
    if args.processes > 1:
        memory_mib, memory_what = worker.peak_pss_mib, "PSS summed over the processes"
    else:
        memory_mib, memory_what = worker.peak_rss_mib, "VmHWM"

    def mark(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    def row(label: str, eps: float, mbps: float, seconds: float, cpu: CpuUsage | None) -> list[str]:
        used = f"      {cpu.describe()}" if cpu is not None else "      cores used: not measured"
        return [f"  {label:<58} {eps:>10,.0f} {mbps:>7.1f} {seconds:>8.2f}", used]

    per_process = " (per process)" if args.replicas > 1 else ""
    lines = [
        "",
        f"Benchmark: {produced.events:,} {name} events in {args.partitions} partitions,"
        f" {produced.avg_value_bytes:.0f} B of JSON on average ({produced.value_bytes / 1e6:,.1f} MB);"
        f" produced in {produced.seconds:.1f}s",
        f"  {'stage':<58} {'events/s':>10} {'MB/s':>7} {'seconds':>8}",
        *row(
            f"(a) raw: getmany(max_records={FETCH_MAX_RECORDS}), no decoding",
            raw.eps,
            raw.mbps,
            raw.seconds,
            raw.cpu,
        ),
        *row(
            f"(b) naive: json.loads, from_pylist, Parquet, S3 ({naive.files} files)",
            naive.eps,
            naive.mbps,
            naive.seconds,
            naive.cpu,
        ),
        *row(
            "(c) worker: Kafka -> Parquet in S3, all committed"
            + (f" x{args.replicas} procs" if args.replicas > 1 else ""),
            worker.eps,
            worker.mbps,
            worker.seconds_from_assignment,
            worker.cpu,
        ),
        "      timed from partition assignment (fetching starts) to the last file_committed, the tail",
        "      drained by SIGTERM once every record was consumed; from process start:"
        f" {worker.eps_from_start:,.0f} events/s in {worker.seconds_from_start:.2f}s"
        f" (startup {worker.startup_s:.2f}s)",
        f"      {_stages_line(worker)}",
    ]
    ratio_compressed = 0.0
    if compressed is not None:
        zipped, zipped_files = compressed
        ratio_compressed = _ratio(zipped.eps, worker.eps)
        lines += [
            *row(
                f"(d) worker on the same events, {args.compression}-compressed batches",
                zipped.eps,
                zipped.mbps,
                zipped.seconds_from_assignment,
                zipped.cpu,
            ),
            f"      d/c = {ratio_compressed:.2f}: the worker's rate on compressed batches against (c);"
            f" output: {zipped_files.files} files, {zipped_files.rows:,} rows",
        ]
    worker_cores = _worker_cores(worker)
    lines += [
        f"  c/a = {ratio_raw:.2f} (target >= {TARGET_RATIO_RAW}: {mark(ratio_raw >= TARGET_RATIO_RAW)};"
        f" stretch >= {STRETCH_RATIO_RAW}: {mark(ratio_raw >= STRETCH_RATIO_RAW)}),"
        f" c/b = {ratio_naive:.2f} (target >= {TARGET_RATIO_NAIVE}:"
        f" {mark(ratio_naive >= TARGET_RATIO_NAIVE)})",
        f"  worker processes used {worker_cores:.2f} cores together in (c)"
        f" (target >= {TARGET_WORKER_CORES}: {mark(worker_cores >= TARGET_WORKER_CORES)})",
        f"  worker peak RSS{per_process} {worker.peak_rss_mib:.0f} MiB (VmHWM summed over its"
        f" {args.processes} process(es) + supervisor, forked pages counted in each; VmRSS sampled every"
        f" 100 ms: max {worker.max_sampled_rss_mib:.0f} MiB)",
        f"  worker peak memory {memory_mib:.0f} MiB ({memory_what}); budget {args.budget_mb} MiB"
        f" + {RSS_HEADROOM_MB} = {rss_limit}: {mark(memory_mib <= rss_limit)}",
        f"  worker output: {files.files} files ({files.data_bytes / 1e6:,.1f} MB), {files.rows:,} rows by"
        f" their footers, {files.dead_letter_files} dead-letter files; early rolls"
        f" {worker.stats.get('early_rolls', '?')}, exit code {worker.exit_code}",
    ]
    problems: list[str] = []
    runs = [("(c)", worker, files)] + ([("(d)", *compressed)] if compressed else [])
    for label, run, checked in runs:
        problems += [f"{label} {p}" for p in [*run.problems, *checked.problems]]
        if not run.completed:
            problems.append(f"{label} the worker did not commit every record: its figures are zero")
        if checked.rows != produced.events:
            problems.append(f"{label} {checked.rows:,} rows in S3 for {produced.events:,} events")
    lines.append(f"  (e) {decoding.describe()}")
    lines.append(f"  (f) {protobuf.describe()}")
    lines += [f"  PROBLEM: {p}" for p in problems] or ["  correctness: every event is in exactly one S3 file"]
    print("\n".join(lines))
    summary = {
        "raw_eps": round(raw.eps, 1),
        "naive_eps": round(naive.eps, 1),
        "worker_eps": round(worker.eps, 1),
        "ratio_raw": round(ratio_raw, 3),
        "ratio_naive": round(ratio_naive, 3),
        "worker_cores": round(worker_cores, 2),
        "stage_seconds": {stage: round(seconds, 2) for stage, seconds in worker.stage_seconds.items()},
        "compression": args.compression,
        "compressed_eps": round(compressed[0].eps, 1) if compressed else None,
        "ratio_compressed": round(ratio_compressed, 3) if compressed else None,
        "peak_rss_mb": round(memory_mib, 1),
        "budget_mb": int(args.budget_mb),
        "decode_json_eps": round(decoding.json_eps, 1),
        "decode_avro_registry_eps": round(decoding.registry_eps, 1),
        "ratio_avro_json_decode": round(decoding.ratio, 3),
        "decode_protobuf_json_eps": round(protobuf.json_eps, 1),
        "decode_protobuf_registry_eps": round(protobuf.registry_eps, 1),
        "ratio_protobuf_json_decode": round(protobuf.ratio, 3),
    }
    print(json.dumps(summary), flush=True)
    return not problems


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 unless the worker's output was wrong or incomplete."""
    args = _args(argv)
    configure_logging("WARNING")
    work_dir = Path(tempfile.mkdtemp(prefix="loader-bench-"))
    if args.profile is not None:
        args.profile = args.profile.resolve()
    try:
        _say(f"starting the local services that are not configured (work dir {work_dir})")
        stack = _services(work_dir / "stack")
        try:
            settings = load_settings(**stack.overrides)
            results = asyncio.run(_measure(args, settings, work_dir, _service_pids(stack)))
        except KeyboardInterrupt:
            _say("interrupted")
            return 130
        finally:
            _say("stopping the services the benchmark started")
            _stop_uninterrupted(stack)
    finally:
        if args.keep:
            _say(f"kept {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    # Decoding alone, in this process once the services are gone: JSON against Avro from a registry.
    name = results[0]
    _say(f"(e) decoding only: JSON and Avro from a registry, {min(args.events, DECODE_EVENTS):,} events")
    decoding = measure_decoding(
        name, REPO / "schemas" / f"{name}.avsc", min(args.events, DECODE_EVENTS), args.seed
    )
    _say(f"(f) decoding only: JSON and Protobuf from a registry, {min(args.events, DECODE_EVENTS):,} events")
    protobuf = measure_protobuf_decoding(min(args.events, DECODE_EVENTS), args.seed)
    ok = _report(args, *results, decoding, protobuf)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
