"""Decode Confluent wire-format Avro values (``format: avro-registry``) into the file's Arrow schema.

A value is the magic byte 0, the writer schema's registry id (4 bytes, big-endian),
then the record in Avro binary. The writer schema comes from a lookup by id
(:class:`WriterSchemas`, the registry client in production); the spec's ``.avsc`` is
the reader schema, so the table keeps the spec's shape whatever version wrote the
record. Resolution follows Avro's rules, implemented by fastavro: fields matched by
name or alias, defaults for reader fields the writer lacks, writer-only fields
dropped, promotions (int → long → float → double, string ↔ bytes) and unions.

Why record by record: the columnar Avro readers (polars' ``read_avro``, the
``polars-avro`` plugin) decode a container block of many records ten times faster,
but cannot tell where one record ends inside a block: a body with one byte too many
shifts every record after it into wrong rows without an error, and a truncated one
panics. A verdict must depend on the record alone, so each body is decoded on its
own and must be consumed exactly; only the Arrow conversion is batched.

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
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import fastavro
import pyarrow as pa

from loader.encode.decode import (
    ENVELOPE_FIELDS,
    REQUIRED_ENVELOPE,
    DecodedBatch,
    KafkaRecord,
    Rejected,
    header_envelope,
    screen,
    with_rejected,
)
from loader.encode.headers import headers_column
from loader.errors import clip
from loader.schema.model import EventSchema
from loader.schema.registry_client import WriterSchemaError
from loader.schema.types import arrow_schema, arrow_type

__all__ = ["WIRE_HEADER_BYTES", "AvroRegistryDecoder", "WriterSchemas", "wire_value"]

MAGIC = 0
WIRE_HEADER_BYTES = 5
"""The magic byte and the 4-byte schema id before the Avro body."""
_REASON_CHARS = 300
_ENVELOPE_TYPES: dict[str, Any] = {
    "event_id": ["null", "string"],
    "event_name": ["null", "string"],
    "created_at": ["null", "string"],
    "source": ["null", "string"],
    "schema_version": ["null", "long"],
}
"""How the envelope fields are read from a writer's record (int promotes to long)."""


class WriterSchemas(Protocol):
    """Writer schemas by registry id (:class:`~loader.schema.registry_client.RegistryClient` fits).

    Raises :class:`~loader.schema.registry_client.WriterSchemaError` for an id it cannot
    give (the records carrying it become dead letters); any other error propagates."""

    def writer_schema(self, schema_id: int) -> str: ...


class _RecordError(Exception):
    """Why one record cannot become a row."""


def wire_value(schema_id: int, body: bytes) -> bytes:
    """A record body framed in Confluent's wire format (the inverse of the decoder's framing)."""
    return bytes([MAGIC]) + schema_id.to_bytes(4, "big") + body


