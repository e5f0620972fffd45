"""The loader's registry client against a real Confluent-compatible registry (Apicurio, started by
the session's dev stack): schemas registered the way producers do, with confluent-kafka's
SchemaRegistryClient and serializers, then read back by the id in each value's wire format."""

from __future__ import annotations

import base64
import io
import json
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fastavro
import pytest
import urllib3
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from loader.devstack import DevStack
from loader.devstack import registry as registry_service
from loader.devstack.process import stop
from loader.errors import RegistryError
from loader.schema.registry import register_schema
from loader.schema.registry_client import RegistryClient, WriterSchemaError
from tests.integration.helpers import make_spec

pytestmark = pytest.mark.integration

# Fields deliberately not in alphabetical order: their order is the binary layout.
ORDER_V1: dict[str, Any] = {
    "type": "record",
    "name": "OrderPlaced",
    "namespace": "com.acme.orders",
    "fields": [
        {"name": "order_id", "type": "string"},
        {"name": "amount_cents", "type": "long"},
        {"name": "currency", "type": "string"},
    ],
}
ORDER_V2: dict[str, Any] = {
    **ORDER_V1,
    "fields": [*ORDER_V1["fields"], {"name": "coupon", "type": ["null", "string"], "default": None}],
}
CART_PROTO = """syntax = "proto3";
package com.acme.carts;

message CartUpdated {
  string cart_id = 1;
  int32 items = 2;
}
"""


@pytest.fixture
def producer_registry(dev_stack: DevStack) -> Iterator[SchemaRegistryClient]:
    """confluent-kafka's registry client, as a producer would configure it."""
    url = dev_stack.settings.schema_registry.url
    assert url, "the session's dev stack has no schema registry"
    with SchemaRegistryClient({"url": url}) as producer_client:
        yield producer_client


@pytest.fixture
def client(dev_stack: DevStack) -> Iterator[RegistryClient]:
    """The loader's client for the session's registry, from the stack's settings."""
    with RegistryClient.from_settings(dev_stack.settings.schema_registry) as loader_client:
        yield loader_client


def _schema_id(value: bytes) -> int:
    """The schema id of a value in Confluent's wire format (magic byte 0, 4-byte big-endian id)."""
    assert value[0] == 0, f"no magic byte: {value[:5]!r}"
    schema_id: int = struct.unpack(">I", value[1:5])[0]
    return schema_id


