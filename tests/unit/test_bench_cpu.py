"""The benchmark's CPU meter: cores over a window that ends when the measured work ended."""

from __future__ import annotations

import os
import time

import pytest

from bench.cpu import CpuMeter

pytestmark = pytest.mark.unit


def _spin(seconds: float) -> None:
    until = time.process_time() + seconds
    while time.process_time() < until:
        pass


def test_the_wait_after_the_work_is_not_counted_as_idle_cores() -> None:
    """Busy, then idle while the end is noticed: cut at the work's end, the meter reports the
    busy part's cores (about twice what the whole window averages), not the whole window's."""
    meter = CpuMeter({"me": os.getpid()})
    meter.start()
    for _ in range(4):
        _spin(0.1)
        meter.sample()
    ended = time.time()
    for _ in range(4):
        time.sleep(0.1)
        meter.sample()
    whole = meter.stop().cores["me"]
    busy = meter.stop(work_ended=ended)
    assert busy.seconds < 0.7 * (time.time() - ended + busy.seconds)
    assert busy.cores["me"] > 1.5 * whole


def test_an_exited_process_counts_with_its_last_reading() -> None:
    """A process gone before the stop keeps the ticks read while it ran (no /proc entry to read)."""
    pid = os.fork()
    if pid == 0:
        _spin(0.3)
        os._exit(0)
    meter = CpuMeter({"child": pid})
    meter.start()
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        meter.sample()
        time.sleep(0.02)
    assert meter.stop().cores["child"] > 0
