"""What was loaded, and what reconcile, replay and status do about the rest, in each load mode.

A scripted Snowflake answers COPY_HISTORY (COPY and Snowpipe loads, in the window asked,
cut at a row cap), LOAD_HISTORY (COPY loads only) or neither, and keeps every statement.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from sqlglot.tokens import TokenType
from structlog.testing import capture_logs

from loader.config.settings import SnowflakeSettings
from loader.config.spec import EventSpec, load_specs
from loader.errors import ConfigError, WarehouseError
from loader.ops.pipe_status import pipe_status
from loader.ops.reconcile import reconcile
from loader.replay.reload import plan_reload, run_reload
from loader.store.layout import FileRange, data_key, period_of
from loader.warehouse.history import COPY_HISTORY, LOAD_HISTORY, read_history
from loader.warehouse.objects import EventObjects
from tests.unit.fakes import FakeStore, FakeWarehouse

pytestmark = pytest.mark.unit

SPEC: EventSpec = load_specs(Path(__file__).parents[2] / "pipelines", ["order_created"])[0]
NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
PIPE = '"ANALYTICS"."EVENTS"."ORDER_CREATED_PIPE"'
TABLE = '"ANALYTICS"."EVENTS"."ORDER_CREATED"'
COPY_TAIL = (
    'FILE_FORMAT = (FORMAT_NAME = \'"ANALYTICS"."EVENTS"."ORDER_CREATED_PARQUET"\')'
    " MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE ON_ERROR = ABORT_STATEMENT"
)
_WINDOW = re.compile(
    r"START_TIME => TO_TIMESTAMP_LTZ\('([^']+)'\), END_TIME => TO_TIMESTAMP_LTZ\('([^']+)'\)"
)
_FILES = re.compile(r"FILES = \(([^)]*)\)")


def _objects(mode: str) -> EventObjects:
    return EventObjects.for_spec(SPEC, SnowflakeSettings(load_mode=mode))  # type: ignore[arg-type]


def _key(partition: int, first: int, hours_ago: float) -> str:
    """A data key whose time partition is ``hours_ago`` before NOW."""
    moment_ms = int((NOW - timedelta(hours=hours_ago)).timestamp() * 1000)
    return data_key(
        SPEC, FileRange(SPEC.kafka.topic, partition, first, first + 9, period_of(SPEC, moment_ms))
    )


def _relative(key: str) -> str:
    return key.split(SPEC.data_prefix, 1)[1]


@dataclass(frozen=True)
class Load:
    """One row of the account's load history."""

    key: str
    at: datetime
    pipe: str | None = None
    status: str = "Loaded"


@dataclass
class Snowflake:
    """Answers the statements the ops send, like Snowflake would; ``cap`` cuts any one answer."""

    loads: list[Load] = field(default_factory=list)
    copy_history: bool = True
    cap: int = 10_000
    windows: list[tuple[datetime, datetime]] = field(default_factory=list)

    def answer(self, sql: str) -> list[tuple[Any, ...]] | BaseException:
        if sql.startswith("USE SCHEMA"):
            return []
        if sql == "SELECT CURRENT_TIMESTAMP()":
            return [(NOW,)]
        if "INFORMATION_SCHEMA.COPY_HISTORY" in sql:
            if not self.copy_history:
                return WarehouseError(
                    "statement failed (SELECT …): 001003 (42000): SQL compilation error: syntax error",
                    transient=False,
                )
            match = _WINDOW.search(sql)
            assert match is not None, sql
            start, end = (datetime.fromisoformat(part) for part in match.groups())
            self.windows.append((start, end))
            rows = [
                (_relative(load.key), load.status, load.at, None, load.pipe)
                for load in self.loads
                if start <= load.at <= end
            ]
            return rows[: self.cap]
        if "INFORMATION_SCHEMA.LOAD_HISTORY" in sql:
            rows = [
                (f"s3://{SPEC.s3.bucket}/{load.key}", load.status.upper(), load.at, None, None)
                for load in self.loads
                if load.pipe is None
            ]
            return rows[: min(self.cap, 10_000)]
        if sql.startswith("SHOW TABLES"):
            return [(None, SPEC.snowflake.table)]
        if "SYSTEM$PIPE_STATUS" in sql:
            return [('{"executionState": "RUNNING", "pendingFileCount": 2}',)]
        if sql.startswith("ALTER PIPE"):
            return [("queued", "SENT")]
        if sql.startswith("COPY INTO"):
            match = _FILES.search(sql)
            assert match is not None, sql
            names = [name.strip().strip("'") for name in match.group(1).split(",")]
            return [(name, "LOADED", 10, 10, 1, 0, None) for name in names]
        return AssertionError(f"unexpected statement: {sql}")


