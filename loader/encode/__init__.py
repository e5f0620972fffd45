"""Encoding: Kafka records → Arrow (strict batch decoding) → Parquet."""

from __future__ import annotations

import json

from loader.config.spec import EventSpec
from loader.encode.avro_registry import AvroRegistryDecoder, WriterSchemas
from loader.encode.decode import BatchDecoder, DecodedBatch, KafkaRecord, Rejected
from loader.encode.parquet import PARQUET_OPTIONS, write_parquet
from loader.encode.raw import RawDecoder
from loader.errors import ConfigError
from loader.schema.resolve import schema_for

__all__ = [
    "PARQUET_OPTIONS",
    "AvroRegistryDecoder",
    "BatchDecoder",
    "DecodedBatch",
    "KafkaRecord",
    "RawDecoder",
    "Rejected",
    "WriterSchemas",
    "decoder_for",
    "write_parquet",
]


def decoder_for(
    spec: EventSpec, writer_schemas: WriterSchemas | None = None
) -> BatchDecoder | RawDecoder | AvroRegistryDecoder:
    """The decoder of an event type: typed JSON (Arrow's batch JSON reader), raw JSON (payload
    as VARIANT), or Confluent wire-format Avro, whose writer schemas ``writer_schemas`` looks up
    by id (the schema registry client)."""
    depth = spec.schema_ref.max_json_depth
    if spec.schema_ref.mode == "raw":
        return RawDecoder(spec.name, depth)
    schema = schema_for(spec)
    if spec.schema_ref.format == "avro-registry":
        if writer_schemas is None:
            raise ConfigError(
                f"{spec.name}: format avro-registry needs a schema registry (schema_registry.url)"
            )
        assert spec.schema_path is not None  # a typed spec has one (SchemaRef checks)
        return AvroRegistryDecoder(
            schema,
            json.loads(spec.schema_path.read_text()),
            writer_schemas,
            keep_extra=spec.schema_ref.extra_fields.keep,
        )
    return BatchDecoder(schema, depth, keep_extra=spec.schema_ref.extra_fields.keep)
