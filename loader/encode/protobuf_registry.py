"""Decode Confluent wire-format Protobuf values (``format: protobuf-registry``) into the file's Arrow schema.

A value is the magic byte 0, the writer schema's registry id (4 bytes, big-endian), the
message indexes (zigzag varints: their count, then each index; a single 0 byte for the
file's first message), then the message in Protobuf binary. The writer schema comes from
a lookup by id (:class:`WriterProtos`, the registry client in production), as the base64
``FileDescriptorProto`` confluent-kafka's ProtobufSerializer registers, or as ``.proto``
text (compiled by protoc: :mod:`loader.schema.proto_text`).

The table's shape stays the spec's ``.avsc`` (so ``schemas check``, ``drift`` and the
table's columns work as for the other formats); the spec's ``schema.message`` names the
Protobuf message type it takes, and the message's fields map to the spec's fields by
name (README, "Protobuf values"). Each writer schema is checked once against the spec: a
field whose type does not map, or a required spec field the message lacks, makes every
record of that schema id a dead letter with the reason. A field with presence (proto3
``optional``, a message, proto2) that is unset is null; a proto3 scalar without presence
has its zero value, as Protobuf defines. The message's fields the spec does not know go
to ``_EXTRA`` (top level only).

Decoding: upb parses each message (one C call), and the spec's fields are read from it
straight into column lists, turned into Arrow arrays once per batch; a value that does
not fit its column (a uint64 above the long range) makes its record a dead letter.
Nothing a producer sends raises out of :meth:`ProtobufRegistryDecoder.decode`; only a
transient lookup failure (the registry down) propagates, so the batch is retried.
"""

from __future__ import annotations

import base64
import binascii
import importlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any, Protocol, runtime_checkable

import orjson
import pyarrow as pa
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from google.protobuf.message import DecodeError, Message

from loader.encode.avro_registry import (
    MAGIC,
    WIRE_HEADER_BYTES,
    _Envelope,
    _envelope_arrays,
    _RecordError,
    _timestamp,
    _version,
    envelope_columns,
)
from loader.encode.decode import (
    ENVELOPE_FIELDS,
    REQUIRED_ENVELOPE,
    DecodedBatch,
    KafkaRecord,
    Rejected,
    header_envelope,
    kafka_columns,
    screen,
    with_rejected,
)
from loader.errors import clip
from loader.schema.model import EventSchema, FieldType, SchemaField
from loader.schema.proto_text import ProtoTextError, compile_proto
from loader.schema.registry_client import WriterSchemaError
from loader.schema.types import EXTRA_FIELD, arrow_schema, arrow_type

__all__ = ["ProtobufRegistryDecoder", "WriterProtos", "message_indexes"]

