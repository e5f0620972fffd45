"""Where a worker's time goes: seconds spent in each stage of the pipeline, summed.

The stages follow a record: ``fetch`` (awaiting ``getmany`` on the event loop:
aiokafka's record unpacking and any wait for the broker), ``join`` (rebalances:
revocation and the recovery of new partitions), ``decode`` (the spec's decoder),
``spool`` (appending decoded batches to open files), ``parquet`` (encoding and
compressing row groups, closing files), ``upload`` (S3) and ``commit`` (the
checkpoint protocol's offset commits), plus ``gc``: the interpreter's garbage
collections, which pause every thread. Processing stages run in the processing
thread, uploads in the S3 threads and commits on the event loop, so stages
overlap: their sum can exceed the wall time.

Read by the ``worker_stopped`` log line, the benchmark's breakdown and
``loader_worker_stage_seconds_total``.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from loader.metrics import EventMetrics

__all__ = ["STAGES", "Stage", "StageTimes"]

Stage = Literal["fetch", "join", "decode", "spool", "parquet", "upload", "commit", "gc"]
STAGES: tuple[Stage, ...] = ("fetch", "join", "decode", "spool", "parquet", "upload", "commit", "gc")


class StageTimes:
    """Seconds per stage since start; safe to add to from any thread."""

    def __init__(self, metrics: EventMetrics | None = None) -> None:
        self._seconds = dict.fromkeys(STAGES, 0.0)
        self._lock = threading.Lock()
        self._metrics = metrics
        self._collections: list[float] = []
        """Seconds of collections not yet added: the gc callback must take no lock (a
        collection can start inside :meth:`add`, which holds one)."""

    def add(self, stage: Stage, seconds: float) -> None:
        with self._lock:
            self._seconds[stage] += seconds
        if self._metrics is not None:
            self._metrics.stage_seconds(stage, seconds)

    @contextmanager
    def timed(self, stage: Stage) -> Iterator[None]:
        """Add the time the block takes to ``stage`` (also when it raises)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - started)

    @contextmanager
    def counting_gc(self) -> Iterator[None]:
        """Count the garbage collector's pauses as the ``gc`` stage while the block runs."""
        started = [0.0]

        def on_collection(phase: str, _info: dict[str, Any]) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            elif started[0]:
                self._collections.append(time.perf_counter() - started[0])  # atomic, no lock
                started[0] = 0.0

        gc.callbacks.append(on_collection)
        try:
            yield
        finally:
            gc.callbacks.remove(on_collection)

    def add_collections(self) -> None:
        """Add the collections counted since the last call to the ``gc`` stage."""
        while self._collections:
            self.add("gc", self._collections.pop())

    def snapshot(self) -> dict[str, float]:
        """Seconds per stage, rounded to milliseconds (for logs)."""
        self.add_collections()
        with self._lock:
            return {stage: round(seconds, 3) for stage, seconds in self._seconds.items()}
