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

import dataclasses
import io
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from loader.encode.extra import split_unknown
from loader.encode.headers import header_key_bytes, headers_column, is_utf8_key
from loader.encode.strict_json import DEFAULT_MAX_JSON_DEPTH, StrictJsonError, strict_loads
from loader.errors import ConfigError
from loader.schema.model import EventSchema, FieldType, SchemaField
from loader.schema.types import EXTRA_FIELD, KAFKA_TIMESTAMP_RANGE_MS, arrow_schema, arrow_type

__all__ = [
    "BatchDecoder",
    "DecodedBatch",
    "Decoder",
    "KafkaRecord",
    "RecordValues",
    "Rejected",
    "checked_value",
    "envelope_values",
    "header_envelope",
    "kafka_columns",
    "metadata_problem",
    "precheck",
    "screen",
]

ENVELOPE_FIELDS = ("event_id", "event_name", "created_at", "source", "schema_version")
"""The envelope around every payload: fields of the JSON value, or Kafka headers (routing
then needs no payload decoding, and the value is the bare payload). As a header,
``schema_version`` is a decimal number in ASCII."""
REQUIRED_ENVELOPE = ("event_id", "created_at")
_ENVELOPE_PREFIXES = [(key, f'"{key}":'.encode()) for key in ENVELOPE_FIELDS]


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