def _run(
    snowflake: Snowflake, staged: dict[str, datetime], mode: str, **options: Any
) -> tuple[Any, FakeWarehouse]:
    warehouse = FakeWarehouse(snowflake.answer)
    report = reconcile(warehouse, FakeStore(staged), _objects(mode), **options)  # type: ignore[arg-type]
    return report, warehouse


def _changes(warehouse: FakeWarehouse) -> list[str]:
    """The statements that change something: every one but the reads."""
    reads = ("USE SCHEMA", "SELECT ", "SHOW ")
    return [sql for sql in warehouse.executed if not sql.startswith(reads)]


def _parses(sql: str) -> None:
    sqlglot.parse_one(sql, read="snowflake")


# -- the statements ---------------------------------------------------------------------------


def test_copy_history_query_is_exact_snowflake_sql() -> None:
    """COPY_HISTORY is asked for one table and an explicit window, as Snowflake's syntax has it."""
    start, end = NOW - timedelta(days=1), NOW
    sql = _objects("auto-ingest").copy_history_query("ORDER_CREATED", start, end)
    assert sql == (
        "SELECT FILE_NAME, STATUS, LAST_LOAD_TIME, FIRST_ERROR_MESSAGE, PIPE_NAME"
        " FROM TABLE(INFORMATION_SCHEMA.COPY_HISTORY(TABLE_NAME => 'ORDER_CREATED',"
        " START_TIME => TO_TIMESTAMP_LTZ('2026-11-30T12:00:00+00:00'),"
        " END_TIME => TO_TIMESTAMP_LTZ('2026-12-01T12:00:00+00:00')))"
    )
    parsed = sqlglot.parse_one(sql, read="snowflake")
    assert isinstance(parsed, sqlglot.exp.Select)


def test_load_history_query_is_exact_snowflake_sql() -> None:
    """The fallback reads the same columns from LOAD_HISTORY, which has no pipe name."""
    sql = _objects("copy").load_history_query("ORDER_CREATED")
    assert sql == (
        "SELECT FILE_NAME, STATUS, LAST_LOAD_TIME, FIRST_ERROR_MESSAGE, NULL"
        " FROM INFORMATION_SCHEMA.LOAD_HISTORY WHERE TABLE_NAME = 'ORDER_CREATED'"
    )
    assert isinstance(sqlglot.parse_one(sql, read="snowflake"), sqlglot.exp.Select)


def test_pipe_refresh_statement_is_exact_snowflake_sql() -> None:
    """ALTER PIPE … REFRESH names the quoted pipe, a quoted relative prefix and an ISO timestamp."""
    sql = _objects("auto-ingest").refresh_pipe("dt=2026-12-01/hour=0'8/", NOW)
    assert sql == (
        f"ALTER PIPE {PIPE} REFRESH PREFIX = 'dt=2026-12-01/hour=0''8/'"
        " MODIFIED_AFTER = '2026-12-01T12:00:00+00:00'"
    )
    _parses(sql)  # sqlglot keeps ALTER PIPE as a command: check its tokens too
    tokens = sqlglot.tokenize(sql, read="snowflake")
    assert [t.text for t in tokens if t.token_type == TokenType.STRING] == [
        "dt=2026-12-01/hour=0'8/",
        "2026-12-01T12:00:00+00:00",
    ]
    assert [t.text for t in tokens if t.token_type == TokenType.IDENTIFIER] == [
        "ANALYTICS",
        "EVENTS",
        "ORDER_CREATED_PIPE",
    ]


