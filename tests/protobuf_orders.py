"""OrderCreated in Protobuf, built from descriptors as protoc would generate it: the writer
side of the protobuf-registry tests (unit and integration), and the spec's Avro schema."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    timestamp_pb2,
    wrappers_pb2,
)

MESSAGE = "com.acme.OrderCreated"
PLACED = datetime(2026, 11, 27, 8, 0, 1, 250_000, tzinfo=UTC)

ORDER_PROTO = """syntax = "proto3";
package com.acme;
import "google/protobuf/timestamp.proto";

message OrderCreated {
  message Address { string city = 1; double lat = 2; }
  enum Status { NEW = 0; PAID = 1; }
  string order_id = 1;
  int64 amount_cents = 2;
  optional string coupon = 3;
  Status status = 4;
  google.protobuf.Timestamp placed_at = 5;
  Address address = 6;
  repeated string tags = 7;
}
"""
"""OrderCreated as .proto text: fields 1-7 as :func:`order_file` declares them."""

READER: dict[str, Any] = {
    "type": "record",
    "name": "OrderCreated",
    "version": 1,
    "fields": [
        {"name": "order_id", "type": "string"},
        {"name": "amount_cents", "type": "long"},
        {"name": "coupon", "type": ["null", "string"], "default": None},
        {"name": "status", "type": "string"},
        {"name": "placed_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {
            "name": "address",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "Address",
                    "fields": [{"name": "city", "type": "string"}, {"name": "lat", "type": "double"}],
                },
            ],
            "default": None,
        },
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "rating", "type": ["null", "double"], "default": None},
        {"name": "big", "type": ["null", "long"], "default": None},
    ],
}

FIELD = descriptor_pb2.FieldDescriptorProto


def order_file(
    *, version: int = 1, amount_type: int = FIELD.TYPE_INT64, envelope: bool = False
) -> descriptor_pb2.FileDescriptorProto:
    """acme/orders.proto: Other (index 0), then OrderCreated (index 1) with a nested Address;
    version 2 adds an optional ``channel`` the spec does not know; ``envelope`` adds an
    ``event_id`` (no presence) and a ``created_at`` Timestamp."""
    proto = descriptor_pb2.FileDescriptorProto(name="acme/orders.proto", package="com.acme", syntax="proto3")
    proto.dependency.extend(["google/protobuf/timestamp.proto", "google/protobuf/wrappers.proto"])
    proto.message_type.add(name="Other").field.add(name="x", number=1, type=FIELD.TYPE_STRING)
    order = proto.message_type.add(name="OrderCreated")
    address = order.nested_type.add(name="Address")
    address.field.add(name="city", number=1, type=FIELD.TYPE_STRING)
    address.field.add(name="lat", number=2, type=FIELD.TYPE_DOUBLE)
    status = order.enum_type.add(name="Status")
    status.value.add(name="NEW", number=0)
    status.value.add(name="PAID", number=1)
    order.oneof_decl.add(name="_coupon")
    fields: list[dict[str, Any]] = [
        {"name": "order_id", "type": FIELD.TYPE_STRING},
        {"name": "amount_cents", "type": amount_type},
        {"name": "coupon", "type": FIELD.TYPE_STRING, "proto3_optional": True, "oneof_index": 0},
        {"name": "status", "type": FIELD.TYPE_ENUM, "type_name": ".com.acme.OrderCreated.Status"},
        {"name": "placed_at", "type": FIELD.TYPE_MESSAGE, "type_name": ".google.protobuf.Timestamp"},
        {"name": "address", "type": FIELD.TYPE_MESSAGE, "type_name": ".com.acme.OrderCreated.Address"},
        {"name": "tags", "type": FIELD.TYPE_STRING, "label": FIELD.LABEL_REPEATED},
        {"name": "rating", "type": FIELD.TYPE_MESSAGE, "type_name": ".google.protobuf.DoubleValue"},
        {"name": "big", "type": FIELD.TYPE_UINT64},
        {"name": "internal", "type": FIELD.TYPE_STRING},
    ]
    if version == 2:
        order.oneof_decl.add(name="_channel")
        fields.append(
            {"name": "channel", "type": FIELD.TYPE_STRING, "proto3_optional": True, "oneof_index": 1}
        )
    if envelope:
        fields.append({"name": "event_id", "type": FIELD.TYPE_STRING})
        fields.append(
            {"name": "created_at", "type": FIELD.TYPE_MESSAGE, "type_name": ".google.protobuf.Timestamp"}
        )
    for number, spec in enumerate(fields, start=1):
        order.field.add(number=number, label=spec.pop("label", FIELD.LABEL_OPTIONAL), **spec)
    return proto


def order_classes(proto: descriptor_pb2.FileDescriptorProto) -> tuple[Any, Any]:
    """Generated-like classes (Other, OrderCreated) for ``proto``, each file in its own pool."""
    pool = descriptor_pool.DescriptorPool()
    for well_known in (any_pb2, timestamp_pb2, wrappers_pb2):
        dependency = descriptor_pb2.FileDescriptorProto()
        well_known.DESCRIPTOR.CopyToProto(dependency)
        pool.Add(dependency)
    pool.Add(proto)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("com.acme.Other")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName(MESSAGE)),
    )


def make_order(cls: Any, index: int, **more: Any) -> Any:
    message = cls(
        order_id=f"o-{index}",
        amount_cents=100 * index,
        status=1,
        address=cls.Address(city="Lyon", lat=45.75),
        tags=["a", "b"],
        internal="x",
        **more,
    )
    message.placed_at.FromDatetime(PLACED)
    return message
