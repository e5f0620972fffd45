"""Many Avro bodies of one writer schema into Arrow columns in one call, resolved to the reader's shape.

The bodies go into an in-memory Avro container file, one block holding them all,
read by polars' Avro reader (Rust, columnar). A container block does not say
where each record ends, so a body with a byte too many (or too few) would shift
the records after it into wrong rows without any error. To rule that out, each
body is followed by a random sentinel that the block's schema reads as a fixed
field after the record: a row whose sentinel is not the batch's own did not end
where its body did, and the block is not used (:class:`BlockRefused`; the caller
then isolates the culprits with smaller blocks).

Resolution from the writer's shape to the reader's (the spec's ``.avsc``) is done
on the Arrow columns with Avro's rules: fields matched by name or the reader's
aliases, the reader's default for a field the writer lacks, writer-only fields
dropped, promotions int → long → float → double and string ↔ bytes, timestamps in
either precision, and ``["null", T]`` unions on either side (a null meeting a
required reader field rejects that row). Writer schemas outside this set (enums,
maps, other unions, recursive types) are :class:`NotColumnar`: the caller decodes
those record by record.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["BlockRefused", "ColumnarWriter", "NotColumnar", "Unresolvable"]

SENTINEL_BYTES = 16
_SYNC = b"\x00" * 16


class NotColumnar(Exception):  # noqa: N818 - a verdict on the schema, not an error
    """The writer schema uses types the columnar path does not read."""


class Unresolvable(Exception):  # noqa: N818 - a verdict on the schema, not an error
    """The writer schema cannot be resolved to the reader's (every record of it is a dead letter)."""


class BlockRefused(Exception):  # noqa: N818 - the caller splits the block
    """The block could not be read record for record (a malformed body is in it).

    ``stable`` says whether the message depends on the bodies alone (a value the spec's type
    cannot hold), or also on the block around them (the reader's failure, a sentinel)."""

    def __init__(self, message: str, *, stable: bool = False) -> None:
        super().__init__(message)
        self.stable = stable


@dataclass(frozen=True)
class _Avro:
    """One Avro type reduced to what resolution needs: its kind, and nested parts."""

    kind: str
    nullable: bool = False
    fields: tuple[tuple[str, _Avro, tuple[str, ...], bool, Any], ...] = ()
    """Record fields: (name, type, aliases, has_default, default)."""
    items: _Avro | None = None
    precision: int = 0
    scale: int = 0


_PRIMITIVE = {"boolean", "int", "long", "float", "double", "string", "bytes"}
_LOGICAL = {
    ("long", "timestamp-millis"): "ts-ms",
    ("long", "timestamp-micros"): "ts-us",
    ("int", "date"): "date",
}
_PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
    "ts-ms": {"ts-us"},
    "ts-us": {"ts-ms"},
}
_ARROW = {
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "string": pa.string(),
    "bytes": pa.binary(),
    "ts-ms": pa.timestamp("us", tz="UTC"),
    "ts-us": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
}


