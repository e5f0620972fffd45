"""The worker process shell: Faust for lifecycle, timers and web endpoints only.

Faust runs no agents here and no Kafka client of its own (``enable_kafka``
is off), so it joins no consumer group and creates no internal topics: the
hot path is :class:`~loader.worker.worker.StreamWorker`'s batch loop, run as a
service of the app. Measured on this machine, Faust's per-record stream path
(``stream.take``) consumed ~8k events/s where aiokafka's ``getmany`` did
~450k, and the shell adds nothing to the batch loop.

Faust's infamous slow start (33 s to the first batch) is not Faust starting:
a worker killed without leaving its group leaves a dead member behind, and
the broker holds the next join until that member's session times out
(Faust's default is 60 s). Our consumer uses a 10 s session timeout
(``LOADER_KAFKA__SESSION_TIMEOUT_MS``) and leaves the group on SIGTERM.

Endpoints: ``/healthz`` (the process and its worker loop are alive),
``/readyz`` (topic metadata fetched, bucket reached, partitions assigned and
checkpoint recovery finished; 503 before that, while stopping, and while a service
the worker waits for is down: ``"down": {"schema_registry": why}``) and
``/metrics`` (Prometheus text format: this process's metrics, or the pool's
children merged; see :mod:`loader.metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path
from typing import Any, Protocol

import faust
import structlog
from faust.app.base import BootStrategy
from mode import Service
from prometheus_client import CollectorRegistry

from loader import metrics
from loader.worker.worker import StreamWorker

__all__ = ["Probes", "ServiceProbes", "WorkerService", "build_app"]

log = structlog.get_logger("loader.worker")


class _ShellBoot(BootStrategy):
    enable_kafka = False  # no Faust consumer, producer, leader topic, tables or conductor


class _ShellApp(faust.App):
    BootStrategy = _ShellBoot

    async def on_start(self) -> None:
        # App.on_start would build Faust's (unused) consumer; only finalize the app.
        self.finalize()


class WorkerService(Service):
    """Runs the stream worker for the app; stopping the app stops the worker gracefully."""

    def __init__(self, worker: StreamWorker, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.worker = worker
        self.finished = asyncio.Event()
        self.error: BaseException | None = None

    @Service.task
    async def _consume(self) -> None:
        try:
            await self.worker.run()
        except Exception as exc:
            self.error = exc
            log.exception("worker_failed", event_type=self.worker.spec.name, error=str(exc))
        finally:
            self.finished.set()

    async def on_stop(self) -> None:
        # Stop fetching, roll and commit what is buffered (the worker's own deadline applies).
        self.worker.stop()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.finished.wait(), timeout=self.worker.shutdown_timeout_s + 15)


class Probes(Protocol):
    """What the endpoints and the timer ask of whatever runs the worker(s)."""

    def alive(self) -> bool: ...
    def ready(self) -> bool: ...
    def details(self) -> dict[str, Any]: ...
    def tick(self) -> None: ...


class ServiceProbes:
    """Probes of a worker running in this process as a :class:`WorkerService`."""

    def __init__(self, service: WorkerService) -> None:
        self.service = service

    def alive(self) -> bool:
        return self.service.error is None and not self.service.finished.is_set()

    def ready(self) -> bool:
        worker = self.service.worker
        return worker.ready.is_set() and not worker.down() and not self.service.should_stop

    def details(self) -> dict[str, Any]:
        worker = self.service.worker
        return {"partitions": worker.assigned_partitions(), "down": worker.down()}

    def tick(self) -> None:
        self.service.worker.log_progress()


def build_app(
    name: str,
    probes: Probes,
    *,
    web_host: str,
    web_port: int,
    registry: CollectorRegistry,
    service: Service | None = None,
) -> faust.App:
    """The Faust app around the worker(s), with the probes, ``/metrics`` serving ``registry``
    and a progress timer (``web_port`` 0: no endpoints, for many workers on one host in tests)."""
    app = _ShellApp(
        f"loader-{name}",
        autodiscover=False,
        datadir=str(Path(tempfile.gettempdir()) / f"loader-{name}"),
        web_enabled=web_port > 0,
        web_bind=web_host,
        web_host=web_host,
        web_port=web_port or 6066,
        web_router_enabled=False,
        web_tables_enabled=False,
        web_stats_enabled=False,
    )
    if service is not None:
        app.service(service)  # type: ignore[arg-type]  # Faust accepts an instance as well as a class

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        alive = probes.alive()
        return web.json({"alive": alive}, status=200 if alive else 503)

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ready = probes.ready()
        return web.json({"ready": ready, **probes.details()}, status=200 if ready else 503)

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        # Merging a pool's files reads from disk: keep it off the event loop.
        body = await asyncio.to_thread(metrics.render, registry)
        # As a header: aiohttp refuses a content_type argument that carries a charset.
        return web.bytes(body, headers={"Content-Type": metrics.CONTENT_TYPE})

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]
    async def progress() -> None:
        probes.tick()

    return app
