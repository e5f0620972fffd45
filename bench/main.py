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
``--scaling`` runs the scaling table (:mod:`bench.scaling`) instead.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import uuid
from pathlib import Path

from bench.avro_decode import DecodeRates, measure_decoding
from bench.consume import FETCH_MAX_RECORDS, Measured, consume_naive, consume_raw
from bench.cpu import CpuMeter, CpuUsage
from bench.harness import (
    BUCKET,
    REPO,
    ensure_bucket,
    say,
    with_services,
    worker_on,
    worker_problems,
)
from bench.produce import Produced, create_topic, pick_schema, produce
from bench.protobuf_decode import measure_protobuf_decoding
from bench.scaling import DEFAULT_BUDGET_MB, DEFAULT_EVENTS, run_scaling
from bench.worker_run import FilesCheck, WorkerResult
from loader.config.settings import Settings
from loader.logs import configure_logging
from loader.store.aws import aws_client

__all__ = ["main"]

TARGET_RATIO_RAW = 0.7
STRETCH_RATIO_RAW = 0.85
TARGET_RATIO_NAIVE = 4.0
TARGET_WORKER_CORES = 1.6
"""Cores the worker's processes use together while they run (on this 2-core machine)."""
RSS_HEADROOM_MB = 150
EVENTS = 2_000_000
"""Events in the topic by default. The worker's window has fixed costs, the first fetch after
assignment and the drain (the last files' uploads and commits, about half a second): with a
million events, a window of under 4 s, they were a seventh of it; with two, under a tenth."""
DECODE_EVENTS = 100_000
"""Events decoded each way in the decoding-only comparison (e)."""


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run", description="Raw aiokafka vs a naive loader vs the stream worker, on one topic."
    )
    parser.add_argument(
        "--events",
        type=int,
        help=f"events in the topic (default {EVENTS:,}; with --scaling, {DEFAULT_EVENTS:,} per ~400 B topic)",
    )
    parser.add_argument("--partitions", type=int, default=12, help="topic partitions (default 12)")
    parser.add_argument(
        "--budget-mb",
        type=int,
        help=f"the worker's memory budget (default 256; with --scaling, {DEFAULT_BUDGET_MB})",
    )
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
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="instead, the worker alone for 1, 2, 4 processes x 6, 12, 48 partitions x ~400 B and ~4 KB"
        " events, in one table (it sets partitions and processes itself)",
    )
    args = parser.parse_args(argv)
    if args.events is None:
        args.events = DEFAULT_EVENTS if args.scaling else EVENTS
    if args.budget_mb is None:
        args.budget_mb = DEFAULT_BUDGET_MB if args.scaling else 256
    fixed = ("partitions", "processes", "replicas", "profile", "compression")
    if args.scaling and (given := [n for n in fixed if getattr(args, n) != parser.get_default(n)]):
        parser.error(f"--scaling sets its own grid: drop --{', --'.join(given)}")
    if min(args.events, args.partitions, args.replicas) < 1 or args.budget_mb < 64:
        parser.error("--events, --partitions and --replicas must be positive, --budget-mb at least 64")
    return args


async def _worker_on(
    args: argparse.Namespace,
    settings: Settings,
    work_dir: Path,
    pids: dict[str, int],
    *,
    name: str,
    topic: str,
    group: str,
    prefix: str,
    schema_path: Path,
    produced: Produced,
) -> tuple[WorkerResult, FilesCheck]:
    """The worker as the command line asks for it, on ``topic``, and the check of its files."""
    return await worker_on(
        settings,
        work_dir,
        pids,
        produced,
        name=name,
        topic=topic,
        partitions=args.partitions,
        group=group,
        prefix=prefix,
        schema_path=schema_path,
        budget_mb=args.budget_mb,
        max_age_s=args.max_age_s,
        processes=args.processes,
        replicas=args.replicas,
        profile=args.profile,
        profile_native=args.profile_native,
    )


