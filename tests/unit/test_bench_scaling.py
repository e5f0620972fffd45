"""``bench/run --scaling``: its grid, budgets, event sizes, table and JSON line (no services)."""

from __future__ import annotations

import json

import pytest

from bench.harness import REPO
from bench.main import EVENTS, _args
from bench.produce import Produced, average_value_bytes
from bench.scaling import (
    DEFAULT_BUDGET_MB,
    DEFAULT_EVENTS,
    LARGE_EVENT,
    LARGE_MB_FACTOR,
    LARGE_SCHEMA,
    PARTITIONS,
    PROCESSES,
    Cell,
    CellResult,
    EventKind,
    budget_for,
    event_kinds,
    grid,
    summary,
    table,
)
from bench.worker_run import FilesCheck, WorkerResult
from loader.worker.pool import affordable_processes

pytestmark = pytest.mark.unit

SMALL = EventKind("store_updated", REPO / "schemas" / "store_updated.avsc", 383.0, 1_000)
LARGE = EventKind(LARGE_EVENT, LARGE_SCHEMA, 3_900.0, 98)


def _result(
    cell: Cell,
    eps: float,
    *,
    seconds: float = 10.0,
    cores: float | None = 1.5,
    problems: tuple[str, ...] = (),
) -> CellResult:
    return CellResult(
        cell=cell,
        events=cell.kind.events,
        eps=eps,
        mbps=eps * cell.kind.avg_value_bytes / 1e6,
        seconds=seconds,
        worker_cores=cores,
        worker_cpu_s=cores * seconds if cores is not None else None,
        kafka_cores=0.1 if cores is not None else None,
        files=cell.partitions,
        problems=problems,
    )


def test_grid_is_every_size_partitions_and_processes_with_topics_contiguous() -> None:
    """The grid holds all 18 combinations once, processes varying fastest so a topic's cells follow
    each other."""
    cells = grid([SMALL, LARGE], 512)
    combos = [(c.kind.name, c.partitions, c.processes) for c in cells]
    assert len(cells) == 2 * len(PARTITIONS) * len(PROCESSES) == 18
    assert len(set(combos)) == len(combos)
    assert [c.processes for c in cells[:3]] == list(PROCESSES)
    topics = [(c.kind.name, c.partitions) for c in cells]
    assert topics == sorted(topics, key=topics.index)  # each topic's cells are one run


def test_budget_is_raised_to_the_least_that_runs_every_process() -> None:
    """A process count the budget cannot carry gets the least budget that runs all of them; the
    others keep the budget asked for."""
    assert budget_for(1, 512) == budget_for(2, 512) == 512
    raised = budget_for(4, 512)
    assert raised > 512
    assert affordable_processes(raised, 4) == 4
    assert affordable_processes(raised - 1, 4) < 4
    assert {c.budget_mb for c in grid([SMALL], 512) if c.processes == 4} == {raised}


def test_large_events_fill_twice_the_megabytes_of_the_small_ones() -> None:
    """The ~4 KB topic holds LARGE_MB_FACTOR times the bytes of the ~400 B one, with fewer events."""
    small, large = event_kinds("store_updated", 383.0, 3_900.0, 1_000_000)
    assert (small.events, small.schema_path.name) == (1_000_000, "store_updated.avsc")
    assert large.name == LARGE_EVENT
    assert large.events < small.events
    large_mb, small_mb = large.events * large.avg_value_bytes, small.events * small.avg_value_bytes
    assert abs(large_mb - LARGE_MB_FACTOR * small_mb) <= 3_900
    assert (small.label, large.label) == ("383 B", "3.9 KB")


def test_menu_events_are_about_four_kilobytes() -> None:
    """The large schema's sample events average about 4 KB of JSON (nested sections, items, options)."""
    assert 3_500 <= average_value_bytes(LARGE_EVENT, LARGE_SCHEMA, 7, count=500) <= 4_500


def test_table_compares_each_topic_with_one_process() -> None:
    """Each row's speed-up is against 1 process on the same topic, topics are set apart by a blank
    line, and a missing CPU reading prints '-'."""
    cells = grid([SMALL], 512)[:6]  # 6 and 12 partitions
    results = [
        _result(cells[0], 100_000.0),
        _result(cells[1], 180_000.0, seconds=5.0),
        _result(cells[2], 150_000.0, cores=None),
        _result(cells[3], 50_000.0),
        _result(cells[4], 100_000.0),
        _result(cells[5], 0.0),
    ]
    lines = table(results)
    # Tokens: size (2), partitions, processes, budget, events/s, MB/s, seconds, x 1 proc, cores, ...
    rows = [line.split() for line in lines[1:8]]
    assert rows[3] == []  # between the 6- and the 12-partition topic
    assert [r[8] for r in rows[:3]] == ["1.00", "1.80", "1.50"]
    assert [r[7] for r in rows[:2]] == ["10.00", "5.00"]
    assert rows[2][9:12] == ["-", "-", "-"]
    assert [r[8] for r in rows[4:]] == ["1.00", "2.00", "0.00"]


def test_summary_has_one_entry_per_cell_and_flags_wrong_ones() -> None:
    """The JSON line has a cell entry each, with its figures and whether its files were right."""
    cells = grid([SMALL, LARGE], 512)
    results = [_result(c, 1_000.0, problems=("wrong",) if i == 4 else ()) for i, c in enumerate(cells)]
    parsed = json.loads(json.dumps(summary(results, 512)))
    assert parsed["mode"] == "scaling" and len(parsed["cells"]) == 18
    assert [c["ok"] for c in parsed["cells"]].count(False) == 1 and not parsed["cells"][4]["ok"]
    first = parsed["cells"][0]
    assert (first["event"], first["partitions"], first["processes"], first["eps"]) == (
        "store_updated",
        6,
        1,
        1000,
    )
    assert first["worker_us_per_event"] == pytest.approx(1.5 * 10.0 / 1_000 * 1e6)


def test_a_cell_with_missing_rows_is_a_problem() -> None:
    """A cell whose files hold fewer rows than were produced, or whose worker did not finish,
    carries problems (the mode then exits 1)."""
    cell = grid([SMALL], 512)[0]
    produced = Produced(events=1_000, value_bytes=383_000, seconds=1.0)
    done = WorkerResult(events=1_000, value_bytes=383_000, completed=True, seconds_from_assignment=2.0)
    right = FilesCheck(files=6, rows=1_000, data_bytes=1, dead_letter_files=0, problems=[])
    short = FilesCheck(files=6, rows=999, data_bytes=1, dead_letter_files=0, problems=[])
    assert CellResult.of(cell, produced, done, right).problems == ()
    assert CellResult.of(cell, produced, done, right).eps == 500.0
    assert CellResult.of(cell, produced, done, short).problems
    unfinished = WorkerResult(events=1_000, value_bytes=383_000)
    assert CellResult.of(cell, produced, unfinished, right).problems


def test_scaling_options_default_and_refuse_what_the_grid_sets() -> None:
    """--scaling defaults to its own events and budget, and refuses options the grid sets itself."""
    scaling = _args(["--scaling"])
    assert (scaling.events, scaling.budget_mb) == (DEFAULT_EVENTS, DEFAULT_BUDGET_MB)
    main = _args([])
    assert (main.events, main.budget_mb) == (EVENTS, 256)
    assert _args(["--scaling", "--events", "60000", "--budget-mb", "1024"]).events == 60_000
    with pytest.raises(SystemExit):
        _args(["--scaling", "--partitions", "6"])
