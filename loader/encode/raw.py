"""Decoding raw (schema-less) events: typed envelope columns, the payload kept as JSON.

Mobile and web clients send events nobody validated upstream; they land with
their envelope in typed columns and their payload whole, in one VARIANT
column, to be shaped downstream. Arrow's reader needs a schema, so this path
parses each record as strict JSON (:mod:`loader.encode.strict_json`: orjson, a
microsecond or two each, and the same rules as the typed decoder: no NaN, no
repeated key, at most ``max_json_depth`` levels) and re-encodes the payload
compactly. It has the same contract as the typed decoder: every record ends as
a row or a reject with its reason, and nothing raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa

from loader.encode.decode import (
    DecodedBatch,
    KafkaRecord,
    Rejected,
    checked_value,
    envelope_values,
    kafka_columns,
    screen,
    with_rejected,
)
from loader.encode.strict_json import DEFAULT_MAX_JSON_DEPTH, StrictJsonError
from loader.schema.model import raw_schema
from loader.schema.types import arrow_schema

__all__ = ["RawDecoder"]

_Row = tuple[str, Any, datetime, Any, Any, str]
"""A raw event's event_id, event_name, created_at, source, schema_version and payload (JSON)."""


class RawDecoder:
    """Decodes JSON-enveloped events whose payload has no schema."""

    def __init__(self, event_name: str, max_json_depth: int = DEFAULT_MAX_JSON_DEPTH) -> None:
        self.schema = raw_schema(event_name)
        self.file_schema = arrow_schema(self.schema)
        self.max_json_depth = max_json_depth

    def decode(self, records: Sequence[KafkaRecord]) -> DecodedBatch:
        """Decode ``records`` (consecutive records of one partition); never raises for bad input."""
        kept, screened = screen(records)
        good: list[KafkaRecord] = []
        rows: list[_Row] = []
        rejected: list[Rejected] = []
        for record, value in zip(kept, envelope_values(kept), strict=True):
            row, reason = _parse(record, value, self.max_json_depth)
            if row is None:
                rejected.append(Rejected(record, reason))
            else:
                good.append(record)
                rows.append(row)
        return with_rejected(DecodedBatch(self._table(good, rows), rejected), screened)

    def rejects(self, records: Sequence[KafkaRecord]) -> list[Rejected]:
        """The records :meth:`decode` would reject, with its reasons (the gateway's check)."""
        return self.decode(records).rejected

    def _table(self, records: list[KafkaRecord], rows: list[_Row]) -> pa.Table:
        if not records:
            return self.file_schema.empty_table()
        event_ids, names, created, sources, versions, payloads = zip(*rows, strict=True)
        return pa.Table.from_arrays(
            [
                pa.array(payloads, pa.json_()),
                pa.array(event_ids, pa.string()),
                pa.array(names, pa.string()),
                pa.array(created, pa.timestamp("us", tz="UTC")),
                pa.array(sources, pa.string()),
                pa.array(versions, pa.int64()),
                *kafka_columns(records),
            ],
            schema=self.file_schema,
        )


class _RejectedError(Exception):
    """Why a record cannot become a row."""


def _parse(record: KafkaRecord, value: bytes | None, max_json_depth: int) -> tuple[_Row | None, str]:
    """The row of one raw event, or (None, reason)."""
    try:
        return _row(record, value, max_json_depth), ""
    except (_RejectedError, StrictJsonError) as exc:
        return None, str(exc)


def _row(record: KafkaRecord, value: bytes | None, max_json_depth: int) -> _Row:
    parsed = checked_value(record, value, max_json_depth)
    # A header envelope was wrapped around the (now checked) payload: read the whole event.
    event = parsed if value is record.value else orjson.loads(value or b"")
    event_id, created_at, payload = event.get("event_id"), event.get("created_at"), event.get("payload")
    if not isinstance(event_id, str) or not event_id:
        raise _RejectedError("missing required envelope field 'event_id'")
    if not isinstance(created_at, str):
        raise _RejectedError("missing required envelope field 'created_at'")
    try:
        created = datetime.fromisoformat(created_at)
    except ValueError:
        raise _RejectedError(f"created_at is not an ISO-8601 timestamp: {created_at[:40]!r}") from None
    if payload is None:
        raise _RejectedError("missing payload")
    version = event.get("schema_version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise _RejectedError(f"schema_version must be an integer (got {version!r})")
    name, source = event.get("event_name"), event.get("source")
    return (
        event_id,
        name if isinstance(name, str) else None,
        created if created.tzinfo is not None else created.replace(tzinfo=UTC),
        source if isinstance(source, str) else None,
        version,
        orjson.dumps(payload).decode(),
    )
