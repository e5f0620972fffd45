"""``loader worker run EVENT``: one event type's stream worker, with its probes."""

from __future__ import annotations

import asyncio
import signal

import click
import structlog

from loader.cli.options import CliContext, bind_options, pass_cli, specs_option
from loader.errors import LoaderError, RunError
from loader.metrics import ReadyProbe, exposition
from loader.runtime import eventloop, heap
from loader.worker.app import ServiceProbes, WorkerService, build_app
from loader.worker.pool import MIN_CHILD_BUDGET_MB, WorkerPool, affordable_processes
from loader.worker.worker import StreamWorker

__all__ = ["worker"]


@click.group()
def worker() -> None:
    """Stream workers (Kafka → Parquet in S3)."""


@worker.command("run")
@click.argument("event")
@specs_option
@bind_options("web", port=6066, what="the /healthz, /readyz and /metrics endpoints")
@click.option(
    "--processes",
    envvar="LOADER_WORKER_PROCESSES",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes (consumer-group members) sharing the memory budget; one per core "
    "uses every core ($LOADER_WORKER_PROCESSES).",
)
@pass_cli
def run(cli: CliContext, event: str, web_host: str, web_port: int, processes: int) -> None:
    """Consume EVENT's topic and write its files to S3 until SIGTERM or Ctrl-C.

    On SIGTERM the worker stops fetching, rolls and commits what it holds
    within its deadline, logs its counts and exits 0.
    """
    spec = cli.spec(event)
    settings = cli.settings
    budget_mb = spec.deployment.memory_budget_mb
    affordable = affordable_processes(budget_mb, processes)
    if affordable < processes:
        structlog.get_logger("loader.worker").warning(
            "fewer_processes",
            event_type=spec.name,
            asked=processes,
            running=affordable,
            reason=f"a {budget_mb} MB memory budget leaves each of {processes} processes less than "
            f"{MIN_CHILD_BUDGET_MB} MB of buffers after their interpreters: raise "
            "deployment.memory_budget_mb in the spec to run more",
        )
        processes = affordable
    if processes > 1:
        code = WorkerPool(spec, settings, processes).run(web_host=web_host, web_port=web_port)
        if code:
            raise RunError(f"a worker process of {spec.name} failed (see its log lines above)")
        return
    service = WorkerService(StreamWorker(spec, settings))
    probes = ServiceProbes(service)

    async def _main() -> None:
        app = build_app(
            spec.name,
            probes,
            web_host=web_host,
            web_port=web_port,
            registry=exposition(ready=ReadyProbe("worker", spec.name, probes.ready)),
            service=service,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await app.start()
        heap.settle()
        stopped = asyncio.create_task(stop.wait())
        finished = asyncio.create_task(service.finished.wait())
        await asyncio.wait({stopped, finished}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        finished.cancel()
        await app.stop()

    eventloop.run(_main())
    if service.error is not None:
        if isinstance(service.error, LoaderError):
            raise service.error
        raise RunError(f"worker failed: {service.error!r}") from service.error
