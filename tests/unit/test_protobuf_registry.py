"""Confluent wire-format Protobuf values (``format: protobuf-registry``): values serialized by
confluent-kafka's ProtobufSerializer (as a real producer does) and framed by hand, mapped by
field name to the spec's schema."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry._sync.mock_schema_registry_client import MockSchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loader.config.spec import load_spec
from loader.encode import decoder_for
from loader.encode.avro_registry import wire_value
from loader.encode.protobuf_registry import ProtobufRegistryDecoder, message_indexes
from loader.errors import RegistryError, SpecError
from loader.schema.avro import parse_avro_schema
from loader.schema.registry_client import WriterSchemaError
from tests.protobuf_orders import (
    FIELD,
    MESSAGE,
    ORDER_PROTO,
    PLACED,
    READER,
    make_order,
    order_classes,
    order_file,
)
from tests.unit.fakes import FakeRecord

pytestmark = pytest.mark.unit

TOPIC = "orders"
CREATED = "2026-11-27T08:00:00Z"
HEADERS = (("event_id", b"e-1"), ("created_at", CREATED.encode()), ("source", b"svc"))


class Registry:
    """confluent-kafka's in-memory registry: the serializer registers, the decoder looks up by id."""

    def __init__(self) -> None:
        self.client = MockSchemaRegistryClient({"url": "mock://registry"})
        self.down = False

    def serialize(self, message: Any) -> bytes:
        serializer = ProtobufSerializer(type(message), self.client, {"use.deprecated.format": False})
        data = serializer(message, SerializationContext(TOPIC, MessageField.VALUE))
        assert data is not None
        return bytes(data)

    def register(self, text: str) -> int:
        return self.client.register_schema(f"{TOPIC}-{len(text)}", Schema(text, "PROTOBUF"))

    def protobuf_schema(self, schema_id: int) -> str:
        if self.down:
            raise RegistryError("cannot reach the schema registry", transient=True)
        try:
            return str(self.client.get_schema(schema_id).schema_str)
        except Exception:  # the mock's own "not found" error
            raise WriterSchemaError(schema_id, "the schema registry has no such schema") from None


def _decoder(registry: Registry) -> ProtobufRegistryDecoder:
    return ProtobufRegistryDecoder(parse_avro_schema(READER), MESSAGE, registry)


def _records(values: Sequence[bytes | None], headers: Any = HEADERS) -> list[FakeRecord]:
    return [FakeRecord(TOPIC, 0, 10 + i, 1_764_230_400_000, None, v, headers) for i, v in enumerate(values)]


def test_serializer_values_of_two_writer_versions_become_the_specs_rows() -> None:
    """v1 and v2 values from ProtobufSerializer, mixed in one batch: fields land by name with the
    type table's conversions, unset presence fields are null, writer-only fields go to _EXTRA."""
    registry = Registry()
    _, v1 = order_classes(order_file())
    _, v2 = order_classes(order_file(version=2))
    values = [
        registry.serialize(make_order(v1, 1, coupon="SPRING", rating={"value": 4.5})),
        registry.serialize(make_order(v2, 2, channel="app", big=7)),
    ]
    assert values[0][1:5] != values[1][1:5]  # two writer schema ids
    decoded = _decoder(registry).decode(_records(values))
    assert decoded.rejected == []
    rows = decoded.table.to_pylist()
    assert [r["ORDER_ID"] for r in rows] == ["o-1", "o-2"]
    assert [r["AMOUNT_CENTS"] for r in rows] == [100, 200]
    assert [r["COUPON"] for r in rows] == ["SPRING", None]
    assert [r["STATUS"] for r in rows] == ["PAID", "PAID"]
    assert [r["PLACED_AT"] for r in rows] == [PLACED, PLACED]
    assert rows[0]["ADDRESS"] == {"city": "Lyon", "lat": 45.75}
    assert rows[0]["TAGS"] == ["a", "b"]
    assert [r["RATING"] for r in rows] == [4.5, None]
    assert [r["BIG"] for r in rows] == [0, 7]  # proto3 scalar without presence: its zero value
    assert [json.loads(r["_EXTRA"]) for r in rows] == [
        {"internal": "x"},
        {"internal": "x", "channel": "app"},
    ]
    assert decoded.unknown_fields == {"internal": 2, "channel": 1}
    assert rows[0]["_EVENT_ID"] == "e-1" and rows[0]["_SOURCE"] == "svc"
    assert [r["_OFFSET"] for r in rows] == [10, 11]


