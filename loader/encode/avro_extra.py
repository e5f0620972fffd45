"""The fields of an Avro writer schema the spec's (reader) schema does not know, for ``_EXTRA``.

Avro resolution drops writer-only fields. To keep them, each writer schema is compared
once with the reader's (fields matched by name or the reader's aliases, as resolution
does, at every depth through records, arrays and ``["null", T]`` unions): a writer
schema with no field of its own costs nothing more. Records of one that has some are
read a second time with the writer schema alone (fastavro), and the writer-only fields
are taken out in the shape :mod:`loader.encode.extra` gives JSON payloads (nested under
the reader's name of their known record, one entry per array item). Values become JSON:
decimals as strings, bytes in base64, timestamps in ISO-8601.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import fastavro
import orjson

__all__ = ["WriterOnly", "writer_only"]

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


@dataclass(frozen=True)
class _Node:
    """A writer field: writer-only (``known`` None), or a known one with writer-only fields
    inside (``inner``; ``array`` when they are in its items)."""

    known: str | None
    inner: dict[str, _Node]
    array: bool = False


class WriterOnly:
    """The writer-only fields of one writer schema, and how to take them out of its records."""

    def __init__(self, writer_document: Any, tree: dict[str, _Node]) -> None:
        self._writer = fastavro.parse_schema(writer_document)
        self._tree = tree

    def take(self, body: bytes) -> tuple[str | None, list[str]]:
        """The writer-only fields of one record body (Avro binary) as JSON text (None when the
        record has none set), and their paths. The body decoded as a row before: it reads."""
        datum = fastavro.schemaless_reader(io.BytesIO(body), self._writer, None)
        paths: list[str] = []
        extra = _take(datum, self._tree, "", paths)
        if extra is None:
            return None, []
        return orjson.dumps(extra, default=_json_default).decode(), paths


def writer_only(writer: Any, reader: Any, skip: frozenset[str] = frozenset()) -> WriterOnly | None:
    """How to take ``writer``'s fields that ``reader`` lacks out of its records (Avro schema
    documents, both records); None when it has none. ``skip``: top-level writer fields that are
    not payload fields (the envelope read from the record)."""
    names: dict[str, Any] = {}
    _collect_names(writer, names, None)
    tree = _record_tree(writer, reader, names, skip)
    return WriterOnly(writer, tree) if tree else None


def _record_tree(writer: Any, reader: Any, names: dict[str, Any], skip: frozenset[str]) -> dict[str, _Node]:
    by_name: dict[str, Any] = {}
    for field in reader.get("fields", []):
        for name in (field["name"], *field.get("aliases", [])):
            by_name.setdefault(name, field)
    tree: dict[str, _Node] = {}
    for field in writer.get("fields", []):
        name = field["name"]
        if name in skip:
            continue
        match = by_name.get(name)
        if match is None:
            tree[name] = _Node(known=None, inner={})
            continue
        node = _nested(field["type"], match["type"], names, match["name"])
        if node is not None:
            tree[name] = node
    return tree


def _nested(writer: Any, reader: Any, names: dict[str, Any], known: str) -> _Node | None:
    writer, reader = _resolve(_branch(writer), names), _branch(reader)
    if not isinstance(writer, dict) or not isinstance(reader, dict):
        return None
    if writer.get("type") == "record" and reader.get("type") == "record":
        inner = _record_tree(writer, reader, names, frozenset())
        return _Node(known=known, inner=inner) if inner else None
    if writer.get("type") == "array" and reader.get("type") == "array":
        items = _nested(writer.get("items"), reader.get("items"), names, known)
        return _Node(known=known, inner=items.inner, array=True) if items is not None else None
    return None


def _branch(avro: Any) -> Any:
    """The one non-null branch of a union (or the type); None for wider unions."""
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        return branches[0] if len(branches) == 1 else None
    return avro


def _resolve(avro: Any, names: dict[str, Any]) -> Any:
    """A named type referenced by name, as its definition."""
    if isinstance(avro, str) and avro not in _PRIMITIVES:
        return names.get(avro)
    return avro


def _collect_names(avro: Any, names: dict[str, Any], namespace: str | None) -> None:
    """Every named record definition in ``avro``, by its name and its full name."""
    if isinstance(avro, list):
        for branch in avro:
            _collect_names(branch, names, namespace)
        return
    if not isinstance(avro, dict):
        return
    if avro.get("type") == "record" and isinstance(avro.get("name"), str):
        namespace = avro.get("namespace", namespace)
        name = avro["name"]
        names[name] = avro
        names[f"{namespace}.{name}" if namespace and "." not in name else name] = avro
        for field in avro.get("fields", []):
            if isinstance(field, dict):
                _collect_names(field.get("type"), names, namespace)
    elif avro.get("type") == "array":
        _collect_names(avro.get("items"), names, namespace)


def _take(datum: Any, tree: dict[str, _Node], prefix: str, paths: list[str]) -> dict[str, Any] | None:
    if not isinstance(datum, dict):
        return None
    extra: dict[str, Any] = {}
    for name, node in tree.items():
        if name not in datum:
            continue
        value = datum[name]
        if node.known is None:
            extra[name] = value
            paths.append(f"{prefix}{name}")
            continue
        path = f"{prefix}{node.known}"
        if node.array:
            items = [_take(item, node.inner, f"{path}[].", paths) for item in value or []]
            if any(item is not None for item in items):
                extra[node.known] = items
        else:
            inner = _take(value, node.inner, f"{path}.", paths)
            if inner is not None:
                extra[node.known] = inner
    return extra or None


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON")
