"""The loader's view of an event schema: named, typed, nullable fields.

Avro files are parsed into this small model (:mod:`loader.schema.avro`); the
type mapping (:mod:`loader.schema.types`) turns it into Arrow and Snowflake
types. Keeping one neutral model means one mapping, whatever the source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["RAW_PAYLOAD", "EventSchema", "FieldType", "SchemaField", "raw_schema"]

Kind = Literal[
    "int",
    "long",
    "float",
    "double",
    "boolean",
    "string",
    "decimal",
    "timestamp",
    "date",
    "record",
    "array",
    "variant",
]


@dataclass(frozen=True)
class FieldType:
    """A field's type; nested kinds carry their item/field types."""

    kind: Kind
    precision: int | None = None
    scale: int | None = None
    fields: tuple[SchemaField, ...] = ()
    items: FieldType | None = None


@dataclass(frozen=True)
class SchemaField:
    """One field of an event payload."""

    name: str
    type: FieldType
    nullable: bool
    has_default: bool = False
    doc: str = field(default="", compare=False)

    @property
    def column(self) -> str:
        """The Snowflake/Parquet column name: the field name, upper-cased."""
        return self.name.upper()


RAW_PAYLOAD = "payload"
"""The one field of a raw (schema-less) event: its whole payload, as a VARIANT column."""


@dataclass(frozen=True)
class EventSchema:
    """A versioned event schema (payload fields only; the envelope is fixed)."""

    name: str
    version: int
    fields: tuple[SchemaField, ...] = field(default_factory=tuple)


def raw_schema(event_name: str) -> EventSchema:
    """The schema of a raw event type: the envelope columns plus the payload as one VARIANT."""
    payload = SchemaField(name=RAW_PAYLOAD, type=FieldType(kind="variant"), nullable=False)
    return EventSchema(name=event_name, version=1, fields=(payload,))