# -- the reader -------------------------------------------------------------------------------


def test_a_file_only_in_the_pipes_history_counts_as_loaded() -> None:
    """A file Snowpipe loaded (in COPY_HISTORY with a PIPE_NAME, absent from LOAD_HISTORY) is loaded:
    neither mode loads it again or hands it to the pipe."""
    key = _key(0, 0, hours_ago=5)
    snowflake = Snowflake([Load(key, NOW - timedelta(hours=4), pipe="ORDER_CREATED_PIPE")])
    assert snowflake.answer(_objects("copy").load_history_query("ORDER_CREATED")) == []
    for mode in ("auto-ingest", "copy"):
        report, warehouse = _run(snowflake, {key: NOW - timedelta(hours=5)}, mode)
        assert (report.history, report.already_loaded, report.missing, report.unknown) == (
            COPY_HISTORY,
            1,
            [],
            [],
        )
        assert _changes(warehouse) == []


def test_history_is_read_in_windows_until_no_answer_is_cut() -> None:
    """25,000 loads against a server that cuts each answer at 10,000 rows: the reader splits its
    windows until none is cut, and sees every load."""
    snowflake = Snowflake(cap=10_000)
    for i in range(25_000):
        at = NOW - timedelta(days=13) + timedelta(seconds=i * 40)
        snowflake.loads.append(Load(_key(i % 6, i * 10, hours_ago=13 * 24), at))
    history = read_history(FakeWarehouse(snowflake.answer), _objects("copy"))
    assert history.source == COPY_HISTORY and history.fallback is None
    assert len(history.loaded) == 25_000
    answered = [
        w for w in snowflake.windows if sum(w[0] <= load.at <= w[1] for load in snowflake.loads) < 10_000
    ]
    assert len(answered) > 2  # several windows were needed…
    covered = sorted(answered)
    assert covered[0][0] == NOW - timedelta(days=14) + timedelta(minutes=5)
    assert covered[-1][1] == NOW
    assert all(a[1] == b[0] for a, b in itertools.pairwise(covered))  # …and they tile the reach


def test_without_copy_history_the_reader_falls_back_and_says_so() -> None:
    """No COPY_HISTORY: LOAD_HISTORY is read, a warning is logged, and the note says what it cannot see."""
    key = _key(0, 0, hours_ago=5)
    snowflake = Snowflake([Load(key, NOW - timedelta(hours=4))], copy_history=False)
    with capture_logs() as logs:
        report, _ = _run(snowflake, {key: NOW - timedelta(hours=5)}, "copy", dry_run=True)
    assert report.history == LOAD_HISTORY
    assert report.history_note is not None
    assert "COPY_HISTORY unavailable (statement failed" in report.history_note
    assert "no Snowpipe loads" in report.history_note
    assert report.already_loaded == 1
    [warning] = [entry for entry in logs if entry["event"] == "load_history_fallback"]
    assert warning["log_level"] == "warning" and warning["reason"] == report.history_note


def test_a_full_load_history_is_reported_as_possibly_cut() -> None:
    """The fallback's 10,000 rows are LOAD_HISTORY's cap: the note says older loads may be left out."""
    snowflake = Snowflake(copy_history=False)
    snowflake.loads = [Load(_key(0, i * 10, 24), NOW - timedelta(hours=1)) for i in range(10_001)]
    history = read_history(FakeWarehouse(snowflake.answer), _objects("copy"))
    assert history.fallback is not None and "its cap of 10,000 rows" in history.fallback


