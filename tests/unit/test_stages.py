"""StageTimes: the worker's account of where its time goes, shared by its threads."""

from __future__ import annotations

import gc
import threading
import time

import pytest

from loader.metrics import REGISTRY, EventMetrics
from loader.worker.stages import STAGES, StageTimes

pytestmark = pytest.mark.unit


def test_timed_blocks_add_up_per_stage_even_when_they_raise() -> None:
    """A timed block counts its own stage, also when it raises; other stages stay at zero."""
    stages = StageTimes()
    with stages.timed("decode"):
        time.sleep(0.02)

    def failing_batch() -> None:
        with stages.timed("decode"):
            time.sleep(0.02)
            raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        failing_batch()
    seconds = stages.snapshot()
    assert set(seconds) == set(STAGES)
    assert 0.04 <= seconds["decode"] < 1.0
    assert all(seconds[stage] == 0.0 for stage in STAGES if stage != "decode")


def test_threads_adding_at_once_lose_nothing() -> None:
    """Adds from several threads (processing, S3) are all kept."""
    stages = StageTimes()

    def add_many() -> None:
        for _ in range(10_000):
            stages.add("upload", 0.001)

    threads = [threading.Thread(target=add_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stages.snapshot()["upload"] == pytest.approx(40.0)


def test_stage_seconds_reach_the_metric() -> None:
    """With metrics, each add also counts in loader_worker_stage_seconds_total."""
    event = "stages_metric_test"
    stages = StageTimes(EventMetrics(event))
    stages.add("parquet", 1.5)
    stages.add("parquet", 0.25)
    labels = {"event": event, "stage": "parquet"}
    value = REGISTRY.get_sample_value("loader_worker_stage_seconds_total", labels)
    assert value == pytest.approx(1.75)


def test_garbage_collections_count_as_the_gc_stage_only_while_counting() -> None:
    """Collections inside counting_gc() add to ``gc``; after it, none do."""
    stages = StageTimes()
    with stages.counting_gc():
        for _ in range(3):
            gc.collect()
    counted = stages.snapshot()["gc"]
    assert counted > 0.0
    gc.collect()
    assert stages.snapshot()["gc"] == counted
