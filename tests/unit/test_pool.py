"""How many worker processes a memory budget can carry."""

from __future__ import annotations

import pytest

from loader.worker.pool import MIN_CHILD_BUDGET_MB, PROCESS_OVERHEAD_MB, affordable_processes

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
