"""Encoding: Kafka records → Arrow (strict batch decoding) → Parquet."""

from __future__ import annotations

import json

from loader.config.spec import EventSpec
from loader.encode.avro_registry import AvroRegistryDecoder, WriterSchemas
from loader.encode.decode import BatchDecoder, DecodedBatch, KafkaRecord, Rejected
from loader.encode.parquet import PARQUET_OPTIONS, write_parquet
from loader.encode.protobuf_registry import ProtobufRegistryDecoder, WriterProtos
from loader.encode.raw import RawDecoder
from loader.errors import ConfigError
from loader.schema.resolve import schema_for

__all__ = [
    "PARQUET_OPTIONS",
    "AvroRegistryDecoder",
    "BatchDecoder",
    "DecodedBatch",
    "KafkaRecord",
    "ProtobufRegistryDecoder",
    "RawDecoder",
    "Rejected",
    "WriterProtos",
    "WriterSchemas",
    "decoder_for",
    "write_parquet",
]


def decoder_for(
    spec: EventSpec, writer_schemas: WriterSchemas | WriterProtos | None = None
) -> BatchDecoder | RawDecoder | AvroRegistryDecoder | ProtobufRegistryDecoder:
    """The decoder of an event type: typed JSON (Arrow's batch JSON reader), raw JSON (payload
    as VARIANT), or Confluent wire-format Avro or Protobuf, whose writer schemas
    ``writer_schemas`` looks up by id (the schema registry client)."""
    depth = spec.schema_ref.max_json_depth
    if spec.schema_ref.mode == "raw":
        return RawDecoder(spec.name, depth)
    schema = schema_for(spec)
    keep_extra = spec.schema_ref.extra_fields.keep
    form = spec.schema_ref.format
    if form == "avro-registry":
        if not isinstance(writer_schemas, WriterSchemas):
            raise ConfigError(f"{spec.name}: format {form} needs a schema registry (schema_registry.url)")
        assert spec.schema_path is not None  # a typed spec has one (SchemaRef checks)
        reader = json.loads(spec.schema_path.read_text())
        return AvroRegistryDecoder(schema, reader, writer_schemas, keep_extra=keep_extra)
    if form == "protobuf-registry":
        if not isinstance(writer_schemas, WriterProtos):
            raise ConfigError(f"{spec.name}: format {form} needs a schema registry (schema_registry.url)")
        assert spec.schema_ref.message is not None  # SchemaRef checks
        return ProtobufRegistryDecoder(schema, spec.schema_ref.message, writer_schemas, keep_extra=keep_extra)
    return BatchDecoder(schema, depth, keep_extra=keep_extra)