def test_hand_framed_values_follow_the_published_wire_format() -> None:
    """Magic 0, the id, zigzag varint indexes ([1] as 02 02; the first message as a single 0),
    then SerializeToString: the second message decodes, the first is another type (dead letter)."""
    registry = Registry()
    proto = order_file()
    other, order = order_classes(proto)
    schema_id = registry.register(base64.b64encode(proto.SerializeToString()).decode())
    body = make_order(order, 3).SerializeToString()
    values = [
        wire_value(schema_id, b"\x02\x02" + body),
        wire_value(schema_id, b"\x00" + other(x="y").SerializeToString()),
    ]
    assert message_indexes(values[0]) == ((1,), 7)
    assert message_indexes(values[1]) == ((0,), 6)
    decoded = _decoder(registry).decode(_records(values))
    assert decoded.table.column("ORDER_ID").to_pylist() == ["o-3"]
    assert [r.reason for r in decoded.rejected] == [
        f"schema id {schema_id}: the value is a com.acme.Other, the spec takes {MESSAGE}"
    ]


def test_bad_values_are_dead_letters_with_their_reason() -> None:
    """Bad bytes, an index naming no message, an unknown id, a bad magic byte, a tombstone and
    a uint64 above the long range are dead letters each with its reason; the good record lands."""
    registry = Registry()
    proto = order_file()
    _, order = order_classes(proto)
    schema_id = registry.register(base64.b64encode(proto.SerializeToString()).decode())
    good = make_order(order, 1).SerializeToString()
    values = [
        wire_value(schema_id, b"\x02\x02" + good),
        wire_value(schema_id, b"\x02\x02" + b"\x0a\xff"),  # a string field longer than the value
        wire_value(schema_id, b"\x02\x0a" + good),  # index 5: no such message
        wire_value(schema_id, b"\x02"),  # the index count, then nothing
        wire_value(99_999, b"\x00" + good),
        b"\x01" + wire_value(schema_id, b"\x00")[1:],
        None,
        wire_value(schema_id, b"\x02\x02" + make_order(order, 2, big=2**63).SerializeToString()),
    ]
    decoded = _decoder(registry).decode(_records(values))
    assert decoded.table.column("_OFFSET").to_pylist() == [10]
    reasons = {r.record.offset: r.reason for r in decoded.rejected}
    assert sorted(reasons) == list(range(11, 18))
    assert reasons[11].startswith(f"schema id {schema_id}: not a valid Protobuf {MESSAGE}")
    assert reasons[12] == f"schema id {schema_id}: message indexes [5] name no message of the writer schema"
    assert reasons[13].startswith(f"schema id {schema_id}: bad message indexes")
    assert reasons[14] == "schema id 99999: the schema registry has no such schema"
    assert "magic byte is 0x01" in reasons[15]
    assert reasons[16].startswith("tombstone")
    assert reasons[17].startswith("field 'big' does not fit the spec's column type")


def test_a_writer_type_that_does_not_map_makes_its_records_dead_letters() -> None:
    """A writer whose field type does not map to the spec's (string amount for a long), or that
    lacks a required spec field: every record of that id is a dead letter naming the field."""
    registry = Registry()
    _, order = order_classes(order_file(amount_type=FIELD.TYPE_STRING))
    value = registry.serialize(order(order_id="o-1", amount_cents="12"))
    text_id = registry.register('syntax = "proto3";\npackage com.acme;\nmessage OrderCreated {}\n')
    decoded = _decoder(registry).decode(_records([value, wire_value(text_id, b"\x00")]))
    assert decoded.table.num_rows == 0
    first, second = (r.reason for r in decoded.rejected)
    assert "field 'amount_cents' is a string, which does not map to the spec's long" in first
    assert second.endswith(
        f"{MESSAGE} does not map to the spec's schema: it has no field 'order_id', which the spec requires"
    )


