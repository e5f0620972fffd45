"""``bench/run --scaling``: how the worker's cost grows with work, as one table from one run.

The grid is the full cross product: worker processes 1, 2 and 4 (``loader worker
run --processes``), topics of 6, 12 and 48 partitions, and two event sizes:

- ~400 B: the example schema the main benchmark picks (``store_updated``);
- ~4 KB: ``bench/schemas/menu_published.avsc``, a store's whole menu (sections of
  items with prices, options and allergens), filled by the same sample generator.
  Its size comes from nested arrays, as a real menu event's does, not from padding.

Each size's events are generated once into its three topics (one per partition
count), and each topic is read by each process count with a fresh consumer group
and S3 prefix. The 4 KB topics hold a fifth of the events, twice the MB (see
:data:`LARGE_MB_FACTOR`). A cell whose process count the budget cannot carry
(:func:`affordable_processes` would run fewer) gets the least budget that carries
it, shown in its row. Every cell's files are checked like the main mode's: a wrong
cell is a problem and the exit code is 1.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import (
    REPO,
    ensure_bucket,
    say,
    wait_for_group_coordinator,
    with_services,
    worker_on,
    worker_problems,
)
from bench.produce import Produced, average_value_bytes, create_topic, pick_schema, produce
from bench.worker_run import FilesCheck, WorkerResult
from loader.config.settings import Settings
from loader.store.aws import aws_client
from loader.worker.pool import affordable_processes

__all__ = [
    "DEFAULT_BUDGET_MB",
    "DEFAULT_EVENTS",
    "LARGE_EVENT",
    "LARGE_MB_FACTOR",
    "LARGE_SCHEMA",
    "PARTITIONS",
    "PROCESSES",
    "Cell",
    "CellResult",
    "EventKind",
    "budget_for",
    "event_kinds",
    "grid",
    "run_scaling",
    "summary",
    "table",
]

PROCESSES = (1, 2, 4)
PARTITIONS = (6, 12, 48)
DEFAULT_EVENTS = 1_000_000
"""~400 B events per topic, as in the main mode: the fastest cells' windows stay over 3 s."""
DEFAULT_BUDGET_MB = 512
LARGE_EVENT = "menu_published"
LARGE_SCHEMA = REPO / "bench" / "schemas" / f"{LARGE_EVENT}.avsc"
LARGE_MB_FACTOR = 2.0
"""The large topics' MB against the small ones'. The worker reads large events faster per MB: with
as many MB (a tenth of the events) the 4 KB cells took 5-7 s, under four ages (:data:`AGE_BOUND`)."""


@dataclass(frozen=True)
class EventKind:
    """One event size of the grid: its schema, its average JSON size and how many go in a topic."""

    name: str
    schema_path: Path
    avg_value_bytes: float
    events: int

    @property
    def label(self) -> str:
        size = self.avg_value_bytes
        return f"{size:.0f} B" if size < 1000 else f"{size / 1000:.1f} KB"


@dataclass(frozen=True)
class Cell:
    """One measurement: an event size, a topic's partitions, the worker's processes and budget."""

    kind: EventKind
    partitions: int
    processes: int
    budget_mb: int

    @property
    def label(self) -> str:
        return f"{self.kind.name}, {self.partitions} partitions, {self.processes} process(es)"


@dataclass(frozen=True)
class CellResult:
    """What one cell measured (zeros when the worker did not finish) and what was wrong with it."""

    cell: Cell
    events: int
    eps: float
    mbps: float
    seconds: float
    worker_cores: float | None
    """Cores used by the worker's processes (supervisor and children) while it ran."""
    worker_cpu_s: float | None
    kafka_cores: float | None
    files: int
    problems: tuple[str, ...]

    @classmethod
    def of(cls, cell: Cell, produced: Produced, worker: WorkerResult, files: FilesCheck) -> CellResult:
        cpu = worker.cpu
        cores = sum(used for name, used in cpu.cores.items() if name.startswith("worker")) if cpu else None
        return cls(
            cell=cell,
            events=produced.events,
            eps=worker.eps,
            mbps=worker.mbps,
            seconds=worker.seconds_from_assignment,
            worker_cores=cores,
            worker_cpu_s=cores * cpu.seconds if cpu is not None and cores is not None else None,
            kafka_cores=cpu.cores.get("kafka") if cpu else None,
            files=files.files,
            problems=tuple(worker_problems(worker, files, produced.events)),
        )

    @property
    def us_per_event(self) -> float | None:
        """The worker's CPU time per event, in core-microseconds: its cost, whatever the cores."""
        if self.worker_cpu_s is None or not self.events:
            return None
        return self.worker_cpu_s / self.events * 1e6


