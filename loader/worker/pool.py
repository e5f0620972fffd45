"""Several worker processes for one event type, under one supervisor.

One Python process does about one core of work here: aiokafka's record
unpacking and the processing glue hold the GIL in turn, so threads barely
overlap (measured: ~0.9 cores, whatever the threading). Processes do. Each
child is a complete :class:`~loader.worker.worker.StreamWorker`: its own
consumer-group member with its own partitions and share of the memory
budget, so the exactly-once protocol is untouched (each child is fenced by
the group like any other member). It is the same as running more replicas,
in one pod.

The supervisor forks the children before it starts any thread, serves the
probes for all of them (alive: every child runs; ready: every child is
ready), forwards SIGTERM, and exits with the worst status. A child that dies
takes the pod down with it: the orchestrator restarts it, and the
checkpoints make that safe.

Metrics use prometheus_client's multiprocess mode: before forking, the
supervisor points it at a fresh temporary folder, where each child writes
its values to memory-mapped files; ``/metrics`` on the supervisor merges
them at scrape time. It needs no channel of our own between the processes,
and what a child counted stays counted after it exits. A child's live gauges
(lag, buffer memory) are dropped when it exits; the folder is removed with
the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Sequence
from multiprocessing.context import ForkProcess
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import structlog

from loader.config.settings import Settings
from loader.config.spec import EventSpec
from loader.metrics import ReadyProbe, enable_multiprocess, exposition, mark_process_dead
from loader.runtime import eventloop, heap
from loader.worker.app import build_app
from loader.worker.worker import StreamWorker

__all__ = ["CHILD_STOP_GRACE_S", "WorkerPool", "affordable_processes", "stop_children", "until_stopped"]

log = structlog.get_logger("loader.worker")

CHILD_STOP_GRACE_S = 60.0
PROCESS_OVERHEAD_MB = 100
"""What each extra process costs besides its buffers (its own Python heap), taken from the budget."""
MIN_CHILD_BUDGET_MB = 128
"""The least buffer memory a child is worth running with: below it, its memory floor would push
the pool past the budget (measured: 2 processes on a 256 MB budget peaked at 498 MB PSS)."""


def affordable_processes(budget_mb: int, wanted: int) -> int:
    """The most processes, up to ``wanted``, whose budget shares are each at least
    :data:`MIN_CHILD_BUDGET_MB` once every extra process's overhead is taken out."""
    for processes in range(wanted, 1, -1):
        if (budget_mb - PROCESS_OVERHEAD_MB * (processes - 1)) // processes >= MIN_CHILD_BUDGET_MB:
            return processes
    return 1


def _child_main(
    spec: EventSpec, settings: Settings, budget_mb: int, ready: Synchronized[int], index: int
) -> None:
    """Entry point of one child: a stream worker with its own event loop."""
    structlog.contextvars.bind_contextvars(process=index)
    worker = StreamWorker(spec, settings, memory_budget_mb=budget_mb)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, worker.stop)
        # Ctrl-C reaches the whole process group: let the supervisor decide.
        loop.add_signal_handler(signal.SIGINT, lambda: None)

        async def report() -> None:
            ticks = 0
            while True:
                ready.value = int(worker.ready.is_set() and not worker.down())
                ticks += 1
                if ticks % 25 == 0:
                    worker.log_progress()
                await asyncio.sleep(0.2)

        reporter = asyncio.create_task(report())
        heap.settle()
        try:
            await worker.run()
        finally:
            reporter.cancel()
            ready.value = 0

    try:
        eventloop.run(main())
    except Exception:
        log.exception("worker_failed", event_type=spec.name, process=index)
        os._exit(1)


class WorkerPool:
    """Children running one event type's worker, and the probes over them."""

    def __init__(self, spec: EventSpec, settings: Settings, processes: int) -> None:
        """``processes`` is what :func:`affordable_processes` allows: each child's share of the
        budget is then at least :data:`MIN_CHILD_BUDGET_MB`."""
        self.spec = spec
        context = multiprocessing.get_context("fork")
        spare_mb = spec.deployment.memory_budget_mb - PROCESS_OVERHEAD_MB * (processes - 1)
        budget_mb = spare_mb // processes
        self._ready = [context.Value("b", 0) for _ in range(processes)]
        self._children: list[ForkProcess] = [
            context.Process(
                target=_child_main,
                args=(spec, settings, budget_mb, self._ready[i], i),
                name=f"loader-worker-{spec.name}-{i}",
            )
            for i in range(processes)
        ]
        self._stopping = False

    # Probes ------------------------------------------------------------------------------------

    def alive(self) -> bool:
        return all(child.is_alive() for child in self._children)

    def ready(self) -> bool:
        return not self._stopping and all(flag.value for flag in self._ready)

    def details(self) -> dict[str, Any]:
        return {"processes": len(self._children), "ready_processes": sum(f.value for f in self._ready)}

    def tick(self) -> None:
        """The children log their own progress."""

    # Lifecycle ---------------------------------------------------------------------------------

    def run(self, *, web_host: str, web_port: int) -> int:
        """Fork the children, supervise them until SIGTERM or a child exits; the exit status."""
        metrics_dir = Path(tempfile.mkdtemp(prefix=f"loader-metrics-{self.spec.name}-"))
        try:
            enable_multiprocess(metrics_dir)
            for child in self._children:
                child.start()  # before any thread exists in this process: fork is safe
            log.info(
                "worker_pool_started",
                event_type=self.spec.name,
                pids=[child.pid for child in self._children],
            )
            return asyncio.run(self._supervise(web_host, web_port, metrics_dir))
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)

    async def _supervise(self, web_host: str, web_port: int, metrics_dir: Path) -> int:
        registry = exposition(metrics_dir, ready=ReadyProbe("worker", self.spec.name, self.ready))
        app = build_app(self.spec.name, self, web_host=web_host, web_port=web_port, registry=registry)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await app.start()
        try:
            await until_stopped(stop, self.alive)
            self._stopping = True
            self._bury(metrics_dir)
            await stop_children(self._children, "worker_process_killed")
            self._bury(metrics_dir)
        finally:
            await app.stop()
        codes = [child.exitcode for child in self._children]
        log.info("worker_pool_stopped", event_type=self.spec.name, exit_codes=codes)
        return 0 if all(code == 0 for code in codes) else 1

    def _bury(self, metrics_dir: Path) -> None:
        """Drop the live gauges of children that have exited (their counters stay)."""
        for child in self._children:
            if child.pid is not None and not child.is_alive():
                mark_process_dead(child.pid, metrics_dir)


async def until_stopped(stop: asyncio.Event, alive: Callable[[], bool], poll_s: float = 0.2) -> None:
    """Return as soon as ``stop`` is set, so that a SIGTERM reaches the children at once (a
    rollout's drain starts then, not up to a poll later), or once ``alive()`` turns false:
    children are processes, polled every ``poll_s``."""
    while not stop.is_set() and alive():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=poll_s)


async def stop_children(children: Sequence[ForkProcess], killed: str) -> None:
    """SIGTERM the children still running and wait for each; one still running after
    :data:`CHILD_STOP_GRACE_S` is killed (logged as ``killed``). The worker pool's and the
    gateway's supervisors stop their children this way."""
    for child in children:
        if child.is_alive() and child.pid is not None:
            os.kill(child.pid, signal.SIGTERM)

    def join_all() -> None:
        for child in children:
            child.join(timeout=CHILD_STOP_GRACE_S)
            if child.is_alive():
                log.warning(killed, pid=child.pid)
                child.kill()
                child.join()

    await asyncio.to_thread(join_all)