def test_an_unreachable_warehouse_is_not_a_fallback() -> None:
    """A transient failure of COPY_HISTORY is raised, not mistaken for a missing function."""

    def down(sql: str) -> list[tuple[Any, ...]] | BaseException:
        if "COPY_HISTORY" in sql:
            return WarehouseError("cannot connect to Snowflake", transient=True)
        return Snowflake().answer(sql)

    with pytest.raises(WarehouseError, match="cannot connect"):
        read_history(FakeWarehouse(down), _objects("copy"))


# -- copy mode --------------------------------------------------------------------------------


def test_copy_mode_copies_the_missing_and_the_unknown_files() -> None:
    """Copy mode COPYs what the history does not list (the table's load metadata skips what it
    loaded), a file staged beyond the history's reach included; it never refreshes a pipe."""
    loaded, missing, old = _key(0, 0, 30), _key(0, 10, 30), _key(1, 0, 20 * 24)
    staged = {
        loaded: NOW - timedelta(hours=30),
        missing: NOW - timedelta(hours=29),
        old: NOW - timedelta(days=20),
    }
    snowflake = Snowflake([Load(loaded, NOW - timedelta(hours=29))])
    report, warehouse = _run(snowflake, staged, "copy")
    assert (report.missing, report.unknown) == ([missing], [old])
    assert sorted(report.loaded) == sorted([missing, old])
    files = ", ".join(f"'{_relative(k)}'" for k in (missing, old))
    expected = (
        f'COPY INTO {TABLE} FROM @"ANALYTICS"."EVENTS"."ORDER_CREATED_STAGE" FILES = ({files}) {COPY_TAIL}'
    )
    assert _changes(warehouse) == [expected]
    _parses(expected)


# -- auto-ingest ------------------------------------------------------------------------------


def test_auto_ingest_hands_recent_gaps_to_the_pipe_one_refresh_per_folder() -> None:
    """Missing files staged within 7 days go to the pipe, one ALTER PIPE REFRESH per folder from
    the oldest of them; a dry run runs none, and nothing is ever COPYed."""
    by_pipe, first, second = _key(0, 0, 50), _key(0, 10, 50), _key(0, 20, 50)
    other = _key(2, 0, 3)
    staged = {
        by_pipe: NOW - timedelta(hours=50),
        first: NOW - timedelta(hours=49, minutes=30),
        second: NOW - timedelta(hours=49),
        other: NOW - timedelta(hours=3),
    }
    snowflake = Snowflake([Load(by_pipe, NOW - timedelta(hours=49), pipe="ORDER_CREATED_PIPE")])
    folder = _relative(first).rsplit("/", 1)[0] + "/"
    other_folder = _relative(other).rsplit("/", 1)[0] + "/"
    expected = [
        f"ALTER PIPE {PIPE} REFRESH PREFIX = '{folder}' MODIFIED_AFTER = "
        f"'{(NOW - timedelta(hours=49, minutes=30, seconds=1)).isoformat()}'",
        f"ALTER PIPE {PIPE} REFRESH PREFIX = '{other_folder}' MODIFIED_AFTER = "
        f"'{(NOW - timedelta(hours=3, seconds=1)).isoformat()}'",
    ]
    dry, warehouse = _run(snowflake, staged, "auto-ingest", dry_run=True)
    assert sorted(dry.refreshes) == sorted(expected)
    assert _changes(warehouse) == []
    report, warehouse = _run(snowflake, staged, "auto-ingest")
    assert sorted(_changes(warehouse)) == sorted(expected)
    assert sorted(report.handed_to_pipe) == sorted([first, second, other])
    assert (report.missing, report.manual, report.loaded) == ([first, second, other], [], [])
    for sql in expected:
        _parses(sql)


