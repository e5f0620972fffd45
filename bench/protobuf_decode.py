"""Decoding alone, JSON against Confluent wire-format Protobuf, on the same events in one process.

The same sample events are encoded twice: as the JSON values the rest of the
benchmark produces, and as a producer using a schema registry sends Protobuf
(the magic byte, the schema id, the message index, the message's bytes; the
envelope in Kafka headers). The Protobuf message is built from the spec's
schema field by field (strings, numbers, booleans, nullable fields as proto3
``optional``, records as nested messages, arrays as repeated fields,
timestamps as ``google.protobuf.Timestamp``). Each form is decoded in batches
by its decoder (:class:`~loader.encode.decode.BatchDecoder`,
:class:`~loader.encode.protobuf_registry.ProtobufRegistryDecoder` with an
in-memory registry) and the rates are compared. Decimals and dates have no
Protobuf mapping in the loader, so the schema must have neither
(``store_updated`` has none). Run alone with ``python -m bench.protobuf_decode``;
``bench/run`` runs it too.
"""

from __future__ import annotations

import argparse
import base64
from datetime import datetime
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

from bench.avro_decode import DecodeRates, Records, json_record, rate, worker_heap
from loader.devstack.samples import SampleEvents
from loader.encode.decode import BatchDecoder, RecordValues
from loader.encode.protobuf_registry import ProtobufRegistryDecoder
from loader.schema.avro import load_avro_schema
from loader.schema.model import EventSchema, FieldType

__all__ = ["PROTOBUF_SCHEMA", "measure_protobuf_decoding"]

PROTOBUF_SCHEMA = "store_updated"
"""The sample schema the Protobuf stage uses: every type it has maps to Protobuf."""
SCHEMA_ID = 1
PACKAGE = "bench"

_FIELD = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "string": _FIELD.TYPE_STRING,
    "int": _FIELD.TYPE_INT32,
    "long": _FIELD.TYPE_INT64,
    "float": _FIELD.TYPE_FLOAT,
    "double": _FIELD.TYPE_DOUBLE,
    "boolean": _FIELD.TYPE_BOOL,
}


def _message(name: str, fields: list[Any], parent: Any) -> None:
    """Declare message ``name`` with the schema's ``fields`` in ``parent`` (a file or a message)."""
    message = (
        parent.message_type.add(name=name)
        if hasattr(parent, "message_type")
        else parent.nested_type.add(name=name)
    )
    for number, spec_field in enumerate(fields, start=1):
        kind, nullable = spec_field.type, spec_field.nullable
        field = message.field.add(name=spec_field.name, number=number, label=_FIELD.LABEL_OPTIONAL)
        if kind.kind == "array":
            assert kind.items is not None
            field.label = _FIELD.LABEL_REPEATED
            kind, nullable = kind.items, False
        if kind.kind == "record":
            nested = f"{spec_field.name.title().replace('_', '')}Message"
            _message(nested, list(kind.fields), message)
            field.type, field.type_name = _FIELD.TYPE_MESSAGE, f".{PACKAGE}.{name}.{nested}"
        elif kind.kind == "timestamp":
            field.type, field.type_name = _FIELD.TYPE_MESSAGE, ".google.protobuf.Timestamp"
        elif kind.kind in _SCALARS:
            field.type = _SCALARS[kind.kind]
            if nullable:
                field.proto3_optional = True
                field.oneof_index = len(message.oneof_decl)
                message.oneof_decl.add(name=f"_{spec_field.name}")
        else:
            raise ValueError(f"field {spec_field.name}: {kind.kind} has no Protobuf mapping in the loader")


def _file(schema: EventSchema) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(name="bench/event.proto", package=PACKAGE, syntax="proto3")
    proto.dependency.append("google/protobuf/timestamp.proto")
    _message("Event", list(schema.fields), proto)
    return proto


def _fill(message: Any, value: dict[str, Any], fields: list[Any]) -> None:
    for spec_field in fields:
        item = value.get(spec_field.name)
        if item is None:
            continue
        _set(message, spec_field.name, item, spec_field.type)


def _set(message: Any, name: str, item: Any, kind: FieldType) -> None:
    if kind.kind == "array":
        assert kind.items is not None
        target = getattr(message, name)
        for element in item:
            if kind.items.kind in ("record", "timestamp"):
                _into(target.add(), element, kind.items)
            else:
                target.append(element)
    elif kind.kind in ("record", "timestamp"):
        _into(getattr(message, name), item, kind)
    else:
        setattr(message, name, item)


def _into(message: Any, item: Any, kind: FieldType) -> None:
    if kind.kind == "timestamp":
        message.FromDatetime(datetime.fromisoformat(item))
    else:
        _fill(message, item, list(kind.fields))


class _Registry:
    """The one writer schema, by id (what the registry client answers)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def protobuf_schema(self, schema_id: int) -> str:
        return self.text


def _encode(name: str, schema: EventSchema, events: int, seed: int) -> tuple[Records, Records, str]:
    proto = _file(schema)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(
        descriptor_pb2.FileDescriptorProto.FromString(
            timestamp_pb2.DESCRIPTOR.serialized_pb
        ).SerializeToString()
    )
    pool.Add(proto)
    event_class = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.Event"))
    samples = SampleEvents(name, schema, seed=seed, source="bench-producer")
    frame = b"\x00" + SCHEMA_ID.to_bytes(4, "big") + b"\x00"  # magic, id, message index [0]
    as_json: Records = []
    as_protobuf: Records = []
    for index in range(events):
        event = samples.envelope(index)
        message = event_class()
        _fill(message, event["payload"], list(schema.fields))
        headers = [
            (key, str(event[key]).encode()) for key in ("event_id", "event_name", "created_at", "source")
        ]
        headers.append(("schema_version", str(event["schema_version"]).encode()))
        timestamp = 1_764_230_400_000 + index
        as_json.append(json_record(index, event))
        as_protobuf.append(
            RecordValues("bench", 0, index, timestamp, None, frame + message.SerializeToString(), headers)
        )
    return as_json, as_protobuf, base64.b64encode(proto.SerializeToString()).decode()


def measure_protobuf_decoding(events: int, seed: int = 7, rounds: int = 3) -> DecodeRates:
    """Decode the same ``events`` of :data:`PROTOBUF_SCHEMA` both ways, alternating ``rounds``
    times; the best round of each counts (other work only ever slows a round down)."""
    schema_path = Path(__file__).resolve().parents[1] / "schemas" / f"{PROTOBUF_SCHEMA}.avsc"
    schema = load_avro_schema(schema_path)
    as_json, as_protobuf, text = _encode(PROTOBUF_SCHEMA, schema, events, seed)
    json_decoder = BatchDecoder(schema)
    protobuf_decoder = ProtobufRegistryDecoder(schema, f"{PACKAGE}.Event", _Registry(text))
    json_best = protobuf_best = 0.0
    with worker_heap():
        for _ in range(rounds):
            json_best = max(json_best, rate(json_decoder, as_json))
            protobuf_best = max(protobuf_best, rate(protobuf_decoder, as_protobuf))
    return DecodeRates(events, json_best, protobuf_best, "Protobuf", target=None)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.protobuf_decode", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(measure_protobuf_decoding(args.events, args.seed).describe())


if __name__ == "__main__":
    main()
