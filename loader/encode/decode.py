"""Decode a batch of Kafka records into an Arrow table, strictly.

The hot path joins the batch's JSON values with newlines and hands them to
Arrow's JSON reader with the event's explicit schema: no Python object per
record. If Arrow refuses the batch, a slow path decodes record by record to
find the culprits and their exact reasons; the good records are decoded again
in one batch. Nothing a producer sends raises out of here: every record ends
as a row or a :class:`Rejected`.

Before any value is read, :func:`screen` turns away the records whose Kafka
metadata cannot go into a row, whatever their value: a timestamp outside
``KAFKA_TIMESTAMP_RANGE_MS`` (no timestamp, before 1970, after year 9999), or a
header key that is not UTF-8 (see :mod:`loader.consume.records`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from loader.encode.headers import header_key_bytes, headers_column, is_utf8_key
from loader.schema.model import EventSchema, FieldType
from loader.schema.types import KAFKA_TIMESTAMP_RANGE_MS, arrow_schema, arrow_type

__all__ = [
    "BatchDecoder",
    "DecodedBatch",
    "Decoder",
    "KafkaRecord",
    "Rejected",
    "envelope_values",
    "header_envelope",
    "metadata_problem",
    "precheck",
    "screen",
]

ENVELOPE_FIELDS = ("event_id", "event_name", "created_at", "source", "schema_version")
"""The envelope around every payload: fields of the JSON value, or Kafka headers (routing
then needs no payload decoding, and the value is the bare payload). As a header,
``schema_version`` is a decimal number in ASCII."""
REQUIRED_ENVELOPE = ("event_id", "created_at")


class KafkaRecord(Protocol):
    """The parts of a consumed record the decoder reads (aiokafka's ConsumerRecord fits)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]]: ...


class Decoder(Protocol):
    """Turns a batch of one partition's records into file rows and rejects."""

    @property
    def file_schema(self) -> pa.Schema: ...

    def decode(self, records: Sequence[KafkaRecord]) -> DecodedBatch: ...


@dataclass(frozen=True)
class Rejected:
    """A record that cannot become a row, and why."""

    record: KafkaRecord
    reason: str


@dataclass(frozen=True)
class DecodedBatch:
    """The rows decoded from a batch (file schema, record order) and the rejects."""

    table: pa.Table
    rejected: list[Rejected]


def _reader_type(field_type: FieldType) -> pa.DataType:
    """The type Arrow's JSON reader parses into: dates come in as strings, cast after."""
    if field_type.kind == "date":
        return pa.string()
    if field_type.kind == "record":
        return pa.struct([pa.field(f.name, _reader_type(f.type), nullable=True) for f in field_type.fields])
    if field_type.kind == "array":
        assert field_type.items is not None
        return pa.list_(_reader_type(field_type.items))
    return arrow_type(field_type)


class BatchDecoder:
    """Decodes JSON-enveloped events of one schema into the file's Arrow schema."""

    def __init__(self, schema: EventSchema) -> None:
        self.schema = schema
        self.file_schema = arrow_schema(schema)
        payload_fields = [pa.field(f.name, _reader_type(f.type)) for f in schema.fields]
        self._payload_type = pa.struct(payload_fields)
        self._payload_target = pa.struct([pa.field(f.name, arrow_type(f.type)) for f in schema.fields])
        self._reader_schema = pa.schema(
            [
                pa.field("event_id", pa.string()),
                pa.field("event_name", pa.string()),
                pa.field("created_at", pa.timestamp("us", tz="UTC")),
                pa.field("source", pa.string()),
                pa.field("schema_version", pa.int64()),
                pa.field("payload", self._payload_type),
            ]
        )
        self._required = [f.name for f in schema.fields if not f.nullable]

    def decode(self, records: Sequence[KafkaRecord]) -> DecodedBatch:
        """Decode ``records`` (consecutive records of one partition); never raises for bad input."""
        kept, rejected = screen(records)
        return with_rejected(self._decode_values(kept), rejected)

    def _decode_values(self, records: Sequence[KafkaRecord]) -> DecodedBatch:
        raw = envelope_values(records)
        if records:
            clean = self._decode_clean(records, raw)
            if clean is not None:
                return clean
        rejected: list[Rejected] = []
        candidates: list[KafkaRecord] = []
        values: list[bytes] = []
        for record, sent in zip(records, raw, strict=True):
            value, reason = sent, precheck(sent)
            if reason is None and value is not None and (b"\n" in value or b"\r" in value):
                value, reason = _compact(value)
            if reason is not None or value is None:
                rejected.append(Rejected(record, reason or "no value"))
            else:
                candidates.append(record)
                values.append(value)
        tables: list[pa.Table] = []
        good: list[KafkaRecord] = []
        self._decode_bisecting(candidates, values, tables, good, rejected)
        rejected.sort(key=lambda r: r.record.offset)
        if not tables:
            return DecodedBatch(self.file_schema.empty_table(), rejected)
        envelope = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        return DecodedBatch(self._to_file_table(envelope, good), rejected)

    def _decode_clean(
        self, records: Sequence[KafkaRecord], values: list[bytes | None]
    ) -> DecodedBatch | None:
        """The common case in one pass, with no per-record checks: every value present, one
        line each, all valid. None whenever anything is off; the careful path then runs."""
        if None in values:
            return None
        joined = b"\n".join(values)  # type: ignore[arg-type]  # no None, checked above
        lines = len(values)
        if joined.count(b"\n") != lines - 1 or b"\r" in joined or not _is_utf8(joined):
            return None
        # Every line a {...} object: a bare top-level value (``null``) crashes Arrow's reader.
        if not (joined.startswith(b"{") and joined.endswith(b"}") and joined.count(b"}\n{") == lines - 1):
            return None
        try:
            envelope = self._parse_joined(joined, len(values))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return None
        if self._missing_required(envelope):
            return None
        return DecodedBatch(self._to_file_table(envelope, records), [])

    def _decode_bisecting(
        self,
        records: Sequence[KafkaRecord],
        values: Sequence[bytes],
        tables: list[pa.Table],
        good: list[KafkaRecord],
        rejected: list[Rejected],
    ) -> None:
        """Parse the whole slice; if Arrow refuses it, split it in halves until each bad
        record stands alone with its own reason (a few bad records cost O(log n) parses)."""
        if not records:
            return
        try:
            envelope = self._parse(values)
            problems = self._missing_required(envelope)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            problems = [_clean_reason(str(exc))]
        if not problems:
            tables.append(envelope)
            good.extend(records)
        elif len(records) == 1:
            rejected.append(Rejected(records[0], "; ".join(problems)))
        else:
            middle = len(records) // 2
            self._decode_bisecting(records[:middle], values[:middle], tables, good, rejected)
            self._decode_bisecting(records[middle:], values[middle:], tables, good, rejected)

    def _parse(self, values: Sequence[bytes]) -> pa.Table:
        return self._parse_joined(b"\n".join(values), len(values))

    def _parse_joined(self, joined: bytes, count: int) -> pa.Table:
        """Parse ``count`` newline-separated JSON objects into the envelope table."""
        table = pj.read_json(
            io.BytesIO(joined),
            read_options=pj.ReadOptions(use_threads=False, block_size=max(len(joined) + 1, 1 << 20)),
            parse_options=pj.ParseOptions(
                explicit_schema=self._reader_schema, unexpected_field_behavior="ignore"
            ),
        )
        if table.num_rows != count:
            raise pa.ArrowInvalid(f"expected one JSON object per record, got {table.num_rows} rows")
        payload = table.column("payload").combine_chunks()
        if payload.type != self._payload_target:
            payload = pc.cast(payload, self._payload_target)
        return table.set_column(table.schema.get_field_index("payload"), "payload", payload)

    def _missing_required(self, envelope: pa.Table) -> list[str]:
        """What required values are missing in the slice (empty when all are present)."""
        problems = [
            f"missing required envelope field {name!r}"
            for name in REQUIRED_ENVELOPE
            if envelope.column(name).null_count
        ]
        payload = envelope.column("payload")
        if payload.null_count:
            problems.append("missing payload object")
        for name in self._required:
            # A null payload already counted above; count only nulls inside a present payload.
            if pc.struct_field(payload, name).null_count > payload.null_count:
                problems.append(f"missing required field {name!r}")
        return problems

    def _to_file_table(self, envelope: pa.Table, records: Sequence[KafkaRecord]) -> pa.Table:
        payload = envelope.column("payload").combine_chunks()
        columns: list[pa.Array] = [payload.field(f.name) for f in self.schema.fields]
        columns += [
            envelope.column("event_id").combine_chunks(),
            envelope.column("event_name").combine_chunks(),
            envelope.column("created_at").combine_chunks(),
            envelope.column("source").combine_chunks(),
            envelope.column("schema_version").combine_chunks(),
            pa.repeat(pa.scalar(records[0].topic, pa.string()), len(records)),
            pa.repeat(pa.scalar(records[0].partition, pa.int32()), len(records)),
            pa.array([r.offset for r in records], pa.int64()),
            pa.array([r.timestamp for r in records], pa.timestamp("ms", tz="UTC")),
            pa.array([r.key for r in records], pa.binary()),
            headers_column(records),
        ]
        return pa.Table.from_arrays(columns, schema=self.file_schema)


def metadata_problem(record: KafkaRecord) -> str | None:
    """Why a record's Kafka metadata cannot go into a row, or None when it can."""
    timestamp = record.timestamp
    low, high = KAFKA_TIMESTAMP_RANGE_MS
    if timestamp == -1:
        return "the record has no Kafka timestamp (-1)"
    if not low <= timestamp <= high:
        return (
            f"Kafka timestamp {timestamp} ms is outside 1970-01-01..9999-12-31, "
            "the range _KAFKA_TIMESTAMP holds"
        )
    for key, _value in record.headers:
        if not is_utf8_key(key):
            return f"header key {header_key_bytes(key)!r} is not UTF-8"
    return None


def screen(records: Sequence[KafkaRecord]) -> tuple[Sequence[KafkaRecord], list[Rejected]]:
    """Split off the records :func:`metadata_problem` refuses; the rest keep their order.
    One pass over the timestamps and the header keys when every record is fine (the common
    case: an ASCII key is UTF-8, and only the fallback record reader hands out others)."""
    if not records:
        return records, []
    low, high = KAFKA_TIMESTAMP_RANGE_MS
    timestamps = [r.timestamp for r in records]
    if (
        low <= min(timestamps)
        and max(timestamps) <= high
        and all(key.isascii() for r in records for key, _ in r.headers)
    ):
        return records, []
    kept: list[KafkaRecord] = []
    rejected: list[Rejected] = []
    for record in records:
        reason = metadata_problem(record)
        if reason is None:
            kept.append(record)
        else:
            rejected.append(Rejected(record, reason))
    return kept, rejected


def with_rejected(decoded: DecodedBatch, rejected: list[Rejected]) -> DecodedBatch:
    """``decoded`` with more rejects, all in offset order."""
    if not rejected:
        return decoded
    merged = sorted([*rejected, *decoded.rejected], key=lambda r: r.record.offset)
    return DecodedBatch(decoded.table, merged)


def envelope_values(records: Sequence[KafkaRecord]) -> list[bytes | None]:
    """Each record's value as an enveloped JSON object (header envelopes wrapped in)."""
    if not any(r.headers for r in records):
        return [r.value for r in records]
    return [_with_header_envelope(r) for r in records]


def header_envelope(headers: Sequence[tuple[str, bytes | None]]) -> dict[str, bytes]:
    """The envelope fields a record's headers carry; it rides in headers when they hold an
    ``event_id``. A header sent with a null value (Kafka allows it) counts as absent."""
    return {key: value for key, value in headers if key in ENVELOPE_FIELDS and value is not None}


def _with_header_envelope(record: KafkaRecord) -> bytes | None:
    headers = header_envelope(record.headers)
    if "event_id" not in headers or record.value is None:
        return record.value
    parts = []
    for key, raw in headers.items():
        text = raw.decode("utf-8", errors="replace")
        if key == "schema_version":
            encoded = text if text.strip().isdigit() else json.dumps(text)
        else:
            encoded = json.dumps(text)
        parts.append(f'"{key}":{encoded}')
    # Byte concatenation keeps the payload as sent: a malformed one stays malformed.
    return b"{" + ",".join(parts).encode() + b',"payload":' + record.value + b"}"


def _is_utf8(data: bytes) -> bool:
    """Arrow's JSON reader lets invalid UTF-8 through into string columns: check first."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def precheck(value: bytes | None) -> str | None:
    """Cheap checks that keep the batch parser's input one JSON object per line."""
    if value is None:
        return "tombstone: the record has no value"
    stripped = value.strip()
    if not stripped:
        return "empty value"
    if not stripped.startswith(b"{") or not stripped.endswith(b"}"):
        return "not a JSON object"
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 (byte {exc.start}): JSON must be UTF-8"
    return None


def _compact(value: bytes) -> tuple[bytes | None, str | None]:
    """Re-encode pretty-printed JSON on one line (rare path), or say why it is not JSON."""
    try:
        return json.dumps(json.loads(value), separators=(",", ":")).encode(), None
    except (ValueError, RecursionError) as exc:
        return None, f"malformed JSON: {exc}"


def _clean_reason(message: str) -> str:
    return message.replace(" in row 0", "").strip()
