"""protobuf-registry values against the real registry (Apicurio, started by the session's dev
stack): serialized by confluent-kafka's ProtobufSerializer as a producer would, looked up by
the loader's registry client, decoded by the Protobuf decoder."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from loader.devstack import DevStack
from loader.encode.avro_registry import wire_value
from loader.encode.protobuf_registry import ProtobufRegistryDecoder
from loader.schema.avro import parse_avro_schema
from loader.schema.registry_client import RegistryClient
from tests.protobuf_orders import MESSAGE, ORDER_PROTO, PLACED, READER, make_order, order_classes, order_file
from tests.unit.fakes import FakeRecord

pytestmark = pytest.mark.integration

HEADERS = (("event_id", b"e-1"), ("created_at", b"2026-11-27T08:00:00Z"))


@pytest.fixture
def producer_registry(dev_stack: DevStack) -> Iterator[SchemaRegistryClient]:
    """confluent-kafka's registry client, as a producer would configure it."""
    url = dev_stack.settings.schema_registry.url
    assert url, "the session's dev stack has no schema registry"
    with SchemaRegistryClient({"url": url}) as producer_client:
        yield producer_client


def test_two_writer_versions_from_the_real_registry_become_the_specs_rows(
    dev_stack: DevStack, producer_registry: SchemaRegistryClient, unique_name: Callable[..., str]
) -> None:
    """v1 and v2 (an optional field added) serialized against Apicurio, and a schema registered
    as .proto text, land in one batch as the spec's rows, v2's new field in _EXTRA."""
    topic = unique_name("orders")
    # Compatibility left at Apicurio's NONE: 2.4.2's BACKWARD check reads a registered base64
    # descriptor as .proto text and answers 500 "Syntax error" to the second version.
    context = SerializationContext(topic, MessageField.VALUE)
    config = {"use.deprecated.format": False}
    _, v1 = order_classes(order_file())
    _, v2 = order_classes(order_file(version=2))
    values = [
        ProtobufSerializer(v1, producer_registry, config)(make_order(v1, 1, coupon="SPRING"), context),
        ProtobufSerializer(v2, producer_registry, config)(make_order(v2, 2, channel="app"), context),
    ]
    assert values[0] is not None and values[1] is not None
    text_id = producer_registry.register_schema(
        f"{unique_name('orders-text')}-value", Schema(ORDER_PROTO, "PROTOBUF")
    )
    values.append(wire_value(text_id, b"\x00" + make_order(v1, 3).SerializeToString()))
    values.append(wire_value(text_id, b"\x02\x02"))  # index 1: the text has one message
    records = [FakeRecord(topic, 0, i, 1_764_230_400_000, None, v, HEADERS) for i, v in enumerate(values)]
    with RegistryClient.from_settings(dev_stack.settings.schema_registry) as client:
        client.prefetch(int.from_bytes(v[1:5], "big") for v in values if v is not None)
        decoded = ProtobufRegistryDecoder(parse_avro_schema(READER), MESSAGE, client).decode(records)
    rows = decoded.table.to_pylist()
    assert [(r["ORDER_ID"], r["COUPON"], r["PLACED_AT"]) for r in rows] == [
        ("o-1", "SPRING", PLACED),
        ("o-2", None, PLACED),
        ("o-3", None, PLACED),
    ]
    assert [json.loads(r["_EXTRA"]) if r["_EXTRA"] else None for r in rows] == [
        {"internal": "x"},
        {"internal": "x", "channel": "app"},
        None,  # the text's OrderCreated declares no other field
    ]
    assert [(r.record.offset, r.reason) for r in decoded.rejected] == [
        (3, f"schema id {text_id}: message indexes [1] name no message of the writer schema")
    ]