def _parse(  # noqa: PLR0911, PLR0912 - one branch per kind of Avro type
    raw: Any, named: dict[str, Any], namespace: str, seen: frozenset[str]
) -> _Avro:
    """``raw`` (an Avro type in JSON) as an :class:`_Avro`; NotColumnar for what is not read here."""
    if isinstance(raw, list):
        branches = [b for b in raw if b != "null"]
        if len(raw) != 2 or len(branches) != 1 or raw[0] != "null":
            raise NotColumnar(f"union {json.dumps(raw)[:80]}")
        inner = _parse(branches[0], named, namespace, seen)
        return _Avro(inner.kind, True, inner.fields, inner.items, inner.precision, inner.scale)
    if isinstance(raw, str):
        if raw in _PRIMITIVE:
            return _Avro(raw)
        full = raw if "." in raw or not namespace else f"{namespace}.{raw}"
        for name in (full, raw):
            if name in named:
                if name in seen:
                    raise NotColumnar(f"recursive type {name}")
                return _parse(named[name], named, namespace, seen | {name})
        raise NotColumnar(f"type {raw[:80]}")
    if not isinstance(raw, dict):
        raise NotColumnar("a type that is not JSON text, array or object")
    base, logical = raw.get("type"), raw.get("logicalType")
    if logical == "decimal" and base == "bytes":
        return _Avro("decimal", precision=int(raw.get("precision", 0)), scale=int(raw.get("scale", 0)))
    if isinstance(base, str) and isinstance(logical, str) and (base, logical) in _LOGICAL:
        return _Avro(_LOGICAL[(base, logical)])
    if base == "record":
        name = str(raw.get("name", ""))
        space = str(raw.get("namespace", namespace)) if "." not in name else name.rsplit(".", 1)[0]
        full = name if "." in name or not space else f"{space}.{name}"
        named[full] = raw
        fields = []
        for field in raw.get("fields", []):
            aliases = tuple(str(a) for a in field.get("aliases", ()))
            inner = _parse(field["type"], named, space, seen | {full})
            fields.append((str(field["name"]), inner, aliases, "default" in field, field.get("default")))
        return _Avro("record", fields=tuple(fields))
    if base == "array":
        return _Avro("array", items=_parse(raw.get("items"), named, namespace, seen))
    if isinstance(base, (str, list, dict)) and not logical:
        return _parse(base, named, namespace, seen)
    raise NotColumnar(f"type {json.dumps(raw)[:80]}")


def _arrow(avro: _Avro) -> pa.DataType:
    if avro.kind == "decimal":
        return pa.decimal128(avro.precision, avro.scale)
    if avro.kind == "record":
        return pa.struct([pa.field(name, _arrow(t)) for name, t, *_ in avro.fields])
    if avro.kind == "array":
        assert avro.items is not None
        return pa.list_(_arrow(avro.items))
    return _ARROW[avro.kind]


