"""Read Avro schema files (``.avsc``) into :class:`~loader.schema.model.EventSchema`.

Why Avro: its logical types name exactly what a warehouse column needs
(decimal with precision and scale, timestamp, date), and Confluent Schema
Registry's compatibility rules for it are precise. Payloads still travel as
JSON; the schema describes that JSON. The schema's version is the integer in
its ``"version"`` attribute (Avro ignores unknown attributes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loader.config.identifiers import check_ident
from loader.errors import ConfigError, clip, excerpt
from loader.schema.model import EventSchema, FieldType, SchemaField

__all__ = ["load_avro_schema", "parse_avro_schema"]

_PRIMITIVES = {
    "int": "int",
    "long": "long",
    "float": "float",
    "double": "double",
    "boolean": "boolean",
    "string": "string",
}
_LOGICAL = {"timestamp-millis": "timestamp", "timestamp-micros": "timestamp", "date": "date"}
RESERVED_PREFIX = "_"
MAX_SCHEMA_BYTES = 1024 * 1024
"""The largest schema file read; real ones are a few kilobytes."""
MAX_NESTING = 32
"""How deep records and arrays may nest. Deeper types are no table a person queries, and
unbounded nesting would exhaust the parser's stack."""


def load_avro_schema(path: Path) -> EventSchema:
    """Parse an ``.avsc`` file; raise ConfigError naming the file and the problem."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_SCHEMA_BYTES + 1)
        if len(raw) > MAX_SCHEMA_BYTES:
            raise ConfigError(
                f"{path}: larger than {MAX_SCHEMA_BYTES // 1024} KiB; real schemas are a few KiB"
            )
        document = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable JSON Avro schema: {clip(str(exc), 300)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested more than {MAX_NESTING} levels deep") from None
    try:
        return parse_avro_schema(document)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse_avro_schema(document: Any) -> EventSchema:
    """Parse a decoded Avro record schema; raise ValueError saying what is wrong."""
    if not isinstance(document, dict) or document.get("type") != "record":
        # One error type for every schema problem, whatever its cause.
        raise ValueError('the top level must be an Avro record ({"type": "record", ...})')
    version = document.get("version", 1)
    if not isinstance(version, int) or version < 1:
        raise ValueError(f'"version" must be a positive integer (got {excerpt(version)})')
    fields = _parse_fields(document, depth=0)
    return EventSchema(name=str(document.get("name", "")), version=version, fields=fields)


def _parse_fields(record: dict[str, Any], *, depth: int) -> tuple[SchemaField, ...]:
    top_level = depth == 0
    raw_fields = record.get("fields")
    if not isinstance(raw_fields, list) or not raw_fields:
        raise ValueError(f"record {excerpt(record.get('name'))} needs a non-empty 'fields' list")
    parsed: list[SchemaField] = []
    seen: set[str] = set()
    for raw in raw_fields:
        if not isinstance(raw, dict) or "name" not in raw or "type" not in raw:
            raise ValueError(f"every field needs a name and a type (got {excerpt(raw)})")
        name = raw["name"]
        if not isinstance(name, str):
            raise ValueError(f"field name must be a string (got {excerpt(name)})")
        check_ident(name, "field name")
        if top_level and name.startswith(RESERVED_PREFIX):
            raise ValueError(f"field {name!r}: names starting with '_' are reserved for metadata columns")
        if name.upper() in seen:
            raise ValueError(f"field {name!r} clashes with another field once upper-cased for Snowflake")
        seen.add(name.upper())
        field_type, nullable = _parse_type(raw["type"], name, depth)
        parsed.append(
            SchemaField(
                name=name,
                type=field_type,
                nullable=nullable,
                has_default="default" in raw,
                doc=str(raw.get("doc", "")),
            )
        )
    return tuple(parsed)


def _parse_type(raw: Any, where: str, depth: int) -> tuple[FieldType, bool]:
    """Return (type, nullable) for an Avro type expression ``depth`` levels deep."""
    if depth >= MAX_NESTING:
        raise ValueError(f"field {where!r}: types nest more than {MAX_NESTING} levels deep")
    if isinstance(raw, list):
        branches = [b for b in raw if b != "null"]
        if len(branches) != 1:
            raise ValueError(f"field {where!r}: only unions of null and one type are supported")
        inner, _ = _parse_type(branches[0], where, depth + 1)
        return inner, len(branches) != len(raw)
    if isinstance(raw, str):
        if raw in _PRIMITIVES:
            return FieldType(kind=_PRIMITIVES[raw]), False  # type: ignore[arg-type]
        raise ValueError(f"field {where!r}: unsupported type {excerpt(raw)}")
    if isinstance(raw, dict):
        return _parse_complex(raw, where, depth), False
    raise ValueError(f"field {where!r}: cannot read type {excerpt(raw)}")


def _parse_complex(raw: dict[str, Any], where: str, depth: int) -> FieldType:
    logical = raw.get("logicalType")
    base = raw.get("type")
    if logical == "decimal":
        precision, scale = raw.get("precision"), raw.get("scale", 0)
        if not isinstance(precision, int) or not 1 <= precision <= 38:
            raise ValueError(f"field {where!r}: decimal precision must be 1..38")
        if not isinstance(scale, int) or not 0 <= scale <= precision:
            raise ValueError(f"field {where!r}: decimal scale must be 0..precision")
        return FieldType(kind="decimal", precision=precision, scale=scale)
    if logical in _LOGICAL:
        return FieldType(kind=_LOGICAL[logical])  # type: ignore[arg-type]
    if base == "record":
        return FieldType(kind="record", fields=_parse_fields(raw, depth=depth + 1))
    if base == "array":
        items, _ = _parse_type(raw.get("items"), where, depth + 1)
        return FieldType(kind="array", items=items)
    if base in _PRIMITIVES:
        return FieldType(kind=_PRIMITIVES[base])  # type: ignore[arg-type]
    raise ValueError(f"field {where!r}: unsupported type {excerpt(raw)}")