def _cart_message_class() -> Any:
    """A generated-like Protobuf class for CartUpdated, built from its descriptor."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="acme/carts.proto", package="com.acme.carts", syntax="proto3"
    )
    message = proto.message_type.add(name="CartUpdated")
    optional = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    message.field.add(
        name="cart_id", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING, label=optional
    )
    message.field.add(
        name="items", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT32, label=optional
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("com.acme.carts.CartUpdated"))


def test_avro_writer_versions_by_id_decode_what_the_producer_wrote(
    producer_registry: SchemaRegistryClient, client: RegistryClient, unique_name: Callable[..., str]
) -> None:
    """v1 and v2 (an optional field added) serialized by confluent-kafka: each value's id gives
    back its own writer schema, fields in order, and decoding with it yields the record sent."""
    topic = unique_name("orders")
    subject = f"{topic}-value"
    producer_registry.set_compatibility(subject_name=subject, level="BACKWARD")  # Apicurio's default: NONE
    context = SerializationContext(topic, MessageField.VALUE)
    sent = {
        "v1": {"order_id": "o-1", "amount_cents": 1250, "currency": "EUR"},
        "v2": {"order_id": "o-2", "amount_cents": 990, "currency": "USD", "coupon": "SPRING"},
    }
    values = {
        "v1": AvroSerializer(producer_registry, json.dumps(ORDER_V1))(sent["v1"], context),
        "v2": AvroSerializer(producer_registry, json.dumps(ORDER_V2))(sent["v2"], context),
    }
    assert values["v1"] is not None and values["v2"] is not None
    ids = {version: _schema_id(value) for version, value in values.items()}
    assert ids["v1"] != ids["v2"]
    assert producer_registry.get_latest_version(subject).version == 2
    for version, value in values.items():
        writer = json.loads(client.writer_schema(ids[version]))
        assert [f["name"] for f in writer["fields"]] == [
            f["name"] for f in (ORDER_V1 if version == "v1" else ORDER_V2)["fields"]
        ]
        decoded = fastavro.schemaless_reader(io.BytesIO(value[5:]), fastavro.parse_schema(writer), None)
        assert decoded == sent[version]


def test_protobuf_schemas_by_id_keep_their_type_and_text(
    producer_registry: SchemaRegistryClient, client: RegistryClient, unique_name: Callable[..., str]
) -> None:
    """A Protobuf schema registered by confluent-kafka's serializer (a serialized descriptor) or as
    .proto text comes back by id as PROTOBUF with that text; the Avro lookup refuses it per record."""
    topic = unique_name("carts")
    cart = _cart_message_class()
    serializer = ProtobufSerializer(cart, producer_registry, {"use.deprecated.format": False})
    value = serializer(cart(cart_id="c-1", items=3), SerializationContext(topic, MessageField.VALUE))
    assert value is not None
    by_serializer = client.schema(_schema_id(value))
    assert by_serializer.schema_type == "PROTOBUF"
    descriptor = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(by_serializer.text))
    assert [m.name for m in descriptor.message_type] == ["CartUpdated"]

    text_id = producer_registry.register_schema(
        f"{unique_name('carts-text')}-value", Schema(CART_PROTO, "PROTOBUF")
    )
    by_text = client.schema(text_id)
    assert (by_text.schema_type, by_text.text) == ("PROTOBUF", CART_PROTO)
    with pytest.raises(WriterSchemaError, match="PROTOBUF schema, not Avro") as caught:
        client.writer_schema(text_id)
    assert caught.value.schema_id == text_id


def test_loader_registration_is_what_the_lookup_returns(
    client: RegistryClient, dev_stack: DevStack, unique_name: Callable[..., str]
) -> None:
    """`loader schemas register`'s code registers the spec's schema as is: the lookup by the id it
    returns gives that schema back, and registering again keeps the id."""
    spec = make_spec(unique_name("reg", sep="_"), bucket="unused")
    assert spec.schema_path is not None
    first = register_schema(spec, client)
    assert register_schema(spec, client) == first
    assert first.subject == f"{spec.kafka.topic}-value"
    assert json.loads(client.writer_schema(first.schema_id)) == json.loads(spec.schema_path.read_text())


def test_a_cached_id_costs_no_second_request(
    producer_registry: SchemaRegistryClient,
    client: RegistryClient,
    unique_name: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second lookup of an id is answered from the cache: one HTTP request in all."""
    schema_id = producer_registry.register_schema(
        f"{unique_name('cached')}-value", Schema(json.dumps(ORDER_V1), "AVRO")
    )
    paths: list[str] = []
    send = urllib3.PoolManager.request

    def counting(pool: urllib3.PoolManager, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        paths.append(url)
        return send(pool, method, url, *args, **kwargs)

    monkeypatch.setattr(urllib3.PoolManager, "request", counting)
    first = client.writer_schema(schema_id)
    assert client.writer_schema(schema_id) == first
    assert paths == [f"{client.url}/schemas/ids/{schema_id}"]


def test_unknown_id_is_the_records_problem(client: RegistryClient) -> None:
    """An id the registry never gave out is a WriterSchemaError naming it: terminal, for the record only."""
    with pytest.raises(WriterSchemaError) as caught:
        client.writer_schema(2_000_000_000)
    assert caught.value.schema_id == 2_000_000_000
    assert "no such schema" in caught.value.reason
    assert not caught.value.transient


def test_registry_outage_is_transient_and_cached_ids_still_resolve(tmp_path: Path) -> None:
    """With the registry stopped, a cached id still resolves and an uncached one is a transient
    RegistryError (retried by the caller), never a per-record WriterSchemaError."""
    service = registry_service.start(tmp_path / "registry", timeout_s=120)
    try:
        with RegistryClient(registry_service.endpoint(service.port), timeout_s=5) as loader_client:
            schema_id = loader_client.register("outage-value", "AVRO", json.dumps(ORDER_V1))
            text = loader_client.writer_schema(schema_id)
            stop(service, sig=registry_service.STOP_SIGNAL)
            assert loader_client.writer_schema(schema_id) == text
            with pytest.raises(RegistryError) as caught:
                loader_client.writer_schema(schema_id + 1)
    finally:
        stop(service, sig=registry_service.STOP_SIGNAL)
    assert caught.value.transient
    assert not isinstance(caught.value, WriterSchemaError)
