"""``loader demo``: the whole product on local services, end to end, in a few minutes.

Starts whatever services are not configured (Kafka from Maven Central jars,
moto, fakesnow), provisions topics, bucket, queue, notifications and tables,
produces realistic events for every example spec, runs one stream worker
per event type and the SQS-triggered loader until every event is a row in
its table, prints a summary and stops what it started.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import structlog
from rich.console import Console
from rich.table import Table

from loader.config.settings import Settings, load_settings
from loader.config.spec import EventSpec, load_specs
from loader.devstack import DevStack
from loader.devstack.provision import DEV_QUEUE, provision
from loader.devstack.samples import produce_samples
from loader.errors import RunError
from loader.ops.audit import audit
from loader.ops.status import consumer_lag
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.manager import PipeManager
from loader.warehouse.objects import EventObjects
from loader.warehouse.sqs_loader import SqsLoader
from loader.worker.worker import StreamWorker

__all__ = ["DemoResult", "run_demo"]

log = structlog.get_logger("loader.demo")


@dataclass
class DemoResult:
    """What the demo did, per event type."""

    produced: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)
    samples: dict[str, tuple[list[str], list[tuple[object, ...]]]] = field(default_factory=dict)
    audits: dict[str, int] = field(default_factory=dict)
    """Per event type, the problems `loader audit` found once the workers stopped (0: complete)."""
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        loaded = all(self.rows.get(name) == count for name, count in self.produced.items())
        return loaded and all(self.audits.get(name) == 0 for name in self.produced)


def run_demo(
    specs_dir: Path, *, events_per_type: int = 3000, timeout_s: float = 240.0, console: Console | None = None
) -> DemoResult:
    """Run the demo; raise RunError if the rows do not match the events in time."""
    console = console or Console()
    began = time.monotonic()
    specs = load_specs(specs_dir)
    base = load_settings()
    # Keep aiokafka's start-up chatter (coordinator not yet elected) out of the summary.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    work_dir = Path(tempfile.mkdtemp(prefix="loader-demo-"))
    with console.status("starting local services (Kafka, moto, fakesnow, schema registry)…"):
        stack = DevStack.launch(base, work_dir=work_dir)
    try:
        settings = load_settings(**stack.overrides)
        for service in stack.services:
            version = f" ({service.version})" if service.version else ""
            console.print(f"  started {service.name}{version} at {stack.endpoints[service.name]}")
        result = asyncio.run(_run(settings, specs, events_per_type, timeout_s, console))
    finally:
        with console.status("stopping local services…"):
            stack.stop()
            shutil.rmtree(work_dir, ignore_errors=True)
    result.seconds = time.monotonic() - began
    _print_summary(console, result)
    if not result.complete:
        raise RunError(
            f"demo incomplete after {timeout_s:.0f}s: rows {result.rows}, produced {result.produced}, "
            f"audit problems {result.audits}"
        )
    return result


async def _run(
    settings: Settings, specs: Sequence[EventSpec], count: int, timeout_s: float, console: Console
) -> DemoResult:
    # Quick freshness for the demo: roll files every 2 s instead of the production 5 min.
    specs = [s.model_copy(update={"rolling": s.rolling.model_copy(update={"max_age_s": 2.0})}) for s in specs]
    with console.status("provisioning topics, bucket, queue, notifications and tables…"):
        queue_url = await provision(settings, specs, queue_name=DEV_QUEUE)
        objects = {s.name: EventObjects.for_spec(s, settings.snowflake) for s in specs}
        with Warehouse(settings.snowflake) as warehouse:
            manager = PipeManager(warehouse, settings)
            for spec in specs:
                manager.apply(spec)
            before = {name: _count(warehouse, obj) for name, obj in objects.items()}
    result = DemoResult()
    with console.status(f"producing {count} events for each of {len(specs)} event types…"):
        for spec in specs:
            result.produced[spec.name] = await produce_samples(settings, spec, count)
    workers = [StreamWorker(spec, settings) for spec in specs]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    loader = SqsLoader(settings, specs, queue_url=queue_url, wait_time_s=1)
    stop = threading.Event()
    loader_thread = threading.Thread(target=loader.run, args=(stop,), name="sqs-loader", daemon=True)
    loader_thread.start()
    deadline = time.monotonic() + timeout_s
    try:
        with Warehouse(settings.snowflake) as warehouse, console.status("loading…") as status:
            while time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                for task in tasks:
                    if task.done() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                result.rows = {n: _count(warehouse, o) - before[n] for n, o in objects.items()}
                status.update(f"loading… rows {sum(result.rows.values())} of {sum(result.produced.values())}")
                if result.complete:
                    break
            for name, obj in objects.items():
                columns = [f.column for f in obj.schema.fields[:4]] + ["_PARTITION", "_OFFSET", "_CREATED_AT"]
                result.samples[name] = (
                    columns,
                    warehouse.execute(obj.sample_statement(columns, limit=3)),
                )
                result.files[name] = next(w.stats.files_written for w in workers if w.spec.name == name)
    finally:
        for worker in workers:
            worker.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        stop.set()
        loader_thread.join(timeout=30)
        loader.close()
    if all(result.rows.get(name) == count for name, count in result.produced.items()):
        with console.status("auditing: every offset in a file, every file's rows in the table…"):
            result.audits = await _audits(settings, specs)
    return result


async def _audits(settings: Settings, specs: Sequence[EventSpec]) -> dict[str, int]:
    """`loader audit` of each event type, as an operator would run it after the demo."""
    problems: dict[str, int] = {}
    with Warehouse(settings.snowflake) as warehouse:
        for spec in specs:
            lags = await consumer_lag(spec, settings.kafka)
            report = audit(
                spec,
                S3Store(settings.aws, spec.s3.bucket),
                warehouse,
                EventObjects.for_spec(spec, settings.snowflake),
                {lag.partition: lag.committed for lag in lags},
                settle_s=0,
            )
            problems[spec.name] = len(report.problems)
    return problems


def _count(warehouse: Warehouse, objects: EventObjects) -> int:
    return int(warehouse.execute(objects.count_statement())[0][0])


def _audit_cell(problems: int | None) -> str:
    if problems is None:
        return "not run"
    return "complete" if problems == 0 else f"{problems} problem(s): run `loader audit`"


def _show(value: object) -> str:
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    return str(value)


def _print_summary(console: Console, result: DemoResult) -> None:
    table = Table(title=f"demo summary ({result.seconds:.0f} s)")
    for column in ("event type", "events produced", "files written", "rows in table", "match", "audit"):
        table.add_column(column, justify="left" if column == "event type" else "right")
    for name, produced in result.produced.items():
        loaded = result.rows.get(name, 0)
        table.add_row(
            name,
            str(produced),
            str(result.files.get(name, 0)),
            str(loaded),
            "yes" if loaded == produced else "NO",
            _audit_cell(result.audits.get(name)),
        )
    console.print(table)
    for name, (columns, rows) in result.samples.items():
        sample = Table(title=f"{name}: sample rows", title_justify="left")
        for column in columns:
            sample.add_column(column, overflow="fold")
        for row in rows:
            sample.add_row(*(_show(value) for value in row))
        console.print(sample)