class AvroRegistryDecoder:
    """Decodes Confluent wire-format Avro values of one event type into the file's Arrow schema."""

    def __init__(
        self, schema: EventSchema, reader_schema: dict[str, Any], writer_schemas: WriterSchemas
    ) -> None:
        self.schema = schema
        self.file_schema = arrow_schema(schema)
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
        self._resolved: dict[int, tuple[Any, Any]] = {}
        """Per schema id: the parsed (writer, reader) pair fastavro resolves between."""

    def decode(self, records: Sequence[KafkaRecord]) -> DecodedBatch:
        """Decode ``records`` (consecutive records of one partition); raises only when the
        writer-schema lookup fails transiently (the batch is then retried)."""
        kept, rejected = screen(records)
        unusable: dict[int, str] = {}
        good: list[KafkaRecord] = []
        payloads: list[dict[str, Any]] = []
        envelopes: list[tuple[str, str | None, datetime, str | None, int | None]] = []
        for record in kept:
            try:
                datum = self._datum(record, unusable)
                envelope = self._envelope(record, datum)
            except _RecordError as exc:
                rejected.append(Rejected(record, str(exc)))
                continue
            good.append(record)
            payloads.append(datum)
            envelopes.append(envelope)
        table, refused = self._to_file_table(good, payloads, envelopes)
        return with_rejected(DecodedBatch(table, []), [*rejected, *refused])

    def _datum(self, record: KafkaRecord, unusable: dict[int, str]) -> dict[str, Any]:
        """The record's value read with the spec's schema, or _RecordError saying why not."""
        value = record.value
        if value is None:
            raise _RecordError("tombstone: the record has no value")
        if len(value) < WIRE_HEADER_BYTES:
            raise _RecordError(
                f"value of {len(value)} bytes is too short for the Confluent wire format "
                "(magic byte 0, a 4-byte schema id, then the Avro record)"
            )
        if value[0] != MAGIC:
            raise _RecordError(f"magic byte is {value[0]:#04x}, not 0: not in the Confluent wire format")
        schema_id = int.from_bytes(value[1:WIRE_HEADER_BYTES], "big")
        writer, reader = self._schemas(schema_id, unusable)
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
            raise _RecordError(
                f"schema id {schema_id}: not a valid Avro record: {type(exc).__name__}: "
                f"{clip(str(exc), _REASON_CHARS)}"
            ) from None
        left = len(value) - stream.tell()
        if left:
            raise _RecordError(f"schema id {schema_id}: {left} bytes left after the Avro record")
        if not isinstance(datum, dict):
            raise _RecordError(f"schema id {schema_id}: the writer schema is not a record")
        return datum

    def _schemas(self, schema_id: int, unusable: dict[int, str]) -> tuple[Any, Any]:
        """The parsed writer schema of ``schema_id`` and the reader schema named like it."""
        resolved = self._resolved.get(schema_id)
        if resolved is not None:
            return resolved
        if schema_id in unusable:  # asked once per batch: the registry may learn the id later
            raise _RecordError(unusable[schema_id])
        try:
            text = self._writer_schemas.writer_schema(schema_id)
        except WriterSchemaError as exc:
            unusable[schema_id] = f"schema id {schema_id}: {exc.reason}"
            raise _RecordError(unusable[schema_id]) from None
        try:
            document = json.loads(text)
            writer = fastavro.parse_schema(document)
        except (ValueError, TypeError, KeyError, RecursionError, fastavro.schema.SchemaParseException) as exc:
            unusable[schema_id] = (
                f"schema id {schema_id}: the registry's schema is not valid Avro: "
                f"{clip(str(exc), _REASON_CHARS)}"
            )
            raise _RecordError(unusable[schema_id]) from None
        if not isinstance(document, dict) or document.get("type") != "record":
            unusable[schema_id] = f"schema id {schema_id}: the writer schema is not an Avro record"
            raise _RecordError(unusable[schema_id])
        # Avro matches records by full name; the event type is the spec's, whatever the
        # producer named its record, so the reader takes the writer's top-level name.
        reader_document = dict(self._reader_document, name=document["name"])
        reader_document.pop("namespace", None)
        if "namespace" in document:
            reader_document["namespace"] = document["namespace"]
        reader = fastavro.parse_schema(reader_document)
        self._resolved[schema_id] = (writer, reader)
        return writer, reader

    def _envelope(
        self, record: KafkaRecord, datum: dict[str, Any]
    ) -> tuple[str, str | None, datetime, str | None, int | None]:
        """The record's envelope: headers first, else the writer record's fields (popped from ``datum``)."""
        found: dict[str, Any] = {name: datum.pop(name, None) for name in self._record_envelope}
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
            found["event_id"],
            found.get("event_name"),
            _timestamp(found["created_at"]),
            found.get("source"),
            _version(found.get("schema_version")),
        )

    def _to_file_table(
        self,
        records: list[KafkaRecord],
        payloads: list[dict[str, Any]],
        envelopes: list[tuple[str, str | None, datetime, str | None, int | None]],
    ) -> tuple[pa.Table, list[Rejected]]:
        """The rows in one conversion; a value Arrow refuses (a decimal too wide for the
        column) is found record by record and rejected alone."""
        if not records:
            return self.file_schema.empty_table(), []
        try:
            payload = pa.array(payloads, type=self._payload_type)
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            refused: list[Rejected] = []
            kept: list[int] = []
            for index, datum in enumerate(payloads):
                try:
                    pa.array([datum], type=self._payload_type)
                except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
                    reason = f"a value does not fit the spec's column type: {clip(str(exc), _REASON_CHARS)}"
                    refused.append(Rejected(records[index], reason))
                else:
                    kept.append(index)
            table, _ = self._to_file_table(
                [records[i] for i in kept], [payloads[i] for i in kept], [envelopes[i] for i in kept]
            )
            return table, refused
        event_ids, names, created, sources, versions = zip(*envelopes, strict=True)
        columns: list[pa.Array] = [payload.field(f.name) for f in self.schema.fields]
        columns += [
            pa.array(event_ids, pa.string()),
            pa.array(names, pa.string()),
            pa.array(created, pa.timestamp("us", tz="UTC")),
            pa.array(sources, pa.string()),
            pa.array(versions, pa.int64()),
            pa.repeat(pa.scalar(records[0].topic, pa.string()), len(records)),
            pa.repeat(pa.scalar(records[0].partition, pa.int32()), len(records)),
            pa.array([r.offset for r in records], pa.int64()),
            pa.array([r.timestamp for r in records], pa.timestamp("ms", tz="UTC")),
            pa.array([r.key for r in records], pa.binary()),
            headers_column(records),
        ]
        return pa.Table.from_arrays(columns, schema=self.file_schema), []


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