@dataclass(frozen=True)
class RecordValues:
    """A :class:`KafkaRecord` held as plain values: read back from a dead-letter file, about
    to be produced by the gateway, or made up by a benchmark."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]] = ()


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
    """The rows decoded from a batch (file schema, record order) and the rejects; how many of
    the rows carry each unknown payload field (by path, see :mod:`loader.encode.extra`)."""

    table: pa.Table
    rejected: list[Rejected]
    unknown_fields: Counter[str] = dataclasses.field(default_factory=Counter)


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
    """Decodes JSON-enveloped events of one schema into the file's Arrow schema.

    Every record gets the same verdict, whichever path decodes it and whatever else is in
    its batch: it is checked, in this order, by :func:`metadata_problem`, its header
    envelope (UTF-8 values), :func:`precheck`, strict JSON
    (:func:`~loader.encode.strict_json.strict_loads`: no NaN, no duplicate key, at most
    ``max_json_depth`` levels), then Arrow's reader with the schema (types, required fields
    at every depth, finite floats); the first problem found is its reason.

    The fast path vouches for a whole batch with one Arrow parse that refuses unknown
    fields: a record with no field the schema does not know has its keys checked for
    duplicates by Arrow and nests no deeper than the schema, so strict JSON adds nothing
    but NaN, which only a float column can hold (checked on the column). Any other batch
    takes the careful path, which checks every record as above.

    Payload fields the schema does not know go to the ``_EXTRA`` column (``keep_extra``; the
    file then has it), split off from the careful path's strict parse of each record
    (:func:`~loader.encode.extra.split_unknown`); either way they are counted per path.
    """

    def __init__(
        self, schema: EventSchema, max_json_depth: int = DEFAULT_MAX_JSON_DEPTH, *, keep_extra: bool = True
    ) -> None:
        depth = 1 + _json_depth(FieldType(kind="record", fields=schema.fields))
        if depth > max_json_depth:
            raise ConfigError(
                f"schema {schema.name!r} nests {depth} levels of JSON objects and arrays (with the "
                f"envelope): raise the spec's schema.max_json_depth ({max_json_depth}) to at least that"
            )
        self.schema = schema
        self.max_json_depth = max_json_depth
        self.keep_extra = keep_extra
        base = arrow_schema(schema)
        self.file_schema = base.append(EXTRA_FIELD) if keep_extra else base
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
        self._float_paths = list(_float_paths(schema.fields))
        self._last_batch_refused = False
        """Whether the fast path refused the last batch (say, a producer ahead of the schema
        sends unknown fields): a hint, no verdict depends on it, to try the first record alone
        before parsing the whole batch."""

    def decode(self, records: Sequence[KafkaRecord]) -> DecodedBatch:
        """Decode ``records`` (consecutive records of one partition); never raises for bad input."""
        kept, rejected = screen(records)
        return with_rejected(self._decode_values(kept, rows=True), rejected)

    def rejects(self, records: Sequence[KafkaRecord]) -> list[Rejected]:
        """The records :meth:`decode` would reject, with its reasons, without building the
        rows (the gateway's check: the rows' table is a fifth of a small batch's cost)."""
        kept, rejected = screen(records)
        return with_rejected(self._decode_values(kept, rows=False), rejected).rejected

    def _decode_values(self, records: Sequence[KafkaRecord], *, rows: bool) -> DecodedBatch:
        raw = envelope_values(records)
        if records:
            clean = self._decode_clean(records, raw, rows=rows)
            if clean is not None:
                return clean
        rejected: list[Rejected] = []
        candidates: list[KafkaRecord] = []
        values: list[bytes] = []
        splits: dict[int, tuple[dict[str, Any] | None, list[str]]] = {}
        for record, sent in zip(records, raw, strict=True):
            try:
                parsed = checked_value(record, sent, self.max_json_depth)
            except StrictJsonError as exc:
                rejected.append(Rejected(record, str(exc)))
            else:
                assert sent is not None  # checked
                # Under a header envelope the parse is the bare payload; otherwise the envelope.
                payload = parsed if sent is not record.value else parsed.get("payload")
                splits[record.offset] = split_unknown(payload, self.schema.fields)
                candidates.append(record)
                # Strict JSON has newlines only between tokens: on one line, the same value.
                multiline = b"\n" in sent or b"\r" in sent
                values.append(sent.replace(b"\n", b" ").replace(b"\r", b" ") if multiline else sent)
        tables: list[pa.Table] = []
        good: list[KafkaRecord] = []
        self._decode_bisecting(candidates, values, tables, good, rejected)
        rejected.sort(key=lambda r: r.record.offset)
        if not tables or not rows:
            return DecodedBatch(self.file_schema.empty_table(), rejected)
        envelope = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        unknown: Counter[str] = Counter()
        extras: list[str | None] = []
        for record in good:
            extra, paths = splits[record.offset]
            unknown.update(paths)
            extras.append(None if extra is None else orjson.dumps(extra).decode())
        return DecodedBatch(self._to_file_table(envelope, good, extras), rejected, unknown)

    def _decode_clean(
        self, records: Sequence[KafkaRecord], values: list[bytes | None], *, rows: bool
    ) -> DecodedBatch | None:
        """The common case in one pass, with no per-record checks: every value present, one
        line each, all valid, no field the schema does not know. None whenever anything is
        off; the careful path then runs. ``rows``: build the rows' table (else it is empty)."""
        if None in values:
            return None
        joined = b"\n".join(values)  # type: ignore[arg-type]  # no None, checked above
        lines = len(values)
        if joined.count(b"\n") != lines - 1 or b"\r" in joined or not _is_utf8(joined):
            return None
        # Every line a {...} object: a bare top-level value (``null``) crashes Arrow's reader.
        if not (joined.startswith(b"{") and joined.endswith(b"}") and joined.count(b"}\n{") == lines - 1):
            return None
        first = values[0]
        try:
            if self._last_batch_refused and first is not None:
                self._parse_joined(first, 1, unknown_fields="error")
            envelope = self._parse_joined(joined, len(values), unknown_fields="error")
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            self._last_batch_refused = True
            return None
        self._last_batch_refused = False
        if self._problems(envelope):
            return None
        table = self._to_file_table(envelope, records) if rows else self.file_schema.empty_table()
        return DecodedBatch(table, [])

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
            problems = self._problems(envelope)
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
        return self._parse_joined(b"\n".join(values), len(values), unknown_fields="ignore")

    def _parse_joined(self, joined: bytes, count: int, *, unknown_fields: str) -> pa.Table:
        """Parse ``count`` newline-separated JSON objects into the envelope table;
        ``unknown_fields`` is "error" (refuse a field the schema does not know) or "ignore"."""
        table = pj.read_json(
            io.BytesIO(joined),
            # One block of the input's size: a fixed 1 MB block cost a small batch a quarter more.
            read_options=pj.ReadOptions(use_threads=False, block_size=len(joined) + 1),
            parse_options=pj.ParseOptions(
                explicit_schema=self._reader_schema, unexpected_field_behavior=unknown_fields
            ),
        )
        if table.num_rows != count:
            raise pa.ArrowInvalid(f"expected one JSON object per record, got {table.num_rows} rows")
        payload = table.column("payload").combine_chunks()
        if payload.type != self._payload_target:
            payload = pc.cast(payload, self._payload_target)
        return table.set_column(table.schema.get_field_index("payload"), "payload", payload)

    def _problems(self, envelope: pa.Table) -> list[str]:
        """What the slice's values break that Arrow's reader lets through (empty when none):
        a missing required value at any depth, a float that is not finite."""
        problems = [
            f"missing required envelope field {name!r}"
            for name in REQUIRED_ENVELOPE
            if envelope.column(name).null_count
        ]
        payload = envelope.column("payload").combine_chunks()
        if payload.null_count:
            problems.append("missing payload object")
        problems += _missing_required(payload, self.schema.fields, "")
        for path, column in self._float_paths:
            values = _leaf(payload, path)
            if len(values) and pc.any(pc.invert(pc.is_finite(values))).as_py():
                problems.append(f"field {column!r} is not a finite number (NaN, Infinity or out of range)")
        return problems

    def _to_file_table(
        self, envelope: pa.Table, records: Sequence[KafkaRecord], extras: Sequence[str | None] = ()
    ) -> pa.Table:
        """The file's rows; ``extras`` are their ``_EXTRA`` values (none: all null)."""
        payload = envelope.column("payload").combine_chunks()
        columns: list[pa.Array] = [payload.field(f.name) for f in self.schema.fields]
        columns += [
            envelope.column("event_id").combine_chunks(),
            envelope.column("event_name").combine_chunks(),
            envelope.column("created_at").combine_chunks(),
            envelope.column("source").combine_chunks(),
            envelope.column("schema_version").combine_chunks(),
            *kafka_columns(records),
        ]
        if self.keep_extra:
            columns.append(
                pa.array(extras, EXTRA_FIELD.type) if extras else pa.nulls(len(records), EXTRA_FIELD.type)
            )
        return pa.Table.from_arrays(columns, schema=self.file_schema)


def kafka_columns(records: Sequence[KafkaRecord]) -> list[pa.Array]:
    """The Kafka metadata columns every decoder's file holds, in file-schema order: topic,
    partition, offset, timestamp, key and headers (the records share one topic-partition)."""
    count = len(records)
    return [
        pa.repeat(pa.scalar(records[0].topic, pa.string()), count),
        pa.repeat(pa.scalar(records[0].partition, pa.int32()), count),
        pa.array([r.offset for r in records], pa.int64()),
        pa.array([r.timestamp for r in records], pa.timestamp("ms", tz="UTC")),
        pa.array([r.key for r in records], pa.binary()),
        headers_column(records),
    ]


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
    """Each record's value as an enveloped JSON object (header envelopes wrapped in); None
    where there is no value, or envelope headers that are not UTF-8."""
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
    parts = [b"{"]
    for key, prefix in _ENVELOPE_PREFIXES:
        raw = headers.get(key)
        if raw is None:
            parts += (prefix, b"null,")
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None  # no event: checked_value names the header
        number = text.strip()
        if key == "schema_version" and number.isascii() and number.isdigit():
            parts += (prefix, (number.lstrip("0") or "0").encode(), b",")  # "007" is version 7
        else:
            parts += (prefix, orjson.dumps(text), b",")
    # Byte concatenation keeps the payload as sent: a malformed one stays malformed. Every
    # envelope key is written, so a value that smuggles in a key after its object (``{…},
    # "source": "x"``) repeats one (Arrow refuses that) or brings an unknown one (the fast
    # path refuses that), and the careful path then finds it is not one JSON object.
    parts += (b'"payload":', record.value, b"}")
    return b"".join(parts)


def checked_value(record: KafkaRecord, sent: bytes | None, max_json_depth: int) -> Any:
    """The JSON object ``record`` carries: its value, or under a header envelope its bare
    payload (``sent`` is its :func:`envelope_values` entry). StrictJsonError says why there is
    none: an envelope header that is not UTF-8, :func:`precheck`'s reasons, or a value that is
    not strict JSON (:func:`~loader.encode.strict_json.strict_loads`)."""
    headers = header_envelope(record.headers) if record.headers else {}
    in_headers = "event_id" in headers and record.value is not None
    for key, header in headers.items() if in_headers else ():
        if not _is_utf8(header):
            raise StrictJsonError(f"envelope header {key!r} is not UTF-8: {header[:40]!r}")
    value = record.value if in_headers else sent
    reason = precheck(value)
    if reason is not None or value is None:
        raise StrictJsonError(reason or "no value")
    return strict_loads(value, max_json_depth, outer_depth=1 if in_headers else 0)


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


def _clean_reason(message: str) -> str:
    return message.replace(" in row 0", "").strip()


def _json_depth(field_type: FieldType) -> int:
    """How many levels of JSON objects and arrays a value of ``field_type`` nests at most."""
    if field_type.kind == "record":
        return 1 + max((_json_depth(f.type) for f in field_type.fields), default=0)
    if field_type.kind == "array":
        assert field_type.items is not None
        return 1 + _json_depth(field_type.items)
    return 0


def _float_paths(
    fields: Sequence[SchemaField], path: tuple[str, ...] = (), name: str = ""
) -> Iterator[tuple[tuple[str, ...], str]]:
    """The (path, dotted name) of every float and double field, nested ones included (a path
    step ``[]`` goes into an array's items)."""
    for field in fields:
        yield from _float_path((*path, field.name), f"{name}{field.name}", field.type)


def _float_path(
    path: tuple[str, ...], name: str, field_type: FieldType
) -> Iterator[tuple[tuple[str, ...], str]]:
    while field_type.kind == "array":
        assert field_type.items is not None
        path, name, field_type = (*path, "[]"), f"{name}[]", field_type.items
    if field_type.kind in ("float", "double"):
        yield path, name
    elif field_type.kind == "record":
        yield from _float_paths(field_type.fields, path, f"{name}.")


def _leaf(array: pa.Array, path: tuple[str, ...]) -> pa.Array:
    """The values at ``path`` in a struct array (nulls where a parent is null; array items flattened)."""
    for step in path:
        array = array.flatten() if step == "[]" else _child(array, step)
    return array


def _child(array: pa.Array, name: str) -> pa.Array:
    """A struct array's child, null wherever the struct itself is null."""
    return array.flatten()[array.type.get_field_index(name)]


def _missing_required(array: pa.Array, fields: Sequence[SchemaField], prefix: str) -> list[str]:
    """The required fields missing (null or absent) in the present rows of a struct array, at
    every depth: records in records, and records in arrays."""
    problems: list[str] = []
    children = array.flatten()
    for field, child in zip(fields, children, strict=True):
        name = f"{prefix}{field.name}"
        if not field.nullable and child.null_count > array.null_count:
            # A null struct makes its children null: count only nulls inside present structs.
            problems.append(f"missing required field {name!r}")
        problems += _missing_nested(child, field.type, name)
    return problems


def _missing_nested(array: pa.Array, field_type: FieldType, name: str) -> list[str]:
    if field_type.kind == "record":
        return _missing_required(array, field_type.fields, f"{name}.")
    if field_type.kind == "array":
        assert field_type.items is not None
        return _missing_nested(array.flatten(), field_type.items, f"{name}[]")
    return []
