"""The pipe manager's plans against a scripted warehouse: auto-ingest DDL and the safe pipe swap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlglot

from loader.config.settings import Settings, SnowflakeSettings
from loader.config.spec import load_specs
from loader.warehouse.manager import WAIT_FOR_PIPE, PipeManager

pytestmark = pytest.mark.unit

SPEC = load_specs(Path(__file__).parents[2] / "pipelines", ["order_created"])[0]


class ScriptedWarehouse:
    """Answers SHOW/DESC like a warehouse where everything exists except what ``missing`` names."""

    def __init__(self, manager_objects: Any, pipe_definition: str | None, missing: set[str]) -> None:
        self.objects = manager_objects
        self.pipe_definition = pipe_definition
        self.missing = missing
        self.executed: list[str] = []

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        self.executed.append(sql)
        o = self.objects
        if sql.startswith("SHOW DATABASES"):
            return [] if "database" in self.missing else [(None, "ANALYTICS")]
        if sql.startswith("SHOW SCHEMAS"):
            return [(None, "EVENTS")]
        if sql.startswith("SHOW TABLES"):
            return [(None, "ORDER_CREATED")]
        if sql.startswith("DESC TABLE"):
            return [(c.name, c.type, "COLUMN", "Y" if c.nullable else "N") for c in o.columns()]
        if sql.startswith("SHOW FILE FORMATS"):
            return [(None, o.file_format_name)]
        if sql.startswith("SHOW STAGES"):
            return [(None, o.stage_name, None, None, o.stage_url())]
        if sql.startswith("SHOW PIPES"):
            return (
                []
                if self.pipe_definition is None
                else [
                    (
                        None,
                        o.pipe_name,
                        None,
                        None,
                        self.pipe_definition,
                        None,
                        "arn:aws:sqs:us-east-1:1:sf-snowpipe",
                    )
                ]
            )
        if "SYSTEM$PIPE_STATUS" in sql:
            return [('{"executionState":"PAUSED","pendingFileCount":0}',)]
        return []


def _manager(
    definition: str | None, missing: set[str] | None = None
) -> tuple[PipeManager, ScriptedWarehouse]:
    settings = Settings(snowflake=SnowflakeSettings(load_mode="auto-ingest", storage_integration="S3_EVENTS"))
    manager = PipeManager(None, settings)  # type: ignore[arg-type]
    warehouse = ScriptedWarehouse(manager.objects(SPEC), definition, missing or set())
    manager.warehouse = warehouse  # type: ignore[assignment]
    return manager, warehouse


def test_fresh_auto_ingest_plan_parses_as_snowflake_sql() -> None:
    """On an empty account every statement, the AUTO_INGEST pipe included, is valid Snowflake SQL."""
    manager, _ = _manager(None, {"database"})
    plan = manager.plan(SPEC)
    statements = [s.sql for s in plan.steps]
    assert any("AUTO_INGEST = TRUE AS COPY INTO" in s for s in statements)
    assert any("STORAGE_INTEGRATION" in s for s in statements)
    for statement in statements:
        sqlglot.parse_one(statement, read="snowflake")


def test_changed_copy_follows_the_safe_sequence() -> None:
    """A pipe whose COPY changed is paused, drained, recreated and resumed, in that order."""
    manager, _warehouse = _manager("COPY INTO somewhere_else FROM @x")
    plan = manager.plan(SPEC)
    kinds = [
        s.sql.split(" SET ")[-1] if s.sql.startswith("ALTER PIPE") else s.sql.split(" AS ")[0]
        for s in plan.steps
    ]
    assert kinds[0] == "PIPE_EXECUTION_PAUSED = TRUE"
    assert kinds[1] == WAIT_FOR_PIPE
    assert kinds[2].startswith("CREATE OR REPLACE PIPE")
    assert kinds[3] == "PIPE_EXECUTION_PAUSED = FALSE"


def test_unchanged_pipe_plans_nothing() -> None:
    """When everything matches, the plan is empty."""
    manager, _ = _manager(None)
    definition = manager.objects(SPEC).pipe_copy()
    manager, _ = _manager(definition)
    assert manager.plan(SPEC).empty


def test_pipe_status_names_are_quoted_literals() -> None:
    """SYSTEM$PIPE_STATUS gets its pipe name as a quoted literal, whatever the name holds."""
    manager, warehouse = _manager(None)
    manager._wait_until_drained("P'IPE", sleep=lambda _s: None)
    assert warehouse.executed == ["SELECT SYSTEM$PIPE_STATUS('P''IPE')"]


def test_show_like_patterns_are_quoted_literals() -> None:
    """A name reaches SHOW … LIKE as a quoted literal even if it slipped past validation."""
    hostile = SPEC.model_copy(update={"snowflake": SPEC.snowflake.model_copy(update={"database": "A'B"})})
    manager, warehouse = _manager(None, {"database"})
    with pytest.raises(ValueError, match="not allowed"):
        manager.plan(hostile)  # CREATE DATABASE refuses the name itself
    assert warehouse.executed[0] == "SHOW DATABASES LIKE 'A''B'"


def test_copy_mode_records_parameters_never_sql() -> None:
    """In copy mode LOADER_PIPES gets the pipe's names and ON_ERROR as literals, and no statement."""
    manager = PipeManager(None, Settings())  # type: ignore[arg-type]
    objects = manager.objects(SPEC)
    delete, insert = objects.record_pipe()
    assert "COPY" not in insert.upper().replace("LOADER_PIPES", "")
    record = objects.pipe_record()
    for value in (record.table, record.stage, record.file_format, record.on_error):
        assert f"'{value}'" in insert
    sqlglot.parse_one(insert, read="snowflake")
    sqlglot.parse_one(delete, read="snowflake")