async def _measure(
    args: argparse.Namespace, settings: Settings, work_dir: Path, pids: dict[str, int]
) -> tuple[
    str, Produced, Measured, Measured, WorkerResult, FilesCheck, tuple[WorkerResult, FilesCheck] | None
]:
    """Produce once, then the three readings of the same topic, then the check of the worker's
    files; then the worker again on a compressed copy of the topic (unless --compression none)."""
    bootstrap = settings.kafka.bootstrap_for("default")
    s3 = aws_client("s3", settings.aws)
    ensure_bucket(s3)
    run_id = f"{time.strftime('%Y%m%d%H%M%S')}{uuid.uuid4().hex[:6]}"
    name, _average, averages = pick_schema(REPO / "schemas", args.seed)
    schema_path = REPO / "schemas" / f"{name}.avsc"
    sizes = ", ".join(f"{n} {a:.0f} B" for n, a in averages.items())
    say(f"event schema: {name} (average JSON sizes of the examples: {sizes})")
    topic = f"bench.{name}.{run_id}"
    await create_topic(bootstrap, topic, args.partitions)
    say(f"producing {args.events:,} events to {topic} ({args.partitions} partitions)")
    produced = await produce(bootstrap, {topic: args.partitions}, name, schema_path, args.events, args.seed)
    say(f"produced in {produced.seconds:.1f}s ({produced.events / produced.seconds:,.0f} events/s)")

    say("(a) raw getmany consumption")
    in_process = CpuMeter({"bench": os.getpid(), **pids})
    raw = await consume_raw(bootstrap, topic, args.partitions, produced.events, args.budget_mb, in_process)
    say(f"(a) {raw.eps:,.0f} events/s")
    say("(b) naive loader (json.loads, from_pylist, Parquet, put_object, commit)")
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
    say(f"(b) {naive.eps:,.0f} events/s")

    say("(c) the stream worker, end to end (subprocess)")
    worker, files = await _worker_on(
        args,
        settings,
        work_dir,
        pids,
        name=f"bench_{name}",
        topic=topic,
        group=f"bench.{run_id}.worker",
        prefix=f"bench/{run_id}/worker",
        schema_path=schema_path,
        produced=produced,
    )
    say(f"(c) {worker.eps:,.0f} events/s, files checked")
    if args.compression == "none":
        return name, produced, raw, naive, worker, files, None
    compressed_topic = f"{topic}.{args.compression}"
    await create_topic(bootstrap, compressed_topic, args.partitions)
    say(f"producing the same events to {compressed_topic}, {args.compression}-compressed")
    again = await produce(
        bootstrap,
        {compressed_topic: args.partitions},
        name,
        schema_path,
        args.events,
        args.seed,
        compression=args.compression,
    )
    assert again.events == produced.events
    say(f"(d) the stream worker on the {args.compression} topic")
    compressed = await _worker_on(
        args,
        settings,
        work_dir / "compressed",
        pids,
        name=f"bench_{name}_{args.compression}",
        topic=compressed_topic,
        group=f"bench.{run_id}.worker.{args.compression}",
        prefix=f"bench/{run_id}/worker-{args.compression}",
        schema_path=schema_path,
        produced=again,
    )
    say(f"(d) {compressed[0].eps:,.0f} events/s, files checked")
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
        "      timed (cores too) from partition assignment (fetching starts) to the last file_committed,",
        f"      the tail drained by SIGTERM once every record was consumed ({worker.drain_s:.2f}s from the"
        f" signal to the last commit); from process start: {worker.eps_from_start:,.0f} events/s in"
        f" {worker.seconds_from_start:.2f}s (startup {worker.startup_s:.2f}s)",
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
        problems += [f"{label} {p}" for p in worker_problems(run, checked, produced.events)]
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
        "worker_drain_s": round(worker.drain_s, 2),
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
    if args.scaling:
        return run_scaling(args)
    if args.profile is not None:
        args.profile = args.profile.resolve()
    results = with_services(args.keep, functools.partial(_measure, args))
    if results is None:
        return 130
    # Decoding alone, in this process once the services are gone: JSON against Avro from a registry.
    name = results[0]
    say(f"(e) decoding only: JSON and Avro from a registry, {min(args.events, DECODE_EVENTS):,} events")
    decoding = measure_decoding(
        name, REPO / "schemas" / f"{name}.avsc", min(args.events, DECODE_EVENTS), args.seed
    )
    say(f"(f) decoding only: JSON and Protobuf from a registry, {min(args.events, DECODE_EVENTS):,} events")
    protobuf = measure_protobuf_decoding(min(args.events, DECODE_EVENTS), args.seed)
    ok = _report(args, *results, decoding, protobuf)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
