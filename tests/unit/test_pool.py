"""How many worker processes a memory budget can carry, and how soon a supervisor stops."""

from __future__ import annotations

import asyncio
import time

import pytest

from loader.worker.pool import MIN_CHILD_BUDGET_MB, PROCESS_OVERHEAD_MB, affordable_processes, until_stopped

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("budget_mb", "wanted", "expected"),
    [(512, 2, 2), (256, 2, 1), (2048, 8, 8), (1024, 8, 4), (64, 1, 1), (512, 1, 1)],
)
def test_processes_are_cut_to_what_the_budget_carries(budget_mb: int, wanted: int, expected: int) -> None:
    running = affordable_processes(budget_mb, wanted)
    assert running == expected
    if running > 1:  # every child keeps at least the minimum share
        assert (budget_mb - PROCESS_OVERHEAD_MB * (running - 1)) // running >= MIN_CHILD_BUDGET_MB
    if running < wanted:  # and one more would not
        more = running + 1
        assert (budget_mb - PROCESS_OVERHEAD_MB * (more - 1)) // more < MIN_CHILD_BUDGET_MB


def test_a_supervisor_passes_sigterm_on_at_once_not_at_its_next_poll() -> None:
    """The stop (a SIGTERM's handler) ends the wait at once, however long the children's poll."""

    async def scenario() -> float:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        started = time.monotonic()
        await until_stopped(stop, lambda: True, poll_s=30)
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 5


def test_a_supervisor_stops_waiting_when_a_child_dies() -> None:
    alive = iter([True, True, False])

    async def scenario() -> None:
        await until_stopped(asyncio.Event(), lambda: next(alive), poll_s=0.01)

    asyncio.run(asyncio.wait_for(scenario(), timeout=5))
