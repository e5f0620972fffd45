"""What to add to a schema for the fields its producers send ahead of it (schema drift).

``loader schemas drift`` gathers the unknown fields of an event's rows (their ``_EXTRA``,
see :mod:`loader.encode.extra`) into one :class:`FieldDrift` per path; this module infers an
Avro type from each field's sample values and says where in the schema document the field
goes. Every suggested field is optional (a union with null, ``"default": null``), so the
schema stays backward compatible (``loader schemas check``) once they are added and its
``version`` is bumped.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from loader.schema.avro import RESERVED_PREFIX

__all__ = ["FieldDrift", "Suggestion", "apply_suggestions", "avro_type", "suggest"]

MAX_SAMPLES = 5
"""Distinct sample values kept per field (what ``drift`` shows)."""
MAX_INFER_VALUES = 1_000
"""Values per field the type is inferred from."""
INT32 = (-(2**31), 2**31 - 1)
_AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class FieldDrift:
    """One unknown field (by path) across the rows read."""

    path: str
    count: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    samples: list[Any] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)
    """Up to :data:`MAX_INFER_VALUES` values, for the type."""

    def add(self, value: Any, seen: datetime) -> None:
        self.count += 1
        self.first_seen = seen if self.first_seen is None else min(self.first_seen, seen)
        self.last_seen = seen if self.last_seen is None else max(self.last_seen, seen)
        if len(self.samples) < MAX_SAMPLES and value not in self.samples:
            self.samples.append(value)
        if len(self.values) < MAX_INFER_VALUES:
            self.values.append(value)


@dataclass(frozen=True)
class Suggestion:
    """An Avro field definition to add to the record at ``parent`` (a path; "" for the top)."""

    path: str
    parent: str
    definition: dict[str, Any] | None
    """None when the field cannot be added as it is (``note`` says why)."""
    note: str = ""


def avro_type(values: list[Any], name: str) -> tuple[Any, str]:
    """The Avro type (without null) holding every value of ``values``, and a note when it is
    a guess (only nulls seen, mixed types: ``string``). ``name`` names inferred records."""
    present = [v for v in values if v is not None]
    kinds = {_kind(v) for v in present}
    if kinds == {"record"}:
        return _record_type(present, name)
    if kinds == {"array"}:
        items, note = avro_type([item for v in present for item in v], f"{name}Item")
        return {"type": "array", "items": items}, note
    if kinds and kinds <= {"int", "long", "double"}:  # Avro promotes int -> long -> double
        return ("double" if "double" in kinds else "long" if "long" in kinds else "int"), ""
    if len(kinds) == 1:
        return kinds.pop(), ""
    if not kinds:
        return "string", "only nulls seen: string assumed"
    return "string", f"mixed types ({', '.join(sorted(kinds))}): string suggested, review it"


def _kind(value: Any) -> str:
    """The Avro type name of one JSON value (``record`` for an object, ``array`` for a list)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        low, high = INT32
        return "int" if low <= value <= high else "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, dict):
        return "record"
    if isinstance(value, list):
        return "array"
    return "string"


def _record_type(objects: list[dict[str, Any]], name: str) -> tuple[dict[str, Any], str]:
    keys: dict[str, list[Any]] = {}
    for obj in objects:
        for key in obj:
            keys.setdefault(key, [])
    for obj in objects:
        for key, values in keys.items():
            values.append(obj.get(key))
    fields: list[dict[str, Any]] = []
    notes: list[str] = []
    for key, values in keys.items():
        if not _AVRO_NAME.fullmatch(key):
            notes.append(f"key {key!r} is not an Avro name: left out")
            continue
        inner, note = avro_type(values, name + _camel(key))
        fields.append(_optional(key, inner))
        if note:
            notes.append(f"{key}: {note}")
    if not fields:
        return {"type": "record", "name": name, "fields": []}, "; ".join(notes)
    return {"type": "record", "name": name, "fields": fields}, "; ".join(notes)


def _optional(name: str, avro: Any) -> dict[str, Any]:
    return {"name": name, "type": ["null", avro], "default": None}


def _camel(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", text) if part)


def suggest(drift: list[FieldDrift]) -> list[Suggestion]:
    """The field definitions to add, one per unknown field, in path order."""
    suggestions: list[Suggestion] = []
    for item in sorted(drift, key=lambda d: d.path):
        parent, _, name = item.path.rpartition(".")
        if not _AVRO_NAME.fullmatch(name) or (not parent and name.startswith(RESERVED_PREFIX)):
            note = "not a valid field name (letters, digits, _; no leading _ at the top): rename it"
            suggestions.append(Suggestion(item.path, parent, None, note))
            continue
        avro, note = avro_type(item.values, "Extra" + _camel(item.path))
        if isinstance(avro, dict) and avro.get("type") == "record" and not avro["fields"]:
            suggestions.append(Suggestion(item.path, parent, None, f"an object without usable keys ({note})"))
            continue
        suggestions.append(Suggestion(item.path, parent, _optional(name, avro), note))
    return suggestions


def apply_suggestions(
    document: dict[str, Any], suggestions: list[Suggestion]
) -> tuple[dict[str, Any], list[str]]:
    """``document`` (an Avro record schema) with the suggested fields added and its
    ``version`` bumped, and the paths that could not be placed (with why)."""
    updated = copy.deepcopy(document)
    left: list[str] = []
    added = 0
    for suggestion in suggestions:
        if suggestion.definition is None:
            continue
        record = _record_at(updated, suggestion.parent)
        if record is None:
            left.append(f"{suggestion.path}: no record at {suggestion.parent!r} in the schema")
            continue
        fields = record.setdefault("fields", [])
        taken = {str(f.get("name", "")).upper() for f in fields if isinstance(f, dict)}
        if suggestion.definition["name"].upper() in taken:
            left.append(f"{suggestion.path}: clashes with a field of the same name once upper-cased")
            continue
        fields.append(suggestion.definition)
        added += 1
    if added:
        version = updated.get("version")
        updated["version"] = version + 1 if isinstance(version, int) else 2
    return updated, left


def _record_at(document: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The record type at ``path`` ("" the top, ``location``, ``items[]``) in an Avro document."""
    node: Any = document
    for step in [s for s in path.split(".") if s] if path else []:
        name, arrays = step.rstrip("[]"), (len(step) - len(step.rstrip("[]"))) // 2
        fields = node.get("fields") if isinstance(node, dict) else None
        match = next((f for f in fields or [] if isinstance(f, dict) and f.get("name") == name), None)
        if match is None:
            return None
        node = _unwrap(match.get("type"))
        for _ in range(arrays):
            is_array = isinstance(node, dict) and node.get("type") == "array"
            node = _unwrap(node.get("items")) if is_array else None
    return node if isinstance(node, dict) and node.get("type") == "record" else None


def _unwrap(avro: Any) -> Any:
    """The non-null branch of a ``["null", T]`` union, or the type itself."""
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        return branches[0] if len(branches) == 1 else None
    return avro