def test_a_folder_holding_a_copy_loaded_file_is_refreshed_file_by_file() -> None:
    """A refresh of a folder would have the pipe load a file staged later that only a COPY loaded
    (the pipe does not know it): that folder's missing files are refreshed one by one instead. A
    COPY-loaded file staged before the oldest missing one is outside MODIFIED_AFTER: one refresh."""
    missing, by_copy = _key(0, 0, 10), _key(0, 10, 10)
    staged = {missing: NOW - timedelta(hours=10), by_copy: NOW - timedelta(hours=9)}
    snowflake = Snowflake([Load(by_copy, NOW - timedelta(hours=8, minutes=30))])
    report, warehouse = _run(snowflake, staged, "auto-ingest")
    assert _changes(warehouse) == [
        f"ALTER PIPE {PIPE} REFRESH PREFIX = '{_relative(missing)}' MODIFIED_AFTER = "
        f"'{(NOW - timedelta(hours=10, seconds=1)).isoformat()}'"
    ]
    assert report.handed_to_pipe == [missing]
    staged = {missing: NOW - timedelta(hours=9), by_copy: NOW - timedelta(hours=10)}
    _, warehouse = _run(snowflake, staged, "auto-ingest")
    folder = _relative(missing).rsplit("/", 1)[0] + "/"
    assert _changes(warehouse) == [
        f"ALTER PIPE {PIPE} REFRESH PREFIX = '{folder}' MODIFIED_AFTER = "
        f"'{(NOW - timedelta(hours=9, seconds=1)).isoformat()}'"
    ]


def test_older_gaps_are_left_to_an_operator_with_the_statement_and_its_risk() -> None:
    """Beyond ALTER PIPE REFRESH's 7 days nothing runs: a missing file gets the COPY to run and
    its risk; a file beyond the history's reach is unknown, with a row count to check first."""
    missing, unknown = _key(0, 0, 10 * 24), _key(1, 100, 20 * 24)
    staged = {missing: NOW - timedelta(days=10), unknown: NOW - timedelta(days=20)}
    report, warehouse = _run(Snowflake(), staged, "auto-ingest")
    assert _changes(warehouse) == []
    assert (report.missing, report.unknown, report.refreshes) == ([missing], [unknown], [])
    certain, uncertain = report.manual
    stage = '"ANALYTICS"."EVENTS"."ORDER_CREATED_STAGE"'
    assert certain.files == (missing,)
    assert (
        certain.statement == f"COPY INTO {TABLE} FROM @{stage} FILES = ('{_relative(missing)}') {COPY_TAIL}"
    )
    assert "pendingFileCount 0" in certain.risk and "load twice" in certain.risk
    assert f"SYSTEM$PIPE_STATUS('{PIPE}')" in certain.risk
    assert certain.checks == ()
    assert (
        uncertain.statement == f"COPY INTO {TABLE} FROM @{stage} FILES = ('{_relative(unknown)}') {COPY_TAIL}"
    )
    assert "appear twice" in uncertain.risk and "beyond the history's 14 days" in uncertain.risk
    assert uncertain.checks == (
        f'SELECT COUNT(*) FROM {TABLE} WHERE "_PARTITION" = 1 AND "_OFFSET" BETWEEN 100 AND 109'
        ' AND "_REDRIVEN_AT" IS NULL',
    )
    for sql in (certain.statement, uncertain.statement, *uncertain.checks):
        _parses(sql)


def test_auto_ingest_on_load_history_refreshes_but_never_calls_a_file_missing() -> None:
    """Read from LOAD_HISTORY (no pipe loads), an unlisted file may have been loaded by the pipe:
    it is unknown; a recent one still goes to the pipe (which skips what it loaded)."""
    recent, old = _key(0, 0, 5), _key(0, 10, 10 * 24)
    staged = {recent: NOW - timedelta(hours=5), old: NOW - timedelta(days=10)}
    report, warehouse = _run(Snowflake(copy_history=False), staged, "auto-ingest")
    assert report.history == LOAD_HISTORY and report.history_note is not None
    assert (report.missing, report.unknown, report.handed_to_pipe) == ([], [old, recent], [recent])
    [step] = report.manual
    assert step.files == (old,) and "LOAD_HISTORY" in step.risk and step.checks
    assert [sql.split(" REFRESH")[0] for sql in _changes(warehouse)] == [f"ALTER PIPE {PIPE}"]