def event_kinds(small: str, small_avg: float, large_avg: float, events: int) -> list[EventKind]:
    """The two sizes: ``events`` of ``small`` per topic, and :data:`LARGE_MB_FACTOR` times their MB
    of the large events."""
    return [
        EventKind(small, REPO / "schemas" / f"{small}.avsc", small_avg, events),
        EventKind(
            LARGE_EVENT,
            LARGE_SCHEMA,
            large_avg,
            max(1, round(events * small_avg * LARGE_MB_FACTOR / large_avg)),
        ),
    ]


def budget_for(processes: int, budget_mb: int) -> int:
    """The least budget from ``budget_mb`` up on which the worker runs all ``processes`` (on a
    smaller one it runs fewer and says so: each needs its interpreter and a floor of buffers)."""
    budget = budget_mb
    while affordable_processes(budget, processes) < processes:
        budget += 1
    return budget


def grid(kinds: list[EventKind], budget_mb: int) -> list[Cell]:
    """Every size x partitions x processes, processes varying fastest: one topic serves a run of
    consecutive cells."""
    return [
        Cell(kind, partitions, processes, budget_for(processes, budget_mb))
        for kind, partitions, processes in itertools.product(kinds, PARTITIONS, PROCESSES)
    ]


def _cell(value: float | None, spec: str, width: int) -> str:
    return f"{value:>{width}{spec}}" if value is not None else f"{'-':>{width}}"


def table(results: list[CellResult]) -> list[str]:
    """The printed table: one line per cell, a blank line between topics, then what the columns
    mean."""
    columns = (
        f"  {'events':<8} {'partitions':>10} {'processes':>9} {'budget MB':>9} {'events/s':>10}"
        f" {'MB/s':>7} {'seconds':>8} {'x 1 proc':>8} {'cores':>6} {'us/event':>8} {'kafka':>6}"
        f" {'files':>6}"
    )
    one_process = {
        (r.cell.kind.name, r.cell.partitions): r.eps for r in results if r.cell.processes == PROCESSES[0]
    }
    lines = [columns]
    previous: tuple[str, int] | None = None
    for r in results:
        topic = (r.cell.kind.name, r.cell.partitions)
        if previous is not None and topic != previous:
            lines.append("")
        previous = topic
        base = one_process.get(topic, 0.0)
        speedup = r.eps / base if base else None
        lines.append(
            f"  {r.cell.kind.label:<8} {r.cell.partitions:>10} {r.cell.processes:>9} {r.cell.budget_mb:>9}"
            f" {r.eps:>10,.0f} {r.mbps:>7.1f} {r.seconds:>8.2f} {_cell(speedup, '.2f', 8)}"
            f" {_cell(r.worker_cores, '.2f', 6)} {_cell(r.us_per_event, '.1f', 8)}"
            f" {_cell(r.kafka_cores, '.2f', 6)} {r.files:>6}"
        )
    lines += [
        "  x 1 proc: events/s against 1 process on the same topic; cores: the worker's processes"
        " (supervisor and children);",
        "  us/event: the worker's CPU time per event (core-microseconds); kafka: the broker's cores",
    ]
    return lines


def summary(results: list[CellResult], budget_mb: int) -> dict[str, Any]:
    """The JSON line for scripts: one entry per cell."""

    def rounded(value: float | None, digits: int) -> float | None:
        return round(value, digits) if value is not None else None

    return {
        "mode": "scaling",
        "budget_mb": budget_mb,
        "cells": [
            {
                "event": r.cell.kind.name,
                "avg_value_bytes": round(r.cell.kind.avg_value_bytes, 1),
                "partitions": r.cell.partitions,
                "processes": r.cell.processes,
                "budget_mb": r.cell.budget_mb,
                "events": r.events,
                "eps": round(r.eps, 1),
                "mbps": round(r.mbps, 2),
                "seconds": round(r.seconds, 3),
                "worker_cores": rounded(r.worker_cores, 3),
                "worker_us_per_event": rounded(r.us_per_event, 2),
                "kafka_cores": rounded(r.kafka_cores, 3),
                "files": r.files,
                "ok": not r.problems,
            }
            for r in results
        ],
    }


