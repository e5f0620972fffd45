"""Decode Confluent wire-format Avro values (``format: avro-registry``) into the file's Arrow schema.

A value is the magic byte 0, the writer schema's registry id (4 bytes, big-endian),
then the record in Avro binary. The writer schema comes from a lookup by id
(:class:`WriterSchemas`, the registry client in production); the spec's ``.avsc`` is
the reader schema, so the table keeps the spec's shape whatever version wrote the
record. Resolution follows Avro's rules: fields matched by name or alias, defaults
for reader fields the writer lacks, writer-only fields dropped from the columns,
promotions (int → long → float → double, string ↔ bytes) and unions. The writer-only
fields are kept in ``_EXTRA`` (see :mod:`loader.encode.avro_extra`) and counted.

Batch decoding: the records of a batch are grouped by schema id, and each group
is read in one call into Arrow columns and resolved there
(:mod:`loader.encode.avro_columns`: polars' Avro reader, with a sentinel after each
body proving every record ended where its body did). A group the block reader
refuses is split in halves until each bad record stands alone with its reason. A
writer schema the columnar path does not cover (enums, maps, unions of several
types) is decoded record by record by fastavro, which implements every resolution
rule; the path is chosen by the schema id, so a record's verdict depends on its
bytes alone.

The envelope (``event_id``, ``created_at``, ...) rides in Kafka headers, as for a
JSON value with a header envelope (:func:`~loader.encode.decode.header_envelope`);
a field missing there is taken from the writer's record field of the same name, when
the spec's schema has no field of that name. ``event_id`` and ``created_at`` are
required. Nothing a producer sends raises out of :meth:`AvroRegistryDecoder.decode`:
every record ends as a row or a :class:`~loader.encode.decode.Rejected`. Only a
transient lookup failure (the registry down) propagates, so the batch is retried.
"""

from __future__ import annotations

import copy
import io
import json
import re
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import fastavro
import pyarrow as pa
import pyarrow.compute as pc

from loader.encode.avro_columns import BlockRefused, ColumnarWriter, NotColumnar, Unresolvable
from loader.encode.avro_extra import WriterOnly, writer_only
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
from loader.schema.model import EventSchema
from loader.schema.registry_client import WriterSchemaError
from loader.schema.types import EXTRA_FIELD, arrow_schema, arrow_type

__all__ = ["WIRE_HEADER_BYTES", "AvroRegistryDecoder", "WriterSchemas", "envelope_columns", "wire_value"]

