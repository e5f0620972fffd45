"""The one mapping from schema types to Arrow and Snowflake types.

Everything that decodes, writes or declares a column goes through here, so a
field has the same type in the decoder, the Parquet file and the table.
Nested values (records, arrays, maps) become Snowflake VARIANT columns.
"""

from __future__ import annotations

import pyarrow as pa

from loader.schema.model import EventSchema, FieldType, SchemaField

__all__ = [
    "CREATED_AT",
    "EXTRA",
    "EXTRA_FIELD",
    "KAFKA_TIMESTAMP_RANGE_MS",
    "METADATA_COLUMNS",
    "arrow_schema",
    "arrow_type",
    "snowflake_columns",
    "snowflake_type",
]

CREATED_AT = "_CREATED_AT"
"""When the event happened, per its producer: what freshness is measured on."""

# Row-metadata columns the worker writes next to the payload's fields:
# (name, Arrow type, Snowflake type, nullable). Where each row came from.
METADATA_COLUMNS: tuple[tuple[str, pa.DataType, str, bool], ...] = (
    ("_EVENT_ID", pa.string(), "VARCHAR", True),
    ("_EVENT_NAME", pa.string(), "VARCHAR", True),
    (CREATED_AT, pa.timestamp("us", tz="UTC"), "TIMESTAMP_TZ", True),
    ("_SOURCE", pa.string(), "VARCHAR", True),
    ("_SCHEMA_VERSION", pa.int64(), "NUMBER(38,0)", True),
    ("_TOPIC", pa.string(), "VARCHAR", False),
    ("_PARTITION", pa.int32(), "NUMBER(10,0)", False),
    ("_OFFSET", pa.int64(), "NUMBER(38,0)", False),
    ("_KAFKA_TIMESTAMP", pa.timestamp("ms", tz="UTC"), "TIMESTAMP_TZ", False),
    ("_KEY", pa.binary(), "BINARY", True),
    # The record's Kafka headers as a JSON array (see loader.encode.headers); null without any.
    ("_HEADERS", pa.json_(), "VARIANT", True),
)

EXTRA = "_EXTRA"
"""The payload fields the schema does not know, as one JSON object (a VARIANT; NULL when there
are none): see :mod:`loader.encode.extra`. Files have it when the spec keeps unknown fields."""
EXTRA_FIELD = pa.field(EXTRA, pa.json_(), nullable=True)

KAFKA_TIMESTAMP_RANGE_MS = (0, 253_402_300_799_999)
"""The Kafka timestamps ``_KAFKA_TIMESTAMP`` holds: 1970-01-01 to 9999-12-31T23:59:59.999Z.
Kafka has no time before its epoch (-1 means "no timestamp", other negative values are
refused by its Java client), and a TIMESTAMP_TZ (and Python's datetime) ends with year 9999."""


def arrow_type(field_type: FieldType) -> pa.DataType:
    """The Arrow type holding values of ``field_type``."""
    kind = field_type.kind
    simple: dict[str, pa.DataType] = {
        "int": pa.int32(),
        "long": pa.int64(),
        "float": pa.float32(),
        "double": pa.float64(),
        "boolean": pa.bool_(),
        "string": pa.string(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "date": pa.date32(),
        # JSON text, marked as JSON in Parquet (logical type JSON): it lands as a VARIANT.
        "variant": pa.json_(),
    }
    if kind in simple:
        return simple[kind]
    if kind == "decimal":
        assert field_type.precision is not None
        return pa.decimal128(field_type.precision, field_type.scale or 0)
    if kind == "record":
        return pa.struct([_arrow_field(f) for f in field_type.fields])
    if kind == "array":
        assert field_type.items is not None
        return pa.list_(arrow_type(field_type.items))
    raise ValueError(f"no Arrow type for {kind}")


def _arrow_field(field: SchemaField) -> pa.Field:
    # Nested fields stay nullable in Arrow: a null parent makes its children null,
    # and required-ness is enforced by the decoder, not by the file's schema.
    return pa.field(field.name, arrow_type(field.type), nullable=True)


def snowflake_type(field_type: FieldType) -> str:
    """The Snowflake column type for ``field_type``."""
    kind = field_type.kind
    mapping = {
        "int": "NUMBER(10,0)",
        "long": "NUMBER(19,0)",
        "float": "FLOAT",
        "double": "FLOAT",
        "boolean": "BOOLEAN",
        "string": "VARCHAR",
        "timestamp": "TIMESTAMP_TZ",
        "date": "DATE",
        "record": "VARIANT",
        "array": "VARIANT",
        "variant": "VARIANT",
    }
    if kind == "decimal":
        return f"NUMBER({field_type.precision},{field_type.scale or 0})"
    return mapping[kind]


def arrow_schema(schema: EventSchema) -> pa.Schema:
    """The Parquet file schema: payload columns (upper-cased names) then metadata columns."""
    payload = [pa.field(f.column, arrow_type(f.type), nullable=True) for f in schema.fields]
    metadata = [pa.field(name, typ, nullable=nullable) for name, typ, _, nullable in METADATA_COLUMNS]
    return pa.schema(payload + metadata)


def snowflake_columns(schema: EventSchema) -> list[tuple[str, str]]:
    """The table's (column, type) pairs, in file order."""
    payload = [(f.column, snowflake_type(f.type)) for f in schema.fields]
    return payload + [(name, sf) for name, _, sf, _ in METADATA_COLUMNS]