def _topic(kind: EventKind, partitions: int, run_id: str) -> str:
    return f"bench.{kind.name}.{partitions}p.{run_id}"


async def _fill(bootstrap: str, kind: EventKind, run_id: str, seed: int) -> Produced:
    """One topic per partition count, each holding the same ``kind.events`` events."""
    topics = {_topic(kind, partitions, run_id): partitions for partitions in PARTITIONS}
    for topic, partitions in topics.items():
        await create_topic(bootstrap, topic, partitions)
    say(f"producing {kind.events:,} {kind.name} events to each of {', '.join(topics)}")
    produced = await produce(bootstrap, topics, kind.name, kind.schema_path, kind.events, seed)
    say(f"produced in {produced.seconds:.1f}s ({produced.events / produced.seconds:,.0f} events/s per topic)")
    return produced


async def _measure(
    args: argparse.Namespace, settings: Settings, work_dir: Path, pids: dict[str, int]
) -> list[CellResult]:
    """Fill each size's topics once, then run the worker on each topic with each process count."""
    bootstrap = settings.kafka.bootstrap_for("default")
    ensure_bucket(aws_client("s3", settings.aws))
    await wait_for_group_coordinator(bootstrap)  # no other stage has asked the broker for one yet
    run_id = f"{time.strftime('%Y%m%d%H%M%S')}{uuid.uuid4().hex[:6]}"
    small, small_avg, _averages = pick_schema(REPO / "schemas", args.seed)
    kinds = event_kinds(
        small, small_avg, average_value_bytes(LARGE_EVENT, LARGE_SCHEMA, args.seed), args.events
    )
    for kind in kinds:
        say(f"{kind.name}: {kind.label} of JSON on average, {kind.events:,} events per topic")
    cells = grid(kinds, args.budget_mb)
    results: list[CellResult] = []
    filled: dict[str, Produced] = {}
    for number, cell in enumerate(cells, 1):
        kind, partitions = cell.kind, cell.partitions
        if kind.name not in filled:
            filled[kind.name] = await _fill(bootstrap, kind, run_id, args.seed)
        topic = _topic(kind, partitions, run_id)
        tag = f"{kind.name}-{partitions}p-{cell.processes}x"
        worker, files = await worker_on(
            settings,
            work_dir / tag,
            pids,
            filled[kind.name],
            name=f"bench_{kind.name}",
            topic=topic,
            partitions=partitions,
            group=f"bench.{run_id}.{tag}",
            prefix=f"bench/{run_id}/{tag}",
            schema_path=kind.schema_path,
            budget_mb=cell.budget_mb,
            max_age_s=args.max_age_s,
            processes=cell.processes,
        )
        results.append(CellResult.of(cell, filled[kind.name], worker, files))
        say(f"[{number}/{len(cells)}] {cell.label}: {worker.eps:,.0f} events/s")
    return results


def run_scaling(args: argparse.Namespace) -> int:
    """``bench/run --scaling``: the grid, its table and JSON line; 1 if any cell's output was wrong."""
    began = time.monotonic()
    results = with_services(args.keep, functools.partial(_measure, args))
    if results is None:
        return 130
    kinds = list(dict.fromkeys(r.cell.kind for r in results))
    sizes = "; ".join(f"{k.name}: {k.events:,} events of {k.label} on average" for k in kinds)
    problems = [f"{r.cell.label}: {p}" for r in results for p in r.problems]
    lines = [
        "",
        f"Scaling: the stream worker on one topic per size and partition count ({sizes});"
        f" max_age_s {args.max_age_s:g}, whole run {time.monotonic() - began:.0f}s",
        *table(results),
        *(
            [f"  PROBLEM: {p}" for p in problems]
            or ["  correctness: in every cell, every event is in exactly one S3 file"]
        ),
    ]
    print("\n".join(lines))
    print(json.dumps(summary(results, args.budget_mb)), flush=True)
    return 1 if problems else 0
