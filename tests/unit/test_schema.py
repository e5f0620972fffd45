"""Avro schemas: parsing, refusals, and the one type mapping to Arrow and Snowflake."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from loader.errors import ConfigError
from loader.schema import arrow_schema, load_avro_schema, parse_avro_schema, snowflake_columns

pytestmark = pytest.mark.unit

SCHEMAS = Path(__file__).parents[2] / "schemas"


def _record(*fields: dict[str, object]) -> dict[str, object]:
    return {"type": "record", "name": "T", "version": 2, "fields": list(fields)}


def test_types_map_to_arrow_and_snowflake() -> None:
    """Each supported Avro type has its Arrow type and Snowflake column type."""
    schema = parse_avro_schema(
        _record(
            {"name": "id", "type": "string"},
            {"name": "n", "type": "int"},
            {"name": "big", "type": "long"},
            {"name": "ratio", "type": ["null", "double"]},
            {"name": "ok", "type": "boolean"},
            {
                "name": "price",
                "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2},
            },
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "day", "type": {"type": "int", "logicalType": "date"}},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
            {
                "name": "geo",
                "type": {"type": "record", "name": "G", "fields": [{"name": "lat", "type": "double"}]},
            },
        )
    )
    assert schema.version == 2
    columns = dict(snowflake_columns(schema))
    assert columns["ID"] == "VARCHAR"
    assert columns["N"] == "NUMBER(10,0)"
    assert columns["BIG"] == "NUMBER(19,0)"
    assert columns["RATIO"] == "FLOAT"
    assert columns["PRICE"] == "NUMBER(12,2)"
    assert columns["AT"] == "TIMESTAMP_TZ"
    assert columns["DAY"] == "DATE"
    assert columns["TAGS"] == "VARIANT"
    assert columns["GEO"] == "VARIANT"
    assert columns["_OFFSET"] == "NUMBER(38,0)"
    arrow = arrow_schema(schema)
    assert arrow.field("PRICE").type == pa.decimal128(12, 2)
    assert arrow.field("AT").type == pa.timestamp("us", tz="UTC")
    assert arrow.field("TAGS").type == pa.list_(pa.string())
    assert [f.nullable for f in schema.fields][:4] == [False, False, False, True]


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ({"name": "x; drop", "type": "string"}, "field name 'x; drop' is not allowed"),
        ({"name": "_offset", "type": "string"}, "reserved for metadata columns"),
        ({"name": "u", "type": ["null", "string", "int"]}, "only unions of null and one type"),
        ({"name": "d", "type": {"type": "bytes", "logicalType": "decimal", "precision": 40}}, "precision"),
        ({"name": "m", "type": {"type": "map", "values": "string"}}, "unsupported type"),
    ],
)
def test_unsupported_schemas_are_refused(field: dict[str, object], message: str) -> None:
    """Schemas the loader cannot map faithfully are refused with the reason."""
    with pytest.raises(ValueError, match=message):
        parse_avro_schema(_record(field))


def test_case_clash_is_refused() -> None:
    """Two fields that collide once upper-cased for Snowflake are refused."""
    with pytest.raises(ValueError, match="clashes"):
        parse_avro_schema(_record({"name": "a", "type": "string"}, {"name": "A", "type": "string"}))


def test_example_schemas_parse() -> None:
    """Every shipped schema parses and names its version."""
    for path in SCHEMAS.glob("*.avsc"):
        schema = load_avro_schema(path)
        assert schema.version >= 1
        assert schema.fields


def _nested_arrays(levels: int) -> dict[str, object]:
    inner: dict[str, object] | str = "string"
    for _ in range(levels):
        inner = {"type": "array", "items": inner}
    return _record({"name": "deep", "type": inner})


def test_types_nested_past_the_limit_are_refused() -> None:
    """Records and arrays may nest 32 levels; deeper is refused by name, not with a RecursionError."""
    parse_avro_schema(_nested_arrays(31))
    with pytest.raises(ValueError, match="nest more than 32 levels"):
        parse_avro_schema(_nested_arrays(33))


def test_a_schema_file_too_deep_for_the_json_parser_is_a_config_error(tmp_path: Path) -> None:
    """A schema file nested thousands of levels deep is refused with a message, not a traceback."""
    path = tmp_path / "deep.avsc"
    path.write_text(
        '{"type": "record", "name": "T", "fields": [{"name": "a", "type": ' + "[" * 100_000 + "]}]}"
    )
    with pytest.raises(ConfigError, match="nested more than 32 levels"):
        load_avro_schema(path)


def test_an_oversized_schema_file_is_refused_unread(tmp_path: Path) -> None:
    """A schema file above 1 MiB is refused before it is parsed."""
    path = tmp_path / "huge.avsc"
    path.write_text('{"doc": "' + "x" * (1024 * 1024) + '"}')
    with pytest.raises(ConfigError, match="larger than 1024 KiB"):
        load_avro_schema(path)
