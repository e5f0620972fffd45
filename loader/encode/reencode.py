"""Data-file rows back into Kafka records: the inverse of the decoders.

``loader replay publish`` re-sends archived events to a topic. Each row gives
back its record's key, Kafka timestamp and headers as they were, and a value
that decodes to the same row: the JSON envelope (or, where the envelope rode
in headers, the bare payload), rebuilt from the typed columns. The value is
equal in meaning, not in bytes: key order, spacing and fields the schema
does not know are not kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa

from loader.encode.decode import ENVELOPE_FIELDS, header_envelope
from loader.encode.headers import decode_headers
from loader.schema.model import EventSchema, FieldType

__all__ = ["ArchivedRecord", "RecordEncoder"]

_ENVELOPE_TYPES = {
    "event_id": FieldType(kind="string"),
    "event_name": FieldType(kind="string"),
    "created_at": FieldType(kind="timestamp"),
    "source": FieldType(kind="string"),
    "schema_version": FieldType(kind="long"),
}
"""Each envelope field (:data:`~loader.encode.decode.ENVELOPE_FIELDS`) as the decoder reads it;
its row-metadata column is ``_`` + its name in capitals."""


@dataclass(frozen=True)
class ArchivedRecord:
    """A record as it was on Kafka, rebuilt from a data-file row."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes | None]]


class RecordEncoder:
    """Rebuilds the Kafka records of one event type's data-file rows."""

    def __init__(self, schema: EventSchema, *, raw: bool) -> None:
        self.schema = schema
        self.raw = raw

    def records(self, batch: pa.RecordBatch | pa.Table) -> Iterator[ArchivedRecord]:
        """One record per row, in row order (a data file's rows are in offset order)."""
        for row in batch.to_pylist():
            headers = decode_headers(row.get("_HEADERS"))
            payload = self._payload(row)
            if "event_id" in header_envelope(headers):
                value = payload  # the envelope rode in the headers: the value was the bare payload
            else:
                envelope = {
                    name: _json_value(row[f"_{name.upper()}"], _ENVELOPE_TYPES[name])
                    for name in ENVELOPE_FIELDS
                    if row[f"_{name.upper()}"] is not None
                }
                value = {**envelope, "payload": payload}
            yield ArchivedRecord(
                partition=row["_PARTITION"],
                offset=row["_OFFSET"],
                timestamp_ms=_epoch_ms(row["_KAFKA_TIMESTAMP"]),
                key=row["_KEY"],
                value=orjson.dumps(value),
                headers=headers,
            )

    def _payload(self, row: dict[str, Any]) -> Any:
        if self.raw:
            return orjson.Fragment(row[self.schema.fields[0].column])
        return {field.name: _json_value(row[field.column], field.type) for field in self.schema.fields}


def _json_value(value: Any, field_type: FieldType) -> Any:  # noqa: PLR0911 - one branch per kind
    """A column value as the decoder reads it from JSON."""
    if value is None:
        return None
    kind = field_type.kind
    if kind == "timestamp" and isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if kind == "date" and isinstance(value, date):
        return value.isoformat()
    if kind == "decimal" and isinstance(value, Decimal):
        return str(value)  # a string keeps every digit; the decoder reads decimals from strings
    if kind == "variant":
        return orjson.Fragment(value)  # already JSON text
    if kind == "record":
        return {f.name: _json_value(value.get(f.name), f.type) for f in field_type.fields}
    if kind == "array":
        assert field_type.items is not None
        items = field_type.items
        return [_json_value(item, items) for item in value]
    return value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _epoch_ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)  # exact: no float rounding