# -- replay and status ------------------------------------------------------------------------


def test_replay_into_the_pipes_table_hands_to_the_pipe_and_refuses_force() -> None:
    """Under auto-ingest, replay into the event's table refreshes the pipe instead of COPYing, and
    --force is refused with the reason and the safe alternative."""
    loaded, missing = _key(0, 0, 5), _key(0, 10, 5)
    staged = {loaded: NOW - timedelta(hours=5), missing: NOW - timedelta(hours=4)}
    snowflake = Snowflake([Load(loaded, NOW - timedelta(hours=4), pipe="ORDER_CREATED_PIPE")])
    warehouse = FakeWarehouse(snowflake.answer)
    store, objects = FakeStore(staged), _objects("auto-ingest")
    with pytest.raises(ConfigError, match="--force is refused under auto-ingest") as refused:
        plan_reload(warehouse, store, objects, since=None, until=None, force=True)  # type: ignore[arg-type]
    assert "--into a new table" in str(refused.value)
    assert warehouse.executed == []
    plan = plan_reload(warehouse, store, objects, since=None, until=None)  # type: ignore[arg-type]
    assert plan.handoff is not None and plan.to_load == []
    assert plan.already_loaded == frozenset({loaded})
    report = run_reload(warehouse, store, objects, plan)  # type: ignore[arg-type]
    assert report.handed_to_pipe == [missing]
    assert _changes(warehouse) == [refresh.statement for refresh in plan.handoff.refreshes]
    assert all(sql.startswith(f"ALTER PIPE {PIPE} REFRESH PREFIX = ") for sql in _changes(warehouse))


def test_replay_into_another_table_still_copies_under_auto_ingest() -> None:
    """--into another table is a plain COPY in either mode (a new table has no history)."""
    key = _key(0, 0, 5)
    snowflake = Snowflake([Load(key, NOW - timedelta(hours=4), pipe="ORDER_CREATED_PIPE")])

    def no_other_table(sql: str) -> list[tuple[Any, ...]] | BaseException:
        return [] if sql.startswith("SHOW TABLES") else snowflake.answer(sql)

    warehouse = FakeWarehouse(no_other_table)
    plan = plan_reload(  # type: ignore[arg-type]
        warehouse,
        FakeStore({key: NOW - timedelta(hours=5)}),
        _objects("auto-ingest"),
        since=None,
        until=None,
        into="COPY_OF",
    )
    assert plan.handoff is None and [f.key for f in plan.to_load] == [key]


def test_pipe_status_counts_unknown_files_apart_from_pending_ones() -> None:
    """Status reads COPY_HISTORY: a pipe-loaded file is loaded, an unlisted recent one pending, an
    unlisted one older than the history's reach unknown; the pipe's queue comes from its status."""
    by_pipe, pending, old = _key(0, 0, 5), _key(0, 10, 5), _key(1, 0, 20 * 24)
    staged = {
        by_pipe: NOW - timedelta(hours=5),
        pending: NOW - timedelta(hours=4),
        old: NOW - timedelta(days=20),
    }
    snowflake = Snowflake([Load(by_pipe, NOW - timedelta(hours=4), pipe="ORDER_CREATED_PIPE")])
    status = pipe_status(FakeWarehouse(snowflake.answer), FakeStore(staged), _objects("auto-ingest"))  # type: ignore[arg-type]
    document = json.loads(json.dumps(status.to_json(), default=str))
    assert (document["files_in_s3"], document["files_loaded"], document["files_pending"]) == (3, 1, 1)
    assert (document["files_unknown"], document["files_queued"], document["history"]) == (1, 2, COPY_HISTORY)
    assert document["last_file_loaded"] == _relative(by_pipe)
    assert document["history_note"] is None
