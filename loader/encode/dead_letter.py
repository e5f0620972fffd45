"""Dead-letter rows: a rejected record with everything needed to fix and replay it.

Every value is kept as the record carried it, including what no data row can hold:
``_KAFKA_TIMESTAMP_MS`` is the record's timestamp as sent (``_KAFKA_TIMESTAMP`` is
the same as a timestamp, null when outside ``KAFKA_TIMESTAMP_RANGE_MS``, so that any
Parquet reader can read the file), and a header key that is not UTF-8 is in its
header's ``key_bytes`` exactly (``key`` then shows it with U+FFFD for the bad bytes;
``key_bytes`` is null for every other key).

Records the event gateway could not deliver to Kafka (:func:`unsent_dead_letter_table`)
have the same columns, with ``_OFFSET`` null (they never had one) and ``_PARTITION`` null
unless the client chose one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import pyarrow as pa

from loader.encode.decode import Rejected
from loader.encode.headers import header_key_bytes, is_utf8_key
from loader.schema.types import KAFKA_TIMESTAMP_RANGE_MS

__all__ = [
    "DEAD_LETTER_SCHEMA",
    "UNSENT_DEAD_LETTER_SCHEMA",
    "Unsent",
    "dead_letter_table",
    "unsent_dead_letter_table",
]

_HEADER = pa.struct(
    [pa.field("key", pa.string()), pa.field("key_bytes", pa.binary()), pa.field("value", pa.binary())]
)

DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("_TOPIC", pa.string(), nullable=False),
        pa.field("_PARTITION", pa.int32(), nullable=False),
        pa.field("_OFFSET", pa.int64(), nullable=False),
        pa.field("_KAFKA_TIMESTAMP", pa.timestamp("ms", tz="UTC")),
        pa.field("_KAFKA_TIMESTAMP_MS", pa.int64(), nullable=False),
        pa.field("_KEY", pa.binary()),
        pa.field("_VALUE", pa.binary()),
        pa.field("_HEADERS", pa.list_(_HEADER)),
        pa.field("_REASON", pa.string(), nullable=False),
    ]
)


UNSENT_DEAD_LETTER_SCHEMA = pa.schema(
    [f.with_nullable(True) if f.name in ("_PARTITION", "_OFFSET") else f for f in DEAD_LETTER_SCHEMA]
)
"""The dead-letter columns of records never written to Kafka: no offset, maybe no partition."""


class Unsent(Protocol):
    """A record that was to be produced (the gateway's :class:`~loader.gateway.outbound.OutboundRecord`)."""

    @property
    def value(self) -> bytes: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def headers(self) -> tuple[tuple[str, bytes], ...]: ...
    @property
    def timestamp_ms(self) -> int: ...
    @property
    def partition(self) -> int | None: ...


def unsent_dead_letter_table(topic: str, records: Sequence[Unsent], reason: str) -> pa.Table:
    """The dead-letter rows of ``records``, which were to go to ``topic`` and did not, for ``reason``."""
    return pa.Table.from_arrays(
        [
            pa.array([topic] * len(records), pa.string()),
            pa.array([r.partition for r in records], pa.int32()),
            pa.nulls(len(records), pa.int64()),
            pa.array([_timestamp(r.timestamp_ms) for r in records], pa.timestamp("ms", tz="UTC")),
            pa.array([r.timestamp_ms for r in records], pa.int64()),
            pa.array([r.key for r in records], pa.binary()),
            pa.array([r.value for r in records], pa.binary()),
            pa.array([[_header(k, v) for k, v in r.headers] for r in records], pa.list_(_HEADER)),
            pa.array([reason] * len(records), pa.string()),
        ],
        schema=UNSENT_DEAD_LETTER_SCHEMA,
    )


def dead_letter_table(rejected: Sequence[Rejected]) -> pa.Table:
    """The dead-letter rows for ``rejected``, in the order given."""
    records = [r.record for r in rejected]
    return pa.Table.from_arrays(
        [
            pa.array([r.topic for r in records], pa.string()),
            pa.array([r.partition for r in records], pa.int32()),
            pa.array([r.offset for r in records], pa.int64()),
            pa.array([_timestamp(r.timestamp) for r in records], pa.timestamp("ms", tz="UTC")),
            pa.array([r.timestamp for r in records], pa.int64()),
            pa.array([r.key for r in records], pa.binary()),
            pa.array([r.value for r in records], pa.binary()),
            pa.array([[_header(k, v) for k, v in r.headers] for r in records], pa.list_(_HEADER)),
            pa.array([r.reason for r in rejected], pa.string()),
        ],
        schema=DEAD_LETTER_SCHEMA,
    )


def _timestamp(timestamp_ms: int) -> int | None:
    low, high = KAFKA_TIMESTAMP_RANGE_MS
    return timestamp_ms if low <= timestamp_ms <= high else None


def _header(key: str, value: bytes | None) -> dict[str, str | bytes | None]:
    if is_utf8_key(key):
        return {"key": key, "key_bytes": None, "value": value}
    raw = header_key_bytes(key)
    return {"key": raw.decode("utf-8", "replace"), "key_bytes": raw, "value": value}