MAGIC = 0
WIRE_HEADER_BYTES = 5
"""The magic byte and the 4-byte schema id before the Avro body."""
_REASON_CHARS = 300
_OBJECT_REPR = re.compile(r"\s*(from\s+)?<[^<>]* at 0x[0-9a-fA-F]+>")
_ENVELOPE_TYPES: dict[str, Any] = {
    "event_id": ["null", "string"],
    "event_name": ["null", "string"],
    "created_at": ["null", "string"],
    "source": ["null", "string"],
    "schema_version": ["null", "long"],
}
"""How the envelope fields are read from a writer's record (int promotes to long)."""
_RECORD_TYPES = {name: pa.int64() if name == "schema_version" else pa.string() for name in _ENVELOPE_TYPES}
_NOT_UTF8 = object()
_CREATED_TYPE = pa.timestamp("us", tz="UTC")
_ISO = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
_ISO_WITH_OFFSET = _ISO + r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
_ISO_NAIVE = _ISO + "$"
_FIRST_MICROS = (
    int((datetime(1, 1, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 10**6
)
_LAST_MICROS = (
    int((datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds())
    * 10**6
    + 999_999
)


@runtime_checkable
class WriterSchemas(Protocol):
    """Writer schemas by registry id (:class:`~loader.schema.registry_client.RegistryClient` fits).

    Raises :class:`~loader.schema.registry_client.WriterSchemaError` for an id it cannot
    give (the records carrying it become dead letters); any other error propagates."""

    def writer_schema(self, schema_id: int) -> str: ...


_Envelope = tuple[str, str | None, datetime, str | None, int | None]
"""event_id, event_name, created_at, source, schema_version."""
_Extra = tuple[str | None, list[str]]
"""A record's writer-only fields as JSON (None: none), and their paths (for the metric)."""


class _RecordError(Exception):
    """Why one record cannot become a row."""


def wire_value(schema_id: int, body: bytes) -> bytes:
    """A record body framed in Confluent's wire format (the inverse of the decoder's framing)."""
    return bytes([MAGIC]) + schema_id.to_bytes(4, "big") + body


class AvroRegistryDecoder:
    """Decodes Confluent wire-format Avro values of one event type into the file's Arrow schema."""

    def __init__(
        self,
        schema: EventSchema,
        reader_schema: dict[str, Any],
        writer_schemas: WriterSchemas,
        *,
        keep_extra: bool = True,
    ) -> None:
        self.schema = schema
        self.keep_extra = keep_extra
        base = arrow_schema(schema)
        self.file_schema = base.append(EXTRA_FIELD) if keep_extra else base
        self._writer_schemas = writer_schemas
        self._payload_type = pa.struct([pa.field(f.name, arrow_type(f.type)) for f in schema.fields])
        # Envelope fields the writer's record may carry, read as extra optional reader fields.
        self._record_envelope = [
            name for name in ENVELOPE_FIELDS if name not in {f.name for f in schema.fields}
        ]
        reader = copy.deepcopy(reader_schema)
        reader["fields"] = [
            *reader["fields"],
            *(
                {"name": name, "type": _ENVELOPE_TYPES[name], "default": None}
                for name in self._record_envelope
            ),
        ]
        self._reader_document = reader
        self._reader_base = reader_schema
        self._plans: dict[int, ColumnarWriter | tuple[Any, Any] | str] = {}
        """Per schema id: its block reader, fastavro's parsed (writer, reader) pair, or why
        its records cannot be read (a schema never changes under its id)."""
        self._writer_only: dict[int, WriterOnly | None] = {}
        """Per schema id: how to take its writer-only fields out, None when it has none."""
        self._unknown: Counter[str] = Counter()
        """The current batch's writer-only field paths, counted."""

    def decode(self, records: Sequence[KafkaRecord]) -> DecodedBatch:
        """Decode ``records`` (consecutive records of one partition); raises only when the
        writer-schema lookup fails transiently (the batch is then retried)."""
        kept, rejected = screen(records)
        self._unknown = Counter()
        groups: dict[int, list[KafkaRecord]] = {}
        for record in kept:
            try:
                groups.setdefault(_schema_id(record.value), []).append(record)
            except _RecordError as exc:
                rejected.append(Rejected(record, str(exc)))
        tables: list[pa.Table] = []
        for schema_id, members in groups.items():
            try:
                plan = self._plan(schema_id)
            except _RecordError as exc:
                rejected += [Rejected(record, str(exc)) for record in members]
                continue
            if isinstance(plan, ColumnarWriter):
                self._decode_block(schema_id, plan, members, tables, rejected)
            else:
                self._decode_each(schema_id, plan, members, tables, rejected)
        if not tables:
            table = self.file_schema.empty_table()
        elif len(tables) == 1:
            table = tables[0]
        else:
            table = pa.concat_tables(tables).sort_by("_OFFSET")
        return with_rejected(DecodedBatch(table, [], self._unknown), rejected)

    def _plan(self, schema_id: int) -> ColumnarWriter | tuple[Any, Any]:
        """How records of ``schema_id`` are read: in blocks, or record by record by fastavro
        (its parsed writer and reader schemas). _RecordError when they cannot be read at all."""
        plan = self._plans.get(schema_id)
        if plan is None:
            text = self._writer_text(schema_id)
            try:
                plan = ColumnarWriter(text, self._reader_base, self._record_envelope)
            except NotColumnar:
                plan = self._schemas(schema_id, text)
            except Unresolvable as exc:
                plan = f"schema id {schema_id}: cannot be resolved to the spec's schema: {exc}"
            if not isinstance(plan, str):
                skip = frozenset(self._record_envelope)
                self._writer_only[schema_id] = writer_only(json.loads(text), self._reader_base, skip)
            self._plans[schema_id] = plan
        if isinstance(plan, str):
            raise _RecordError(plan)
        return plan

    def _writer_text(self, schema_id: int) -> str:
        """The writer schema's text; a registry that cannot give it is asked again next batch."""
        try:
            return self._writer_schemas.writer_schema(schema_id)
        except WriterSchemaError as exc:
            raise _RecordError(f"schema id {schema_id}: {exc.reason}") from None

    def _decode_block(
        self,
        schema_id: int,
        writer: ColumnarWriter,
        records: Sequence[KafkaRecord],
        tables: list[pa.Table],
        rejected: list[Rejected],
    ) -> None:
        """Read ``records`` in one block; if it is refused, split it in halves until each bad
        record stands alone with its reason (a few bad records cost O(log n) reads)."""
        try:
            writer_read = writer.read(
                [record.value[WIRE_HEADER_BYTES:] for record in records]  # type: ignore[index]
            )
        except BlockRefused as exc:
            if len(records) == 1:
                rejected.append(Rejected(records[0], _refusal(schema_id, writer, records[0], exc)))
                return
            middle = len(records) // 2
            self._decode_block(schema_id, writer, records[:middle], tables, rejected)
            self._decode_block(schema_id, writer, records[middle:], tables, rejected)
            return
        table = self._block_table(schema_id, writer, records, writer_read, rejected)
        if table is not None:
            tables.append(table)

    def _block_table(
        self,
        schema_id: int,
        writer: ColumnarWriter,
        records: Sequence[KafkaRecord],
        writer_read: tuple[pa.StructArray, dict[str, list[Any]], list[str | None]],
        rejected: list[Rejected],
    ) -> pa.Table | None:
        """The rows of a block the reader read (``writer_read``: its payloads, the writer's
        envelope fields, per record why its row is refused), None when there are none; each
        bad record is rejected."""
        payload, from_record, problems = writer_read
        taker = self._writer_only.get(schema_id)
        columns, odd = envelope_columns(records, from_record)
        good: list[int] = []
        at: list[int] = []  # per kept row, its envelope's index in the columns, patched ones last
        patched: list[_Envelope] = []
        extras: list[_Extra] = []
        for index, record in enumerate(records):
            if problems[index] is not None:
                rejected.append(Rejected(record, f"schema id {schema_id}: {problems[index]}"))
                continue
            envelope: _Envelope | None = None
            if odd[index]:  # the columns could not say: this record's envelope is read alone
                try:
                    fields = {name: values[index] for name, values in from_record.items()}
                    envelope = self._envelope(record, fields)
                except _RecordError as exc:
                    rejected.append(Rejected(record, str(exc)))
                    continue
            if taker is not None:
                try:
                    extras.append(taker.take(record.value[WIRE_HEADER_BYTES:]))  # type: ignore[index]
                except (Exception, RecursionError):  # polars read bytes fastavro refuses: a bad record
                    refused = BlockRefused("the writer-only fields cannot be read")
                    rejected.append(Rejected(record, _refusal(schema_id, writer, record, refused)))
                    continue
            if envelope is not None:
                patched.append(envelope)
                at.append(len(records) + len(patched) - 1)
            else:
                at.append(index)
            good.append(index)
        if not good:
            return None
        if patched:
            columns = [
                pa.concat_arrays([column, values])
                for column, values in zip(columns, _envelope_arrays(patched), strict=True)
            ]
        if len(good) < len(records):
            payload = payload.take(pa.array(good, pa.int64()))
        if patched or len(good) < len(records):
            taken = pa.array(at, pa.int64())
            columns = [column.take(taken) for column in columns]
        chosen = [records[i] for i in good]
        return self._file_table(schema_id, chosen, payload, columns, extras if taker is not None else None)

    def _decode_each(
        self,
        schema_id: int,
        schemas: tuple[Any, Any],
        records: Sequence[KafkaRecord],
        tables: list[pa.Table],
        rejected: list[Rejected],
    ) -> None:
        """Read ``records`` one by one with fastavro (writer schemas the block reader does not cover)."""
        good: list[KafkaRecord] = []
        payloads: list[dict[str, Any]] = []
        envelopes: list[_Envelope] = []
        for record in records:
            try:
                datum = _datum(schema_id, schemas, record.value)  # type: ignore[arg-type]
                fields = {name: datum.pop(name, None) for name in self._record_envelope}
                envelopes.append(self._envelope(record, fields))
            except _RecordError as exc:
                rejected.append(Rejected(record, str(exc)))
                continue
            good.append(record)
            payloads.append(datum)
        if not good:
            return
        try:
            payload = pa.array(payloads, type=self._payload_type)
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            kept: list[int] = []
            for index, datum in enumerate(payloads):
                try:
                    pa.array([datum], type=self._payload_type)
                except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
                    reason = f"a value does not fit the spec's column type: {clip(str(exc), _REASON_CHARS)}"
                    rejected.append(Rejected(good[index], reason))
                else:
                    kept.append(index)
            if not kept:
                return
            good, envelopes = [good[i] for i in kept], [envelopes[i] for i in kept]
            payload = pa.array([payloads[i] for i in kept], type=self._payload_type)
        tables.append(self._file_table(schema_id, good, payload, _envelope_arrays(envelopes)))

    def _schemas(self, schema_id: int, text: str) -> tuple[Any, Any] | str:
        """The parsed writer schema and the reader schema named like it, or why there are none."""
        try:
            document = json.loads(text)
            writer = fastavro.parse_schema(document)
        except (ValueError, TypeError, KeyError, RecursionError, fastavro.schema.SchemaParseException) as exc:
            return f"schema id {schema_id}: the registry's schema is not valid Avro: {clip(str(exc), 300)}"
        if not isinstance(document, dict) or document.get("type") != "record":
            return f"schema id {schema_id}: the writer schema is not an Avro record"
        # Avro matches records by full name; the event type is the spec's, whatever the
        # producer named its record, so the reader takes the writer's top-level name.
        reader_document = dict(self._reader_document, name=document["name"])
        reader_document.pop("namespace", None)
        if "namespace" in document:
            reader_document["namespace"] = document["namespace"]
        return writer, fastavro.parse_schema(reader_document)

    def _envelope(self, record: KafkaRecord, found: dict[str, Any]) -> _Envelope:
        """The record's envelope: its headers, else ``found`` (the writer record's fields)."""
        for key, raw in header_envelope(record.headers).items():
            try:
                found[key] = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _RecordError(f"envelope header {key!r} is not UTF-8") from None
        for name in REQUIRED_ENVELOPE:
            if found.get(name) is None:
                raise _RecordError(
                    f"missing required envelope field {name!r} (a Kafka header, or a field of the record)"
                )
        return (
            _text("event_id", found["event_id"]),
            _text("event_name", found.get("event_name")),
            _timestamp(found["created_at"]),
            _text("source", found.get("source")),
            _version(found.get("schema_version")),
        )

    def _file_table(
        self,
        schema_id: int,
        records: list[KafkaRecord],
        payload: pa.Array,
        envelope: list[pa.Array],
        extras: list[_Extra] | None = None,
    ) -> pa.Table:
        """The file's rows: the payload's fields, the envelope's columns, the Kafka metadata, and
        the writer-only fields (``_EXTRA``), which are counted."""
        if payload.type != self._payload_type:
            payload = pc.cast(payload, self._payload_type)
        columns: list[pa.Array] = [payload.field(f.name) for f in self.schema.fields]
        columns += [
            *envelope,
            *kafka_columns(records),
        ]
        if extras is None:
            extras = self._extras(schema_id, records)
        for _, paths in extras:
            self._unknown.update(paths)
        if self.keep_extra:
            columns.append(pa.array([extra for extra, _ in extras], EXTRA_FIELD.type))
        return pa.Table.from_arrays(columns, schema=self.file_schema)

    def _extras(self, schema_id: int, records: list[KafkaRecord]) -> list[_Extra]:
        """Each record's writer-only fields as JSON (None: none) and their paths, for records
        fastavro has read already (so they read again)."""
        taker = self._writer_only.get(schema_id)
        if taker is None:
            return [(None, [])] * len(records)
        return [taker.take(record.value[WIRE_HEADER_BYTES:]) for record in records]  # type: ignore[index]


def _schema_id(value: bytes | None) -> int:
    """The writer schema's id in a wire-format value, or _RecordError saying why there is none."""
    if value is None:
        raise _RecordError("tombstone: the record has no value")
    if len(value) < WIRE_HEADER_BYTES:
        raise _RecordError(
            f"value of {len(value)} bytes is too short for the Confluent wire format "
            "(magic byte 0, a 4-byte schema id, then the Avro record)"
        )
    if value[0] != MAGIC:
        raise _RecordError(f"magic byte is {value[0]:#04x}, not 0: not in the Confluent wire format")
    return int.from_bytes(value[1:WIRE_HEADER_BYTES], "big")


def _refusal(schema_id: int, writer: ColumnarWriter, record: KafkaRecord, refused: BlockRefused) -> str:
    """Why the block reader refused one record, in words that depend on its bytes alone: the
    reader's own message can depend on the random sentinel after the body, so fastavro says
    what is wrong with the bytes (rare path: one record)."""
    if refused.stable:
        return f"schema id {schema_id}: {clip(str(refused), _REASON_CHARS)}"
    schemas = (fastavro.parse_schema(json.loads(writer.writer_text)), None)
    try:
        _datum(schema_id, schemas, record.value)  # type: ignore[arg-type]
    except _RecordError as exc:
        return str(exc)
    return f"schema id {schema_id}: not a valid Avro record for its writer schema"


def _datum(schema_id: int, schemas: tuple[Any, Any], value: bytes) -> dict[str, Any]:
    """One value read by fastavro with the spec's schema; the body must be read to its end."""
    writer, reader = schemas
    stream = io.BytesIO(value)
    stream.seek(WIRE_HEADER_BYTES)
    try:
        datum = fastavro.schemaless_reader(stream, writer, reader)
    except fastavro.read.SchemaResolutionError as exc:
        raise _RecordError(
            f"schema id {schema_id}: the record cannot be resolved to the spec's schema: "
            f"{clip(str(exc), _REASON_CHARS)}"
        ) from None
    except (Exception, RecursionError) as exc:  # any byte string is possible input
        message = _OBJECT_REPR.sub("", str(exc))  # "<_io.BytesIO object at 0x…>" differs per run
        raise _RecordError(
            f"schema id {schema_id}: not a valid Avro record: {type(exc).__name__}: "
            f"{clip(message, _REASON_CHARS)}"
        ) from None
    left = len(value) - stream.tell()
    if left:
        raise _RecordError(f"schema id {schema_id}: {left} bytes left after the Avro record")
    if not isinstance(datum, dict):
        raise _RecordError(f"schema id {schema_id}: the writer schema is not a record")
    return datum


def envelope_columns(
    records: Sequence[KafkaRecord], from_record: dict[str, list[Any]]
) -> tuple[list[pa.Array], list[bool]]:
    """The envelope of ``records`` as the file's five columns, read for the whole block at
    once, and per record whether the columns cannot tell its envelope (a header not UTF-8,
    a required field missing, a value not in the common form): such a record is read alone
    by its decoder, which gives its reason or its values (rare: producers send the common
    forms). ``from_record`` holds the envelope fields the writer's records carry, per record;
    a header wins over them. The Avro and the Protobuf decoders share it."""
    found = [header_envelope(record.headers) for record in records]
    odd = pa.repeat(pa.scalar(False), len(records))
    columns: dict[str, pa.Array] = {}
    for name in ENVELOPE_FIELDS:
        raw = pa.array([headers.get(name) for headers in found], pa.binary())
        try:
            text = raw.cast(pa.string())
        except pa.ArrowInvalid:  # a header not UTF-8: the records read alone name it
            decoded = [_utf8(value) for value in raw.to_pylist()]
            odd = pc.or_(odd, pa.array([value is _NOT_UTF8 for value in decoded]))
            text = pa.array([None if value is _NOT_UTF8 else value for value in decoded], pa.string())
        if name == "schema_version":  # a header's digits; the record's field is a long
            text, not_digits = _versions(text)
            odd = pc.or_(odd, not_digits)
        if name in from_record:
            values = from_record[name]
            try:
                text = pc.coalesce(text, pa.array(values, _RECORD_TYPES[name]))
            except (pa.ArrowException, TypeError, ValueError, OverflowError):
                # A writer field of another type: the records that take it are read alone.
                taken = pa.array([value is not None for value in values])
                odd = pc.or_(odd, pc.and_(pc.is_null(text), taken))
        columns[name] = text
    for name in REQUIRED_ENVELOPE:
        odd = pc.or_(odd, pc.is_null(columns[name]))
    created, unread = _timestamps(columns["created_at"])
    odd = pc.or_(odd, unread)
    envelope = [
        columns["event_id"],
        columns["event_name"],
        created,
        columns["source"],
        columns["schema_version"],
    ]
    return envelope, odd.to_pylist()


def _envelope_arrays(envelopes: Sequence[_Envelope]) -> list[pa.Array]:
    """Envelopes read record by record as the file's five envelope columns."""
    event_ids, names, created, sources, versions = zip(*envelopes, strict=True)
    return [
        pa.array(event_ids, pa.string()),
        pa.array(names, pa.string()),
        pa.array(created, _CREATED_TYPE),
        pa.array(sources, pa.string()),
        pa.array(versions, pa.int64()),
    ]


def _utf8(value: bytes | None) -> str | object | None:
    """A header value as text, as :meth:`AvroRegistryDecoder._envelope` decodes it (_NOT_UTF8: it cannot)."""
    try:
        return None if value is None else value.decode("utf-8")
    except UnicodeDecodeError:
        return _NOT_UTF8


def _timestamps(text: pa.Array) -> tuple[pa.Array, pa.Array]:
    """``created_at`` strings in the common ISO-8601 forms (``YYYY-MM-DDTHH:MM:SS``, a space
    for the ``T``, up to 6 fractional digits, ``Z`` or ``±HH:MM`` or no offset, taken as UTC)
    as UTC timestamps, in one cast, and which strings are not in those forms (null there);
    :func:`_timestamp` reads those, so a value's verdict is the same either way."""
    with_offset = pc.fill_null(pc.match_substring_regex(text, _ISO_WITH_OFFSET), False)
    naive = pc.fill_null(pc.match_substring_regex(text, _ISO_NAIVE), False)
    # Year 0000 is no Python date, even where its offset would carry it into year 1 in UTC.
    year_zero = pc.fill_null(pc.starts_with(text, "0000"), False)
    common = pc.and_(pc.or_(with_offset, naive), pc.invert(year_zero))
    with_offset, naive = pc.and_(with_offset, common), pc.and_(naive, common)
    try:
        aware = pc.if_else(with_offset, text, pa.scalar(None, pa.string())).cast(_CREATED_TYPE)
        local = (
            pc.if_else(naive, text, pa.scalar(None, pa.string())).cast(pa.timestamp("us")).cast(_CREATED_TYPE)
        )
    except pa.ArrowInvalid:  # an impossible date (February 30th): the strings are read one by one
        return pa.nulls(len(text), _CREATED_TYPE), pc.is_valid(text)
    moment = pc.coalesce(aware, local)
    micros = moment.cast(pa.int64())
    # Python's datetime spans years 1 to 9999 in UTC: a time outside is read alone (and refused).
    inside = pc.and_(pc.greater_equal(micros, _FIRST_MICROS), pc.less_equal(micros, _LAST_MICROS))
    usable = pc.fill_null(pc.and_(common, inside), False)
    return pc.if_else(usable, moment, pa.scalar(None, _CREATED_TYPE)), pc.and_(
        pc.is_valid(text), pc.invert(usable)
    )


def _versions(text: pa.Array) -> tuple[pa.Array, pa.Array]:
    """``schema_version`` headers as integers, and which are not bare decimal digits (those are
    read by :func:`_version`, which strips blanks or refuses)."""
    digits = pc.fill_null(pc.match_substring_regex(text, r"^[0-9]{1,18}$"), False)
    number = pc.if_else(digits, text, pa.scalar(None, pa.string())).cast(pa.int64())
    return number, pc.and_(pc.is_valid(text), pc.invert(digits))


def _text(name: str, value: Any) -> Any:
    """A text envelope field taken from the writer's record, which may declare it with another
    type: bytes must be UTF-8, an integer is written in decimal, anything else is refused."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise _RecordError(f"envelope field {name!r} is not UTF-8") from None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise _RecordError(f"envelope field {name!r} must be text, not {type(value).__name__}")


def _timestamp(text: Any) -> datetime:
    """``created_at`` as a UTC datetime: ISO-8601, taken as UTC when it names no offset."""
    try:
        moment = datetime.fromisoformat(str(text))
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        shown = clip(str(text), 80)
        raise _RecordError(f"envelope field 'created_at' is not an ISO-8601 timestamp: {shown!r}") from None


def _version(value: Any) -> int | None:
    """``schema_version``: an integer (a header holds its decimal digits), or absent."""
    if value is None or isinstance(value, int):
        return value
    text = str(value).strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise _RecordError(f"envelope field 'schema_version' is not an integer: {clip(text, 40)!r}")
    return int(text)
