"""Avro events in Confluent's wire format for process-level tests: a spec on disk whose values
are ``avro-registry``, and a producer that serializes as real producers do (confluent-kafka's
AvroSerializer against the session's real registry), writer versions v1 and v2."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import yaml
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from loader.config.settings import Settings
from loader.config.spec import EventSpec, load_spec
from loader.consume.kafka import ensure_topic
from loader.store.s3 import S3Store

__all__ = ["READER", "V1", "V2", "AvroProducer", "avro_spec_on_disk", "hand_framed"]

# The producer's record names and field order are its own: the spec's schema is the reader.
V1: dict[str, Any] = {
    "type": "record",
    "name": "Payment",
    "namespace": "com.acme.payments",
    "fields": [
        {"name": "payment_id", "type": "string"},
        {"name": "amount_cents", "type": "long"},
        {"name": "currency", "type": "string"},
        {"name": "attempts", "type": "int"},
    ],
}
V2: dict[str, Any] = {
    **V1,
    "fields": [*V1["fields"], {"name": "coupon", "type": ["null", "string"], "default": None}],
}
"""v1 plus an optional field with a default (BACKWARD compatible)."""
READER: dict[str, Any] = {
    "type": "record",
    "name": "PaymentCaptured",
    "namespace": "com.delivery.payments",
    "version": 2,
    "fields": [
        {"name": "payment_id", "type": "string"},
        {"name": "amount_cents", "type": "long"},
        {"name": "currency", "type": "string"},
        {"name": "attempts", "type": "long"},
        {"name": "coupon", "type": ["null", "string"], "default": None},
    ],
}
"""The spec's schema: v2's fields (``attempts`` promoted from int to long)."""


def avro_spec_on_disk(
    settings: Settings, specs_dir: Path, name: str, *, bucket: str, partitions: int
) -> tuple[EventSpec, S3Store]:
    """An ``avro-registry`` event type written as a spec file (worker processes read it), its
    reader schema beside it, with its topic and bucket created."""
    specs_dir.mkdir(exist_ok=True)
    (specs_dir / f"{name}.avsc").write_text(json.dumps(READER, indent=2))
    document = {
        "name": name,
        "kafka": {"topic": f"t.{name}", "partitions": partitions},
        "schema": {"path": f"{name}.avsc", "format": "avro-registry"},
        "s3": {"bucket": bucket, "prefix": f"events/{name}"},
        "rolling": {"max_age_s": 1.0},
        "snowflake": {"database": "TESTS", "schema": "EVENTS", "table": name.upper()},
    }
    (specs_dir / f"{name}.yaml").write_text(yaml.safe_dump(document))
    spec = load_spec(specs_dir / f"{name}.yaml")
    asyncio.run(ensure_topic(spec, settings.kafka))
    store = S3Store(settings.aws, spec.s3.bucket)
    store.create_bucket()
    return spec, store


def hand_framed(schema_id: int, writer: dict[str, Any], datum: dict[str, Any]) -> bytes:
    """A value serialized without confluent-kafka: the 5-byte header written by hand (magic byte
    0, the id big-endian), then fastavro's schemaless Avro body."""
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(writer), datum)
    return b"\x00" + schema_id.to_bytes(4, "big") + body.getvalue()


@dataclass
class AvroProducer:
    """Serializes payments as a producer configured with the registry would (auto-registering
    v1 and v2 under ``<topic>-value`` with BACKWARD compatibility), and their envelope headers;
    use it in a ``with`` block (it closes its registry client)."""

    registry_url: str
    topic: str
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Payload by event id, of every good event made."""
    ids: dict[str, int] = field(default_factory=dict)
    """The registry id of each writer version, as the serializer framed it."""

    def __post_init__(self) -> None:
        self.client = SchemaRegistryClient({"url": self.registry_url})
        # Apicurio's default compatibility is NONE: say what producers rely on.
        self.client.set_compatibility(subject_name=f"{self.topic}-value", level="BACKWARD")
        self._context = SerializationContext(self.topic, MessageField.VALUE)
        self._serializers = {
            version: AvroSerializer(self.client, json.dumps(schema))
            for version, schema in (("v1", V1), ("v2", V2))
        }
        self._start = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)

    def __enter__(self) -> AvroProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def payment(self, index: int, version: str) -> dict[str, Any]:
        datum: dict[str, Any] = {
            "payment_id": f"pay-{index}",
            "amount_cents": 1_000 + index,
            "currency": ("EUR", "USD", "GBP")[index % 3],
            "attempts": 1 + index % 4,
        }
        if version == "v2":
            datum["coupon"] = f"SPRING{index}" if index % 2 else None
        return datum

    def headers(self, event_id: str, index: int, version: str) -> list[tuple[str, bytes]]:
        created = (self._start + timedelta(seconds=index)).isoformat()
        return [
            ("event_id", event_id.encode()),
            ("event_name", b"payment_captured"),
            ("created_at", created.encode()),
            ("source", b"payments-service"),
            ("schema_version", version[1:].encode()),
        ]

    def message(self, index: int, version: str) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        """A good event serialized by confluent-kafka: (key, value, headers); remembered in ``sent``."""
        datum = self.payment(index, version)
        value = self._serializers[version](datum, self._context)
        assert value is not None and value[0] == 0
        self.ids[version] = int.from_bytes(value[1:5], "big")
        return self._remember(index, version, datum, value)

    def hand_framed_message(self, index: int) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        """A good v2 event serialized with fastavro and a hand-written header (:func:`hand_framed`),
        once the serializer has registered v2."""
        datum = self.payment(index, "v2")
        return self._remember(index, "v2", datum, hand_framed(self.ids["v2"], V2, datum))

    def _remember(
        self, index: int, version: str, datum: dict[str, Any], value: bytes
    ) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        event_id = str(uuid.uuid4())
        self.sent[event_id] = datum
        return f"k-{index}".encode(), value, self.headers(event_id, index, version)
