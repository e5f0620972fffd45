"""Encoding: Kafka records → Arrow (strict batch decoding) → Parquet."""

from __future__ import annotations

from loader.config.spec import EventSpec
from loader.encode.decode import BatchDecoder, DecodedBatch, KafkaRecord, Rejected
from loader.encode.parquet import PARQUET_OPTIONS, write_parquet
from loader.encode.raw import RawDecoder
from loader.schema.resolve import schema_for

__all__ = [
    "PARQUET_OPTIONS",
    "BatchDecoder",
    "DecodedBatch",
    "KafkaRecord",
    "RawDecoder",
    "Rejected",
    "decoder_for",
    "write_parquet",
]


def decoder_for(spec: EventSpec) -> BatchDecoder | RawDecoder:
    """The decoder of an event type: typed (Arrow's batch JSON reader) or raw (payload as VARIANT)."""
    depth = spec.schema_ref.max_json_depth
    if spec.schema_ref.mode == "raw":
        return RawDecoder(spec.name, depth)
    return BatchDecoder(schema_for(spec), depth)
