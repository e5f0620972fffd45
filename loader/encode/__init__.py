"""Encoding: Kafka records → Arrow (strict batch decoding) → Parquet."""

from __future__ import annotations

from loader.encode.decode import BatchDecoder, DecodedBatch, KafkaRecord, Rejected
from loader.encode.parquet import PARQUET_OPTIONS, write_parquet

__all__ = ["PARQUET_OPTIONS", "BatchDecoder", "DecodedBatch", "KafkaRecord", "Rejected", "write_parquet"]