def test_a_schema_registered_as_proto_text_is_compiled_by_protoc() -> None:
    """A writer schema the registry holds as .proto text (importing a well-known type) is
    compiled by protoc: its values decode like the descriptor's; text protoc refuses is a
    dead letter quoting protoc's message."""
    registry = Registry()
    _, order = order_classes(order_file())
    text_id = registry.register(ORDER_PROTO)
    bad_id = registry.register('syntax = "proto3";\nmessage OrderCreated { strin order_id = 1; }\n')
    body = make_order(order, 4, coupon="C").SerializeToString()  # fields 1-7 match the text's
    values = [wire_value(text_id, b"\x00" + body), wire_value(bad_id, b"\x00" + body)]
    decoded = _decoder(registry).decode(_records(values))
    rows = decoded.table.to_pylist()
    assert [(r["ORDER_ID"], r["COUPON"], r["STATUS"], r["PLACED_AT"]) for r in rows] == [
        ("o-4", "C", "PAID", PLACED)
    ]
    assert rows[0]["ADDRESS"] == {"city": "Lyon", "lat": 45.75}
    assert [r.reason for r in decoded.rejected] == [
        f'schema id {bad_id}: protoc refused the .proto text: schema.proto:2:24: "strin" is not defined.'
    ]


def test_registry_outage_raises_transient_and_nothing_is_decided() -> None:
    """While the registry is down the decode raises the transient error (the batch is retried);
    once it is back, the same records become rows."""
    registry = Registry()
    _, order = order_classes(order_file())
    value = registry.serialize(make_order(order, 1))
    decoder = _decoder(registry)
    registry.down = True
    with pytest.raises(RegistryError) as caught:
        decoder.decode(_records([value]))
    assert caught.value.transient
    registry.down = False
    assert decoder.decode(_records([value])).table.num_rows == 1


def test_the_envelope_comes_from_headers_else_from_the_messages_fields() -> None:
    """Without headers, event_id and created_at come from the message's fields of those names
    (not in _EXTRA); an empty event_id (proto3's unset string) or none at all is a dead letter."""
    registry = Registry()
    _, order = order_classes(order_file(envelope=True))
    _, plain = order_classes(order_file())
    carrying = make_order(order, 1, event_id="m-1")
    carrying.created_at.FromDatetime(PLACED)
    empty = make_order(order, 2)
    empty.created_at.FromDatetime(PLACED)
    values = [registry.serialize(m) for m in (carrying, empty, make_order(plain, 3))]
    decoded = _decoder(registry).decode(_records(values, headers=()))
    rows = decoded.table.to_pylist()
    assert [(r["_EVENT_ID"], r["_CREATED_AT"]) for r in rows] == [("m-1", PLACED)]
    assert json.loads(rows[0]["_EXTRA"]) == {"internal": "x"}
    missing = "missing required envelope field 'event_id' (a Kafka header, or a field of the message)"
    assert [r.reason for r in decoded.rejected] == [missing, missing]


def test_decoder_for_selects_protobuf_and_the_spec_needs_a_message(tmp_path: Path) -> None:
    """format protobuf-registry with schema.message selects the Protobuf decoder; without a
    message type the spec is refused, and a message type on another format too."""
    (tmp_path / "o.avsc").write_text(json.dumps(READER))
    spec_file = tmp_path / "o.yaml"
    base = {
        "name": "orders",
        "kafka": {"topic": TOPIC},
        "s3": {"bucket": "bucket-b", "prefix": "orders"},
        "snowflake": {"database": "D", "schema": "S", "table": "T"},
    }
    schema = {"path": "o.avsc", "format": "protobuf-registry", "message": MESSAGE}
    spec_file.write_text(json.dumps({**base, "schema": schema}))
    assert isinstance(decoder_for(load_spec(spec_file), Registry()), ProtobufRegistryDecoder)
    for wrong in ({**schema, "message": None}, {**schema, "format": "avro-registry"}):
        spec_file.write_text(json.dumps({**base, "schema": wrong}))
        with pytest.raises(SpecError, match=r"schema\.message|message"):
            load_spec(spec_file)


