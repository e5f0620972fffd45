"""Warehouse SQL: every identifier quoted, statements parse as Snowflake SQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlglot

from loader.config.identifiers import check_ident, quote_ident, quote_literal
from loader.config.settings import SnowflakeSettings
from loader.config.spec import load_specs
from loader.schema import load_avro_schema
from loader.warehouse.objects import EventObjects

pytestmark = pytest.mark.unit

SPEC = {s.name: s for s in load_specs(Path(__file__).parents[2] / "pipelines")}["order_created"]
assert SPEC.schema_path is not None
SCHEMA = load_avro_schema(SPEC.schema_path)


def _objects(**settings: object) -> EventObjects:
    return EventObjects(SPEC, SCHEMA, SnowflakeSettings(**settings))  # type: ignore[arg-type]


def test_statements_parse_as_snowflake_sql() -> None:
    """Create and copy statements parse with sqlglot's Snowflake dialect."""
    objects = _objects(storage_integration="S3_EVENTS")
    for statement in [*objects.create_statements(), objects.copy_statement(["dt=2026-11-27/a.parquet"])]:
        sqlglot.parse_one(statement, read="snowflake")


def test_table_has_schema_and_metadata_columns() -> None:
    """The table declares every schema field and every metadata column, quoted."""
    create_table = next(s for s in _objects().create_statements() if s.startswith("CREATE TABLE"))
    assert '"ANALYTICS"."EVENTS"."ORDER_CREATED"' in create_table
    for field in SCHEMA.fields:
        assert f'"{field.column}"' in create_table
    for column in ("_TOPIC", "_PARTITION", "_OFFSET", "_KAFKA_TIMESTAMP", "_EVENT_ID", "_CREATED_AT"):
        assert f'"{column}"' in create_table


def test_stage_points_at_data_prefix() -> None:
    """The stage covers only the data prefix: s3:// for Snowflake, file:// for fakesnow."""
    assert _objects().stage_url() == "s3://delivery-events/events/order_created/data/"
    local = _objects(local_stage_dir=Path("/var/stage")).stage_url()
    assert local == "file:///var/stage/delivery-events/events/order_created/data/"


def test_copy_names_files_and_matches_columns() -> None:
    """COPY loads the named files by column name with an explicit ON_ERROR."""
    copy = _objects().copy_statement(["a.parquet", "it's.parquet"])
    assert "FILES = ('a.parquet', 'it''s.parquet')" in copy
    assert "MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE" in copy
    assert "ON_ERROR = ABORT_STATEMENT" in copy


@pytest.mark.parametrize("name", ['a"b', "a b", "1abc", "a;drop", "", "x" * 300, "é"])
def test_hostile_identifiers_are_refused(name: str) -> None:
    """Names that are not plain identifiers never reach SQL."""
    with pytest.raises(ValueError, match="is not allowed"):
        quote_ident(name)


def test_identifiers_are_upper_cased_and_quoted() -> None:
    """Accepted names are upper-cased and double-quoted."""
    assert check_ident("order_created") == "ORDER_CREATED"
    assert quote_ident("order_created") == '"ORDER_CREATED"'
    assert quote_literal("a'b\\c") == "'a''b\\\\c'"
