"""Split a decoded payload into what the schema knows and what it does not (``_EXTRA``).

A producer ahead of the spec sends fields the schema does not have yet. They are not
dropped: a row's ``_EXTRA`` holds them as one JSON object, shaped like the payload but
with the unknown fields only, at every depth:

- an unknown top-level field ``color`` is ``{"color": …}``;
- an unknown field ``floor`` inside the known record ``location`` is
  ``{"location": {"floor": …}}`` (its path is ``location.floor``);
- unknown fields inside the records of a known array ``items`` are
  ``{"items": [null, {"gift": …}]}``: one entry per item, null for an item with none
  (path ``items[].gift``).

A known field of type ``variant`` holds any JSON: nothing inside it is unknown. Whether a
key in ``_EXTRA`` is an unknown field or a known record holding unknown fields follows from
the schema (:func:`extra_paths` reads it back the same way).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from loader.schema.model import FieldType, SchemaField

__all__ = ["Split", "extra_paths", "split_unknown"]

Split = tuple[dict[str, Any] | None, list[str]]
"""The unknown fields of a payload (None when there are none) and their paths."""


def split_unknown(payload: Any, fields: Sequence[SchemaField]) -> Split:
    """The fields of ``payload`` (a decoded JSON object) that ``fields`` do not know, and the
    dotted path of each (``location.floor``, ``items[].gift``)."""
    paths: list[str] = []
    extra = _record(payload, fields, "", paths)
    return extra, paths


def _record(
    value: Any, fields: Sequence[SchemaField], prefix: str, paths: list[str]
) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    known = {f.name: f.type for f in fields}
    extra: dict[str, Any] = {}
    for key, item in value.items():
        field_type = known.get(key)
        if field_type is None:
            extra[key] = item
            paths.append(f"{prefix}{key}")
            continue
        nested = _nested(item, field_type, f"{prefix}{key}", paths)
        if nested is not None:
            extra[key] = nested
    return extra or None


def _nested(value: Any, field_type: FieldType, name: str, paths: list[str]) -> Any:
    """The unknown fields inside a known field's value: a dict for a record, a list (one entry
    per item) for an array of records; None when there are none."""
    if field_type.kind == "record":
        return _record(value, field_type.fields, f"{name}.", paths)
    if field_type.kind == "array" and isinstance(value, list):
        assert field_type.items is not None
        items = [_nested(item, field_type.items, f"{name}[]", paths) for item in value]
        return items if any(item is not None for item in items) else None
    return None


def extra_paths(extra: Any, fields: Sequence[SchemaField], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Each unknown field an ``_EXTRA`` object holds: (path, value), read against the schema
    the way :func:`split_unknown` wrote it."""
    if not isinstance(extra, dict):
        return
    known = {f.name: f.type for f in fields}
    for key, value in extra.items():
        field_type = known.get(key)
        if field_type is None:
            yield f"{prefix}{key}", value
        else:
            yield from _nested_paths(value, field_type, f"{prefix}{key}")


def _nested_paths(value: Any, field_type: FieldType, name: str) -> Iterator[tuple[str, Any]]:
    if field_type.kind == "record":
        yield from extra_paths(value, field_type.fields, f"{name}.")
    elif field_type.kind == "array" and isinstance(value, list):
        assert field_type.items is not None
        for item in value:
            yield from _nested_paths(item, field_type.items, f"{name}[]")
