"""Event schemas: Avro files, the neutral field model, and the one type mapping."""

from __future__ import annotations

from loader.schema.avro import load_avro_schema, parse_avro_schema
from loader.schema.model import EventSchema, FieldType, SchemaField
from loader.schema.types import METADATA_COLUMNS, arrow_schema, snowflake_columns

__all__ = [
    "METADATA_COLUMNS",
    "EventSchema",
    "FieldType",
    "SchemaField",
    "arrow_schema",
    "load_avro_schema",
    "parse_avro_schema",
    "snowflake_columns",
]
