"""Running the gateway: one process, or several behind one listening socket.

One Python process serves about one core of requests: parsing, checking with the worker's
decoder and batching hold the GIL. ``processes: N`` forks N children, as the worker pool
does for consumers (:mod:`loader.worker.pool`); the supervisor accepts on the port and deals
each connection to the next child (:mod:`loader.gateway.handoff`), so the children share
the load evenly. Each child is a whole gateway: its own producers
(one per cluster), readiness checks and in-flight bound. The supervisor serves ``/metrics``
(the children's merged, through prometheus_client's multiprocess mode), ``/healthz`` (every
child runs and its event loop beats) and ``/readyz`` (every child ready), forwards SIGTERM
and exits with the worst status.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from multiprocessing.context import ForkProcess
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import CollectorRegistry

from loader import metrics
from loader.config.settings import Settings
from loader.config.spec import EventSpec
from loader.errors import ConfigError, RunError
from loader.gateway import handoff
from loader.gateway.app import create_app
from loader.gateway.auth import KeyRing
from loader.gateway.delivery import KafkaDelivery
from loader.gateway.server import listening_socket, serve, serve_dealt
from loader.runtime import heap
from loader.warehouse import endpoints
from loader.warehouse.readiness import ReadinessReport
from loader.worker.pool import stop_children, until_stopped

__all__ = ["run_gateway"]

log = structlog.get_logger("loader.gateway")

ALIVE_WITHIN_S = 10.0
"""``/healthz`` is 200 while the event loop (every child's) has beaten within this long."""


def run_gateway(settings: Settings, specs: Sequence[EventSpec], host: str, port: int, processes: int) -> None:
    """Serve the gateway until SIGTERM or Ctrl-C; RunError when it could not start or a child failed."""
    keys = KeyRing.from_settings(settings.gateway)  # a bad key setting stops us before forking
    if processes == 1:
        _run_one(settings, specs, keys, host, port)
    else:
        _Pool(settings, specs, keys, processes).run(host, port)


def _run_one(settings: Settings, specs: Sequence[EventSpec], keys: KeyRing, host: str, port: int) -> None:
    beat = _Beat()
    delivery = KafkaDelivery(specs, settings)

    def readiness() -> ReadinessReport:
        down = delivery.readiness()
        return ReadinessReport(not down, down)

    server = _endpoints(settings, host, metrics.exposition(), beat.alive, readiness)
    try:
        app = create_app(specs, settings.gateway, delivery, keys, lifespan=_lifespan(delivery, beat.tick))
        started = serve(app, _listen(host, port))
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    if not started:
        raise RunError("the gateway did not start: see the log above")


def _listen(host: str, port: int) -> socket.socket:
    try:
        return listening_socket(host, port)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (--host/--port, or LOADER_GATEWAY__PORT)"
        ) from None