class ColumnarWriter:
    """One writer schema, checked once against the reader: reads blocks of its bodies into
    reader-shaped Arrow columns."""

    def __init__(self, writer_text: str, reader: dict[str, Any], envelope: Sequence[str]) -> None:
        self.writer_text = writer_text
        document = json.loads(writer_text)
        if not isinstance(document, dict) or document.get("type") != "record":
            raise NotColumnar("the writer schema is not a record")
        try:
            self._writer = _parse(document, {}, "", frozenset())
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            raise NotColumnar(f"cannot read the writer schema: {exc}") from None
        self._reader = _parse(reader, {}, "", frozenset())
        self._check(self._writer, self._reader, "")
        self._envelope = [name for name in envelope if name in {f[0] for f in self._writer.fields}]
        self._block_schema = json.dumps(
            {
                "type": "record",
                "name": "LoaderBlock",
                "namespace": "loader.block",
                "fields": [
                    {"name": "record", "type": _without_defaults(document)},
                    {
                        "name": "sentinel",
                        "type": {"type": "fixed", "name": "Sentinel", "size": SENTINEL_BYTES},
                    },
                ],
            }
        ).encode()

    def _check(self, writer: _Avro, reader: _Avro, path: str) -> None:
        """Raise Unresolvable unless every record of ``writer`` resolves to ``reader`` (schema only)."""
        where = path or "the record"
        if writer.kind != reader.kind and reader.kind not in _PROMOTIONS.get(writer.kind, ()):
            raise Unresolvable(f"{where}: the writer's {writer.kind} cannot be read as {reader.kind}")
        if writer.kind == "decimal" and (writer.precision, writer.scale) != (reader.precision, reader.scale):
            raise Unresolvable(
                f"{where}: decimal({writer.precision},{writer.scale}) cannot be read as "
                f"decimal({reader.precision},{reader.scale})"
            )
        if writer.kind == "array":
            assert writer.items is not None
            assert reader.items is not None
            self._check(writer.items, reader.items, f"{path}[]")
        if writer.kind == "record":
            for name, field_type, aliases, has_default, default in reader.fields:
                found = _writer_field(writer, name, aliases)
                child = f"{path}.{name}" if path else name
                if found is not None:
                    self._check(found, field_type, child)
                elif not has_default:
                    raise Unresolvable(f"field {child!r} is not in the writer's schema and has no default")
                else:
                    _default_array(default, field_type, 1, child)

    def read(self, bodies: Sequence[bytes]) -> tuple[pa.StructArray, dict[str, list[Any]], list[str | None]]:
        """The reader-shaped payloads of ``bodies``, the writer's envelope fields, and per body
        None or why its row is refused (a null where the reader requires a value).

        Raises BlockRefused when the block cannot be read record for record."""
        sentinel = os.urandom(SENTINEL_BYTES)
        data = sentinel.join(bodies) + sentinel
        header = io.BytesIO()
        header.write(b"Obj\x01")
        _write_long(header, 2)
        for key, value in ((b"avro.schema", self._block_schema), (b"avro.codec", b"null")):
            _write_long(header, len(key))
            header.write(key)
            _write_long(header, len(value))
            header.write(value)
        _write_long(header, 0)
        header.write(_SYNC)
        _write_long(header, len(bodies))
        _write_long(header, len(data))
        container = header.getvalue() + data + _SYNC
        # Imported at first use: polars starts a thread pool, and the worker's supervisor forks
        # its children before any thread exists.
        import polars as pl  # noqa: PLC0415

        try:
            frame = pl.read_avro(io.BytesIO(container))
            table = frame.to_arrow(compat_level=pl.CompatLevel.oldest())
        except (Exception, pl.exceptions.PanicException) as exc:  # hostile bytes: any failure refuses
            raise BlockRefused(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        if table.num_rows != len(bodies):
            raise BlockRefused(f"read {table.num_rows} records from {len(bodies)} bodies")
        ends = table.column("sentinel").combine_chunks()
        if not pc.all(pc.equal(ends, pa.scalar(sentinel, ends.type))).as_py():
            raise BlockRefused("a record does not end where its body does (bytes missing or left over)")
        record = table.column("record").combine_chunks()
        problems: list[str | None] = [None] * len(bodies)
        try:
            payload = self._resolve(
                record,
                self._writer,
                self._reader,
                "",
                rows=pa.array(range(len(bodies)), pa.int64()),
                valid=pa.repeat(pa.scalar(value=True), len(bodies)),
                problems=problems,
            )
        except (pa.ArrowException, ValueError, OverflowError) as exc:
            raise BlockRefused(f"a value does not fit the spec's type: {exc}", stable=True) from None
        envelope = {name: record.field(name).to_pylist() for name in self._envelope}
        return payload, envelope, problems

    def _resolve(
        self,
        array: pa.Array,
        writer: _Avro,
        reader: _Avro,
        path: str,
        *,
        rows: pa.Array,
        valid: pa.Array,
        problems: list[str | None],
    ) -> pa.Array:
        """``array`` (the writer's shape) as the reader's type. ``rows`` maps each value to its
        record, ``valid`` says which values are reachable (no null parent); a reachable null the
        reader requires is noted against its record in ``problems``."""
        if array.null_count:
            if not reader.nullable:
                refused = pc.indices_nonzero(pc.and_(array.is_null(), valid))
                for row in pc.take(rows, refused).to_pylist():
                    if problems[row] is None:
                        problems[row] = f"field {path!r} is null in the record but the spec requires it"
            valid = pc.and_(valid, array.is_valid())
        if reader.kind == "record":
            assert isinstance(array, pa.StructArray)
            children: list[pa.Array] = []
            for name, field_type, aliases, _has_default, default in reader.fields:
                child = f"{path}.{name}" if path else name
                source = next(
                    (n for n in (name, *aliases) if _writer_field_named(writer, n) is not None), None
                )
                found = _writer_field_named(writer, source) if source is not None else None
                if source is None or found is None:
                    children.append(_default_array(default, field_type, len(array), child))
                    continue
                children.append(
                    self._resolve(
                        array.field(source),
                        found,
                        field_type,
                        child,
                        rows=rows,
                        valid=valid,
                        problems=problems,
                    )
                )
            names = [pa.field(f[0], _arrow(f[1])) for f in reader.fields]
            mask = array.is_null() if array.null_count else None
            return pa.StructArray.from_arrays(children, fields=names, mask=mask)
        if reader.kind == "array":
            assert writer.items is not None
            assert reader.items is not None
            parents = pc.list_parent_indices(array)
            items = self._resolve(
                array.flatten(),
                writer.items,
                reader.items,
                f"{path}[]",
                rows=pc.take(rows, parents),
                valid=pc.take(valid, parents),
                problems=problems,
            )
            lengths = pc.fill_null(pc.list_value_length(array), 0).cast(pa.int32())
            offsets = pa.concat_arrays([pa.array([0], pa.int32()), pc.cumulative_sum(lengths)])
            mask = array.is_null() if array.null_count else None
            return pa.ListArray.from_arrays(offsets, items, type=_arrow(reader), mask=mask)
        target = _arrow(reader)
        if reader.kind == "decimal":  # Avro does not bound a decimal's digits: the column does
            return pc.cast(pc.cast(array, pa.decimal128(38, reader.scale)), target)
        return array if array.type == target else pc.cast(array, target, safe=writer.kind == reader.kind)


def _without_defaults(schema: Any) -> Any:
    """``schema`` without its fields' defaults. A default only matters when resolving against
    another schema, never when reading data written with this one, and polars' reader refuses
    some that Avro allows (a string field's default: every block was refused)."""
    if isinstance(schema, list):
        return [_without_defaults(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {key: _without_defaults(value) for key, value in schema.items() if key != "default"}


def _writer_field_named(writer: _Avro, name: str) -> _Avro | None:
    return next((t for n, t, *_ in writer.fields if n == name), None)


def _writer_field(writer: _Avro, name: str, aliases: tuple[str, ...]) -> _Avro | None:
    """The writer's field for the reader's ``name``: same name, else one of the reader's aliases."""
    for candidate in (name, *aliases):
        found = _writer_field_named(writer, candidate)
        if found is not None:
            return found
    return None


def _default_array(default: Any, avro: _Avro, length: int, path: str) -> pa.Array:
    """``length`` copies of a reader field's default (Unresolvable when it is not one of its type)."""
    target = _arrow(avro)
    if default is None and avro.nullable:
        return pa.nulls(length, target)
    if default is None or avro.kind in ("bytes", "decimal"):
        shown = json.dumps(default)[:60]
        raise Unresolvable(f"field {path!r}: the loader cannot use its default {shown} for a {avro.kind}")
    try:
        if avro.kind in ("ts-ms", "ts-us", "date"):
            raw = pa.array([default] * length, pa.int32() if avro.kind == "date" else pa.int64())
            unit = {"ts-ms": pa.timestamp("ms", tz="UTC"), "ts-us": target, "date": target}[avro.kind]
            return pc.cast(pc.cast(raw, unit), target)
        return pa.array([default] * length, target)
    except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
        shown = json.dumps(default)[:60]
        raise Unresolvable(f"field {path!r}: its default {shown} is not a {avro.kind}: {exc}") from None


def _write_long(out: io.BytesIO, value: int) -> None:
    """Avro's zig-zag varint."""
    encoded = (value << 1) ^ (value >> 63)
    while encoded > 0x7F:
        out.write(bytes([(encoded & 0x7F) | 0x80]))
        encoded >>= 7
    out.write(bytes([encoded]))
