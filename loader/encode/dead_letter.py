"""Dead-letter rows: a rejected record with everything needed to fix and replay it."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from loader.encode.decode import Rejected

__all__ = ["DEAD_LETTER_SCHEMA", "dead_letter_table"]

_HEADER = pa.struct([pa.field("key", pa.string()), pa.field("value", pa.binary())])

DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("_TOPIC", pa.string(), nullable=False),
        pa.field("_PARTITION", pa.int32(), nullable=False),
        pa.field("_OFFSET", pa.int64(), nullable=False),
        pa.field("_KAFKA_TIMESTAMP", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("_KEY", pa.binary()),
        pa.field("_VALUE", pa.binary()),
        pa.field("_HEADERS", pa.list_(_HEADER)),
        pa.field("_REASON", pa.string(), nullable=False),
    ]
)


def dead_letter_table(rejected: Sequence[Rejected]) -> pa.Table:
    """The dead-letter rows for ``rejected``, in the order given."""
    records = [r.record for r in rejected]
    return pa.Table.from_arrays(
        [
            pa.array([r.topic for r in records], pa.string()),
            pa.array([r.partition for r in records], pa.int32()),
            pa.array([r.offset for r in records], pa.int64()),
            pa.array([r.timestamp for r in records], pa.timestamp("ms", tz="UTC")),
            pa.array([r.key for r in records], pa.binary()),
            pa.array([r.value for r in records], pa.binary()),
            pa.array([[{"key": k, "value": v} for k, v in r.headers] for r in records], pa.list_(_HEADER)),
            pa.array([r.reason for r in rejected], pa.string()),
        ],
        schema=DEAD_LETTER_SCHEMA,
    )