_REASON_CHARS = 300
_MAX_INDEXES = 32
"""Message indexes a value may carry (nesting depth of its message type); more is garbage."""
_TIMESTAMP = "google.protobuf.Timestamp"
_WRAPPERS = frozenset(
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_T = FieldDescriptor
_INTS = frozenset({_T.TYPE_INT32, _T.TYPE_SINT32, _T.TYPE_SFIXED32})
_LONGS = _INTS | {
    _T.TYPE_UINT32,
    _T.TYPE_FIXED32,
    _T.TYPE_INT64,
    _T.TYPE_SINT64,
    _T.TYPE_SFIXED64,
    _T.TYPE_UINT64,
    _T.TYPE_FIXED64,
}
_SCALARS: dict[str, frozenset[int]] = {
    "int": _INTS,
    "long": _LONGS,
    "float": frozenset({_T.TYPE_FLOAT}),
    "double": frozenset({_T.TYPE_FLOAT, _T.TYPE_DOUBLE}),
    "boolean": frozenset({_T.TYPE_BOOL}),
    "string": frozenset({_T.TYPE_STRING, _T.TYPE_ENUM}),
}
"""Which Protobuf scalar types fill a spec field of each kind (README's type table)."""


@runtime_checkable
class WriterProtos(Protocol):
    """Protobuf writer schemas by registry id (:class:`~loader.schema.registry_client.RegistryClient` fits).

    Raises :class:`~loader.schema.registry_client.WriterSchemaError` for an id it cannot
    give (the records carrying it become dead letters); any other error propagates."""

    def protobuf_schema(self, schema_id: int) -> str: ...


_Read = tuple[list[KafkaRecord], list[list[Any]], list[pa.Array], list[dict[str, Any]]]
"""A batch read: the records that give rows, their column values, their envelope columns
and their writer-only fields."""

_Convert = Callable[[Any], Any]
"""Turns a field's Protobuf value into the spec column's Python value."""


@dataclass(frozen=True)
class _Column:
    """How one spec field is read from messages of one writer type."""

    name: str
    field: FieldDescriptor | None
    """None: the message has no such field (the column is null)."""
    convert: _Convert
    presence: bool
    """The field tells unset from its zero value (unset: null)."""


@dataclass(frozen=True)
class _Plan:
    """How records of one (schema id, message indexes) become rows."""

    message_class: type[Message]
    columns: tuple[_Column, ...]
    envelope: tuple[tuple[FieldDescriptor, _Column], ...]
    """The message's fields named like envelope fields the spec does not have (an unset or,
    without presence, zero value counts as absent)."""
    extra: frozenset[str]
    """Names of the message's fields the spec does not know (for ``_EXTRA``)."""


def message_indexes(value: bytes, start: int = WIRE_HEADER_BYTES) -> tuple[tuple[int, ...], int]:
    """The message indexes after the schema id, and where the message starts; ValueError
    when they are not well-formed zigzag varints (Confluent's encoding)."""
    count, pos = _zigzag(value, start)
    if count == 0:
        return (0,), pos
    if count < 0 or count > _MAX_INDEXES:
        raise ValueError(f"message index count {count} is out of range")
    indexes = []
    for _ in range(count):
        index, pos = _zigzag(value, pos)
        if index < 0:
            raise ValueError(f"message index {index} is negative")
        indexes.append(index)
    return tuple(indexes), pos


def _zigzag(value: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(value):
            raise ValueError("the message indexes end before the value does")
        byte = value[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("a message index varint is longer than 10 bytes")


class ProtobufRegistryDecoder:
    """Decodes Confluent wire-format Protobuf values of one event type into the file's Arrow schema."""

    def __init__(
        self, schema: EventSchema, message: str, writer_protos: WriterProtos, *, keep_extra: bool = True
    ) -> None:
        self.schema = schema
        self.message = message
        self.keep_extra = keep_extra
        base = arrow_schema(schema)
        self.file_schema = base.append(EXTRA_FIELD) if keep_extra else base
        self._writer_protos = writer_protos
        self._types = [arrow_type(f.type) for f in schema.fields]
        self._record_envelope = frozenset(ENVELOPE_FIELDS) - {f.name for f in schema.fields}
        self._pools: dict[int, FileDescriptor | str] = {}
        """Per schema id: its descriptors, or why there are none (an id never changes meaning)."""
        self._plans: dict[tuple[int, tuple[int, ...]], _Plan | str] = {}

    def decode(self, records: Sequence[KafkaRecord]) -> DecodedBatch:
        """Decode ``records`` (consecutive records of one partition); raises only when the
        writer-schema lookup fails transiently (the batch is then retried).

        Each value is parsed by Protobuf's C parser; the columns are then read one column
        at a time over the batch's messages (:meth:`_read_columns`). A batch that path
        cannot read whole (several writer types, a value that does not convert, an envelope
        not in the common form) is read record by record, which gives each record its reason."""
        kept, rejected = screen(records)
        parsed: list[tuple[KafkaRecord, _Plan, Message]] = []
        for record in kept:
            try:
                plan, message = self._parse(record)
            except _RecordError as exc:
                rejected.append(Rejected(record, str(exc)))
                continue
            parsed.append((record, plan, message))
        read = self._read_columns(parsed) or self._read_each(parsed, rejected)
        good, values, envelope, extras = read
        arrays, bad = self._arrays(values)
        if bad:
            rejected += [Rejected(good[i], reason) for i, reason in sorted(bad.items())]
            keep = pa.array(sorted(set(range(len(good))) - set(bad)), pa.int64())
            arrays = [a.take(keep) for a in arrays]
            envelope = [a.take(keep) for a in envelope]
            good = [good[i] for i in keep.to_pylist()]
            extras = [extras[i] for i in keep.to_pylist()]
        unknown = Counter(name for extra in extras for name in extra)
        table = self._file_table(good, arrays, envelope, extras) if good else self.file_schema.empty_table()
        return with_rejected(DecodedBatch(table, [], unknown), rejected)

    def _parse(self, record: KafkaRecord) -> tuple[_Plan, Message]:
        """The record's writer plan and parsed message, or _RecordError."""
        value = record.value
        schema_id = _schema_id(value)
        assert value is not None  # _schema_id refuses a tombstone
        try:
            indexes, start = message_indexes(value)
        except ValueError as exc:
            raise _RecordError(f"schema id {schema_id}: bad message indexes: {exc}") from None
        plan = self._plan(schema_id, indexes)
        try:
            return plan, plan.message_class.FromString(value[start:])
        except (DecodeError, RecursionError) as exc:
            raise _RecordError(
                f"schema id {schema_id}: not a valid Protobuf {self.message}: {clip(str(exc), _REASON_CHARS)}"
            ) from None

    def _read_columns(self, parsed: list[tuple[KafkaRecord, _Plan, Message]]) -> _Read | None:
        """The batch read a column at a time, or None when it must be read record by record
        (see :meth:`decode`)."""
        if not parsed or len({id(plan) for _, plan, _ in parsed}) != 1:
            return None
        plan = parsed[0][1]
        if plan.extra or plan.envelope:
            # Writer-only fields are found per message, and an envelope field of the message
            # counts as absent at its zero value: both are read record by record.
            return None
        good = [record for record, _, _ in parsed]
        messages = [message for _, _, message in parsed]
        try:
            values = [_column_values(messages, column) for column in plan.columns]
        except (ValueError, OverflowError):
            return None
        envelope, odd = envelope_columns(good, {})
        if any(odd):
            return None
        return good, values, envelope, [{}] * len(good)

    def _read_each(self, parsed: list[tuple[KafkaRecord, _Plan, Message]], rejected: list[Rejected]) -> _Read:
        """The batch read record by record; each record that cannot be a row is rejected."""
        good: list[KafkaRecord] = []
        values: list[list[Any]] = [[] for _ in self.schema.fields]
        envelopes: list[_Envelope] = []
        extras: list[dict[str, Any]] = []
        for record, plan, message in parsed:
            try:
                row, envelope, extra = self._read(record, plan, message)
            except _RecordError as exc:
                rejected.append(Rejected(record, str(exc)))
                continue
            good.append(record)
            for column, value in zip(values, row, strict=True):
                column.append(value)
            envelopes.append(envelope)
            extras.append(extra)
        return good, values, _envelope_arrays(envelopes) if envelopes else [], extras

    def _read(
        self, record: KafkaRecord, plan: _Plan, message: Message
    ) -> tuple[list[Any], _Envelope, dict[str, Any]]:
        """One record's column values, envelope and writer-only fields, or _RecordError."""
        schema_id = _schema_id(record.value)
        try:
            row = [_column_value(message, c) for c in plan.columns]
        except (ValueError, OverflowError) as exc:
            raise _RecordError(f"schema id {schema_id}: {clip(str(exc), _REASON_CHARS)}") from None
        found = {f.name: _column_value(message, c) for f, c in plan.envelope}
        try:
            extra = {f.name: _json_value(f, v) for f, v in message.ListFields() if f.name in plan.extra}
        except (TypeError, ValueError, json_format.Error) as exc:  # an Any of a type the pool lacks
            raise _RecordError(
                f"schema id {schema_id}: a field the spec does not know cannot be kept in _EXTRA as JSON: "
                f"{clip(str(exc), _REASON_CHARS)}"
            ) from None
        return row, self._envelope(record, found), extra

    def _plan(self, schema_id: int, indexes: tuple[int, ...]) -> _Plan:
        key = (schema_id, indexes)
        plan = self._plans.get(key)
        if plan is None:
            pool = self._pool(schema_id)
            if isinstance(pool, str):
                raise _RecordError(pool)
            descriptor = _message_at(pool, indexes)
            if descriptor is None:  # not cached: the bytes choose the indexes, the cache stays bounded
                where = f"schema id {schema_id}: message indexes {list(indexes)}"
                raise _RecordError(f"{where} name no message of the writer schema")
            plan = self._new_plan(schema_id, descriptor)
            self._plans[key] = plan
        if isinstance(plan, str):
            raise _RecordError(plan)
        return plan

    def _new_plan(self, schema_id: int, descriptor: Descriptor) -> _Plan | str:
        """The plan of a writer message type, or why its records cannot become rows."""
        what = f"schema id {schema_id}"
        if descriptor.full_name != self.message:
            return f"{what}: the value is a {descriptor.full_name}, the spec takes {self.message}"
        try:
            columns = tuple(_column(descriptor, f) for f in self.schema.fields)
        except ValueError as exc:
            return f"{what}: {descriptor.full_name} does not map to the spec's schema: {exc}"
        known = {f.name for f in self.schema.fields}
        envelope = tuple(
            (f, _Column(f.name, f, _timestamp_value if f.message_type else _same, f.has_presence))
            for f in descriptor.fields
            if f.name in self._record_envelope
            and not _is_repeated(f)
            and (f.message_type is None or f.message_type.full_name == _TIMESTAMP)
        )
        extra = frozenset(f.name for f in descriptor.fields if f.name not in known | self._record_envelope)
        return _Plan(message_factory.GetMessageClass(descriptor), columns, envelope, extra)

    def _pool(self, schema_id: int) -> FileDescriptor | str:
        pool = self._pools.get(schema_id)
        if pool is None:
            try:
                text = self._writer_protos.protobuf_schema(schema_id)
            except WriterSchemaError as exc:
                # Not cached: a registry that cannot give it is asked again next batch.
                raise _RecordError(f"schema id {schema_id}: {exc.reason}") from None
            pool = _descriptors(schema_id, text)
            self._pools[schema_id] = pool
        return pool

    def _arrays(self, values: list[list[Any]]) -> tuple[list[pa.Array], dict[int, str]]:
        """The columns as Arrow arrays, and the rows whose value does not fit its column."""
        bad: dict[int, str] = {}
        for field, column, arrow in zip(self.schema.fields, values, self._types, strict=True):
            try:
                pa.array(column, arrow)
            except (pa.ArrowException, ValueError, TypeError, OverflowError):
                for index, value in enumerate(column):
                    try:
                        pa.array([value], arrow)
                    except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
                        bad.setdefault(
                            index,
                            f"field {field.name!r} does not fit the spec's column type: "
                            f"{clip(str(exc), _REASON_CHARS)}",
                        )
        if bad:
            for column in values:
                for index in bad:
                    column[index] = None
        return [pa.array(c, t) for c, t in zip(values, self._types, strict=True)], bad

    def _envelope(self, record: KafkaRecord, found: dict[str, Any]) -> _Envelope:
        """The record's envelope: its headers, else ``found`` (the message's fields)."""
        for key, raw in header_envelope(record.headers).items():
            try:
                found[key] = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _RecordError(f"envelope header {key!r} is not UTF-8") from None
        for name in REQUIRED_ENVELOPE:
            if found.get(name) in (None, ""):
                raise _RecordError(
                    f"missing required envelope field {name!r} (a Kafka header, or a field of the message)"
                )
        created = found["created_at"]
        return (
            str(found["event_id"]),
            found.get("event_name") or None,
            created if isinstance(created, datetime) else _timestamp(created),
            found.get("source") or None,
            _version(found.get("schema_version") or None),
        )

    def _file_table(
        self,
        records: list[KafkaRecord],
        payload: list[pa.Array],
        envelope: list[pa.Array],
        extras: list[dict[str, Any]],
    ) -> pa.Table:
        columns = [*payload, *envelope, *kafka_columns(records)]
        if self.keep_extra:
            json_extras = [orjson.dumps(extra).decode() if extra else None for extra in extras]
            columns.append(pa.array(json_extras, EXTRA_FIELD.type))
        return pa.Table.from_arrays(columns, schema=self.file_schema)


def _schema_id(value: bytes | None) -> int:
    """The writer schema's id in a wire-format value, or _RecordError saying why there is none."""
    if value is None:
        raise _RecordError("tombstone: the record has no value")
    if len(value) < WIRE_HEADER_BYTES + 1:
        raise _RecordError(
            f"value of {len(value)} bytes is too short for the Confluent wire format "
            "(magic byte 0, a 4-byte schema id, the message indexes, then the Protobuf message)"
        )
    if value[0] != MAGIC:
        raise _RecordError(f"magic byte is {value[0]:#04x}, not 0: not in the Confluent wire format")
    return int.from_bytes(value[1:WIRE_HEADER_BYTES], "big")


def _descriptors(schema_id: int, text: str) -> FileDescriptor | str:
    """The writer schema's file, in a pool of its own (versions of one file share names),
    with the well-known types it imports; or why it cannot be used."""
    what = f"schema id {schema_id}"
    try:
        proto = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError, DecodeError):  # not base64: .proto text
        try:
            proto = compile_proto(text)
        except ProtoTextError as exc:
            return f"{what}: {exc}"
    pool = descriptor_pool.DescriptorPool()
    for dependency in proto.dependency:
        known = _well_known(dependency)
        if known is None:
            return f"{what}: imports {clip(dependency, 200)}, which is not a well-known type"
        _add_with_imports(pool, known)
    try:
        pool.Add(proto)
        return pool.FindFileByName(proto.name)
    except (TypeError, KeyError, ValueError) as exc:
        return f"{what}: the registry's schema is not a valid Protobuf file: {clip(str(exc), _REASON_CHARS)}"


def _well_known(name: str) -> FileDescriptor | None:
    """The well-known type file ``google/protobuf/<stem>.proto``, from protobuf's own
    ``<stem>_pb2`` module (imported here: the default pool holds only what was imported)."""
    stem = name.removeprefix("google/protobuf/").removesuffix(".proto")
    if f"google/protobuf/{stem}.proto" != name or not stem.isidentifier():
        return None
    try:
        module = importlib.import_module(f"google.protobuf.{stem}_pb2")
    except ImportError:
        return None
    found = getattr(module, "DESCRIPTOR", None)
    return found if isinstance(found, FileDescriptor) else None


def _add_with_imports(pool: descriptor_pool.DescriptorPool, file: FileDescriptor) -> None:
    """Add ``file`` to ``pool`` after the files it imports (a well-known type imports only others)."""
    for dependency in file.dependencies:
        _add_with_imports(pool, dependency)
    try:
        pool.FindFileByName(file.name)
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        pool.Add(proto)


def _message_at(file: FileDescriptor, indexes: tuple[int, ...]) -> Descriptor | None:
    """The message type the indexes name: the file's n-th message, then its nested ones."""
    types: Sequence[Descriptor] = list(file.message_types_by_name.values())
    found = None
    for index in indexes:
        if index >= len(types):
            return None
        found = types[index]
        types = found.nested_types
    return found


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _is_map(field: FieldDescriptor) -> bool:
    message = field.message_type
    return _is_repeated(field) and message is not None and bool(message.GetOptions().map_entry)


def _column(message: Descriptor, spec: SchemaField) -> _Column:
    """How ``spec`` is read from ``message``; ValueError when the types do not map."""
    field = message.fields_by_name.get(spec.name)
    if field is None:
        if spec.nullable or spec.has_default:
            return _Column(spec.name, None, _same, presence=True)
        raise ValueError(f"it has no field {spec.name!r}, which the spec requires")
    convert = _converter(field, spec.type, spec.name, repeated=_is_repeated(field))
    presence = field.has_presence and not _is_repeated(field)
    return _Column(spec.name, field, convert, presence)


def _converter(field: FieldDescriptor, kind: FieldType, path: str, *, repeated: bool) -> _Convert:
    """The conversion of ``field``'s values to the spec type ``kind`` (README's type table)."""
    if repeated:
        if kind.kind != "array" or _is_map(field):
            raise ValueError(f"field {path!r} is a repeated {_type_name(field)}, the spec has {kind.kind}")
        assert kind.items is not None
        item = _converter(field, kind.items, f"{path}[]", repeated=False)
        return lambda values: [item(v) for v in values]
    if field.message_type is not None:
        convert = _message_converter(field, kind, path)
        if convert is not None:
            return convert
    elif field.type in _SCALARS.get(kind.kind, ()):
        if field.type == FieldDescriptor.TYPE_ENUM:
            names = {v.number: v.name for v in field.enum_type.values}
            return lambda value: names.get(value, str(value))
        return _same
    raise ValueError(f"field {path!r} is a {_type_name(field)}, which does not map to the spec's {kind.kind}")


def _message_converter(field: FieldDescriptor, kind: FieldType, path: str) -> _Convert | None:
    """A message field's conversion: wrappers as their value, Timestamp as a timestamp, any
    other message as a record of the spec's fields; None when it does not map."""
    message = field.message_type
    if message.full_name in _WRAPPERS:
        inner = _converter(message.fields_by_name["value"], kind, path, repeated=False)
        return lambda value: inner(value.value)
    if message.full_name == _TIMESTAMP:
        return _timestamp_value if kind.kind == "timestamp" else None
    if kind.kind != "record":
        return None
    parts = [(f.name, _column(message, f)) for f in kind.fields]
    return lambda value: {name: _column_value(value, c) for name, c in parts}


def _type_name(field: FieldDescriptor) -> str:
    if field.message_type is not None:
        return str(field.message_type.full_name)
    if field.enum_type is not None:
        return f"enum {field.enum_type.full_name}"
    names = {
        v: k.removeprefix("TYPE_").lower() for k, v in vars(FieldDescriptor).items() if k.startswith("TYPE_")
    }
    return str(names.get(field.type, field.type))


def _same(value: Any) -> Any:
    return value


def _column_value(message: Message, column: _Column) -> Any:
    """The spec column's value of one message (None: unset with presence, or no such field)."""
    field = column.field
    if field is None or (column.presence and not message.HasField(field.name)):
        return None
    return column.convert(getattr(message, field.name))


def _column_values(messages: list[Message], column: _Column) -> list[Any]:
    """:func:`_column_value` of every message, one column at a time (no call per value for
    the common columns: a field read as it is)."""
    field = column.field
    if field is None:
        return [None] * len(messages)
    name, convert = field.name, column.convert
    if column.presence:
        if convert is _same:
            return [getattr(m, name) if m.HasField(name) else None for m in messages]
        return [convert(getattr(m, name)) if m.HasField(name) else None for m in messages]
    read = attrgetter(name)
    if convert is _same:
        return list(map(read, messages))
    return list(map(convert, map(read, messages)))


def _timestamp_value(value: Any) -> datetime:
    """A google.protobuf.Timestamp as a UTC datetime (microseconds)."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
        seconds=value.seconds, microseconds=value.nanos // 1000
    )


def _json_value(field: FieldDescriptor, value: Any) -> Any:
    """A field's value as JSON: scalars as they are (bytes in base64, enums by name,
    Timestamps in ISO-8601), messages in Protobuf's JSON mapping with the declared names."""
    if _is_map(field):
        entry = field.message_type.fields_by_name["value"]
        return {str(key): _json_item(entry, item) for key, item in value.items()}
    if _is_repeated(field):
        return [_json_item(field, item) for item in value]
    return _json_item(field, value)


def _json_item(field: FieldDescriptor, value: Any) -> Any:
    if field.message_type is not None:
        if field.message_type.full_name == _TIMESTAMP:
            return _timestamp_value(value).isoformat()
        return json_format.MessageToDict(value, preserving_proto_field_name=True)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()
    if field.type == FieldDescriptor.TYPE_ENUM:
        item = field.enum_type.values_by_number.get(value)
        return item.name if item is not None else value
    return value