def test_well_known_imports_resolve_in_a_process_that_never_imported_them() -> None:
    """A writer schema importing google/protobuf/timestamp.proto (and api.proto, which imports
    two more) is usable in a fresh process, as a worker is, where protobuf's default pool does
    not hold those files yet."""
    proto = descriptor_pb2.FileDescriptorProto(name="a.proto", package="p", syntax="proto3")
    proto.dependency.extend(["google/protobuf/timestamp.proto", "google/protobuf/api.proto"])
    script = (
        "import sys\n"
        "from loader.encode.protobuf_registry import _descriptors\n"
        "assert 'google.protobuf.timestamp_pb2' not in sys.modules\n"
        f"found = _descriptors(1, {base64.b64encode(proto.SerializeToString()).decode()!r})\n"
        "print(found if isinstance(found, str) else found.name)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "a.proto"), done.stderr


def test_a_writer_only_field_that_has_no_json_is_a_dead_letter() -> None:
    """A writer-only google.protobuf.Any holding a type the writer schema does not declare has
    no JSON form for _EXTRA: that record is a dead letter saying so, the next one a row."""
    registry = Registry()
    proto = order_file()
    proto.dependency.append("google/protobuf/any.proto")
    field = proto.message_type[1].field.add(name="blob", number=20, type=FIELD.TYPE_MESSAGE)
    field.type_name = ".google.protobuf.Any"
    _, order = order_classes(proto)
    opaque = make_order(order, 1)
    opaque.blob.type_url, opaque.blob.value = "type.googleapis.com/x.Unknown", b"\x01"
    values = [registry.serialize(opaque), registry.serialize(make_order(order, 2))]
    decoded = _decoder(registry).decode(_records(values))
    assert decoded.table.column("ORDER_ID").to_pylist() == ["o-2"]
    [rejected] = decoded.rejected
    assert "cannot be kept in _EXTRA as JSON: Can not find message descriptor" in rejected.reason


_SHARED = Registry()  # shared by the examples: one writer schema, registered once
_SHARED_ID = _SHARED.register(base64.b64encode(order_file().SerializeToString()).decode())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=60), min_size=1, max_size=6), st.data())
def test_any_bytes_get_one_verdict_alone_or_batched(bodies: list[bytes], data: st.DataObject) -> None:
    """Arbitrary bytes after the header (and arbitrary indexes) never raise: each record is a row
    or a dead letter, with the same verdict and reason alone as in a batch."""
    registry = _SHARED
    framed = [
        wire_value(
            _SHARED_ID, data.draw(st.sampled_from([b"\x00", b"\x02\x02", b"\x02", b"\x04\x02\x00"])) + body
        )
        for body in bodies
    ]
    decoder = _decoder(registry)
    together = decoder.decode(_records(framed))
    alone = [decoder.decode(_records([value])) for value in framed]
    batch_reasons = {r.record.value: r.reason for r in together.rejected}
    assert together.table.num_rows + len(together.rejected) == len(framed)
    for value, single in zip(framed, alone, strict=True):
        assert single.table.num_rows + len(single.rejected) == 1
        if single.rejected:
            assert batch_reasons[value] == single.rejected[0].reason


def test_a_batch_read_a_column_at_a_time_gives_the_rows_reading_each_record_gives() -> None:
    """A writer without fields beyond the spec's is read a column at a time; its rows equal those
    the record-by-record reading gives the same values (forced by a second writer id in the batch)."""
    registry = Registry()
    proto = order_file()
    order_message = next(m for m in proto.message_type if m.name == "OrderCreated")
    fields = [f for f in order_message.field if f.name != "internal"]
    del order_message.field[:]
    order_message.field.extend(fields)
    twin = descriptor_pb2.FileDescriptorProto()
    twin.CopyFrom(proto)
    twin.name = "acme/orders_twin.proto"
    ids = [registry.register(base64.b64encode(p.SerializeToString()).decode()) for p in (proto, twin)]
    assert ids[0] != ids[1]
    _, order = order_classes(proto)
    bodies = []
    for index in range(6):
        message = order(order_id=f"o-{index}", amount_cents=index, status=index % 2, tags=["t"] * index)
        message.placed_at.FromDatetime(PLACED)
        if index % 2:
            message.coupon = f"C{index}"
            message.rating.value = index / 2
            message.address.city = "Lyon"
        bodies.append(b"\x02\x02" + message.SerializeToString())
    one_writer = _records([wire_value(ids[0], body) for body in bodies])
    column_wise = _decoder(registry).decode(one_writer)
    each = _decoder(registry).decode([*one_writer, *_records([wire_value(ids[1], bodies[0])])])
    assert column_wise.rejected == each.rejected == []
    rows = column_wise.table.to_pylist()
    assert rows == each.table.to_pylist()[:6]
    assert [r["COUPON"] for r in rows] == [None, "C1", None, "C3", None, "C5"]
    assert [r["RATING"] for r in rows] == [None, 0.5, None, 1.5, None, 2.5]
    assert [r["ADDRESS"] for r in rows][:2] == [None, {"city": "Lyon", "lat": 0.0}]
    assert [r["STATUS"] for r in rows][:2] == ["NEW", "PAID"]
    assert [len(r["TAGS"]) for r in rows] == list(range(6))
    assert {r["_EXTRA"] for r in rows} == {None} and rows[0]["_EVENT_ID"] == "e-1"