class _Beat:
    """When the event loop last ran."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def tick(self, _ready: bool) -> None:
        self.last = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self.last < ALIVE_WITHIN_S


def _lifespan(
    delivery: KafkaDelivery, report: Callable[[bool], None]
) -> Callable[[], contextlib.AbstractAsyncContextManager[None]]:
    """Start the delivery with the server, report (every half second) that the loop runs and
    whether it is ready, and stop the delivery once requests are drained."""

    @contextlib.asynccontextmanager
    async def running() -> AsyncIterator[None]:
        await delivery.start()
        heap.settle()

        async def heartbeat() -> None:
            while True:
                report(not delivery.readiness())
                await asyncio.sleep(0.5)

        task = asyncio.create_task(heartbeat(), name="gateway-heartbeat")
        try:
            yield
        finally:
            task.cancel()
            await delivery.stop()

    return running


def _endpoints(
    settings: Settings,
    host: str,
    registry: CollectorRegistry,
    alive: Callable[[], bool],
    readiness: Callable[[], ReadinessReport],
) -> WSGIServer | None:
    port = settings.gateway.metrics_port
    if not port:
        return None
    try:
        return endpoints.serve(host, port, registry, alive=alive, readiness=readiness)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} "
            "(set LOADER_GATEWAY__METRICS_PORT to another port)"
        ) from None


class _Pool:
    """Gateway processes on one socket, and the probes over them."""

    def __init__(self, settings: Settings, specs: Sequence[EventSpec], keys: KeyRing, processes: int) -> None:
        self.settings = settings
        self.specs = specs
        self.keys = keys
        context = multiprocessing.get_context("fork")
        self._context = context
        self._ready = [context.Value("b", 0) for _ in range(processes)]
        self._beats = [context.Value("d", time.time()) for _ in range(processes)]
        self._children: list[ForkProcess] = []
        self._stopping = False

    def alive(self) -> bool:
        now = time.time()
        return all(c.is_alive() for c in self._children) and all(
            now - b.value < ALIVE_WITHIN_S for b in self._beats
        )

    def readiness(self) -> ReadinessReport:
        down = {
            f"gateway process {i}": "not ready: Kafka metadata or the canary record not confirmed yet"
            for i, flag in enumerate(self._ready)
            if not flag.value
        }
        if self._stopping:
            down["gateway"] = "stopping"
        return ReadinessReport(not down, down)

    def _child_main(self, channels: list[tuple[socket.socket, socket.socket]], index: int) -> None:
        """One gateway process, served the connections dealt on its channel (forked: runs in
        the child): its own producers, readiness and event loop, reported to the supervisor
        through shared values."""
        structlog.contextvars.bind_contextvars(process=index)
        for number, (dealer_end, process_end) in enumerate(channels):
            dealer_end.close()
            if number != index:
                process_end.close()
        ready, beat = self._ready[index], self._beats[index]

        def report(is_ready: bool) -> None:
            ready.value = int(is_ready)
            beat.value = time.time()

        delivery = KafkaDelivery(self.specs, self.settings)
        lifespan = _lifespan(delivery, report)
        app = create_app(self.specs, self.settings.gateway, delivery, self.keys, lifespan=lifespan)
        try:
            started = serve_dealt(app, channels[index][1])
        except Exception:
            log.exception("gateway_process_failed", process=index)
            os._exit(1)
        ready.value = 0
        os._exit(0 if started else 1)

    def run(self, host: str, port: int) -> None:
        # The port is bound here, before anything forks: a port in use is a clear error.
        listener = _listen(host, port)
        channels = [handoff.channel_pair() for _ in self._ready]
        metrics_dir = Path(tempfile.mkdtemp(prefix="loader-metrics-gateway-"))
        try:
            metrics.enable_multiprocess(metrics_dir)
            for index in range(len(self._ready)):
                child = self._context.Process(
                    target=self._child_main, args=(channels, index), name=f"loader-gateway-{index}"
                )
                child.start()  # before any thread exists in this process: fork is safe
                self._children.append(child)
            for _, process_end in channels:
                process_end.close()  # the children hold them
            log.info("gateway_pool_started", pids=[c.pid for c in self._children])
            registry = metrics.exposition(metrics_dir)
            server = _endpoints(self.settings, host, registry, self.alive, self.readiness)
            dealer = handoff.Dealer(listener, [d for d, _ in channels], lambda i: bool(self._ready[i].value))
            try:
                codes = asyncio.run(self._supervise(metrics_dir, dealer))
            finally:
                if server is not None:
                    server.shutdown()
                    server.server_close()
        finally:
            listener.close()
            for dealer_end, _ in channels:
                dealer_end.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)
        log.info("gateway_pool_stopped", exit_codes=codes)
        if any(code != 0 for code in codes):
            raise RunError(f"a gateway process failed (exit codes {codes}): see the log above")

    async def _supervise(self, metrics_dir: Path, dealer: handoff.Dealer) -> list[int | None]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        dealer.start()
        await until_stopped(stop, lambda: all(c.is_alive() for c in self._children))
        self._stopping = True
        dealer.stop()  # new connections are refused; the children drain the ones they hold
        await stop_children(self._children, "gateway_process_killed")
        for child in self._children:
            if child.pid is not None:
                metrics.mark_process_dead(child.pid, metrics_dir)
        return [child.exitcode for child in self._children]
