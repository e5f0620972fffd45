"""Realistic sample events for any schema, for the demo, tests and benchmarks.

Values follow the field's type and, where the name hints at it, look like a
delivery platform's data (ids, cities, money, platforms). Generation is
seeded, so a test can reproduce what it produced.
"""

from __future__ import annotations

import json
import random
import uuid
import zlib
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from loader.config.settings import Settings
from loader.config.spec import EventSpec
from loader.consume.errors import kafka_errors
from loader.consume.kafka import client_kwargs, make_producer
from loader.devstack.targets import DevTargets
from loader.errors import DevStackError
from loader.schema.model import EventSchema, FieldType, SchemaField
from loader.schema.resolve import schema_for

__all__ = ["SampleEvents", "produce_dev_samples", "produce_samples"]

_CITIES = ["San Francisco", "New York", "Chicago", "Austin", "Seattle", "Toronto", "Melbourne", "Denver"]
_CUISINES = ["thai", "pizza", "burgers", "sushi", "mexican", "indian", "vegan", "bakery"]
_PLATFORMS = ["ios", "android", "web"]
_SCREENS = ["home", "search", "store", "cart", "checkout", "order_status"]
_ELEMENTS = ["store_card", "add_to_cart", "place_order", "promo_banner", "search_box", "tip_selector"]
_WORDS = ["Golden", "Dragon", "Corner", "Fresh", "Kitchen", "Garden", "Street", "House", "Taco", "Noodle"]


class SampleEvents:
    """Generates JSON-enveloped events for one schema."""

    def __init__(self, event_name: str, schema: EventSchema, seed: int = 7, source: str = "sample-producer"):
        self.event_name = event_name
        self.schema = schema
        self.source = source
        self._rng = random.Random(seed)  # noqa: S311 - sample data, not cryptography
        self._start = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)

    def envelope(self, index: int) -> dict[str, Any]:
        """The ``index``-th event as a dict (envelope + payload)."""
        created = self._start + timedelta(milliseconds=index * 37)
        return {
            "event_id": str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
            "event_name": self.event_name,
            "created_at": created.isoformat().replace("+00:00", "Z"),
            "source": self.source,
            "schema_version": self.schema.version,
            "payload": self._payload(),
        }

    def _payload(self) -> dict[str, Any]:
        if [f.type.kind for f in self.schema.fields] == ["variant"]:
            return self._click()  # a raw event type: free-form JSON, as clients send it
        return {f.name: self._value(f) for f in self.schema.fields}

    def _click(self) -> dict[str, Any]:
        rng = self._rng
        click: dict[str, Any] = {
            "session_id": f"ses_{rng.randint(1, 90_000):06d}",
            "platform": rng.choice(_PLATFORMS),
            "screen": rng.choice(_SCREENS),
            "element": rng.choice(_ELEMENTS),
            "app_version": f"{rng.randint(4, 6)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}",
        }
        if rng.random() < 0.7:
            click["user_id"] = f"usr_{rng.randint(1, 50_000):06d}"
        if rng.random() < 0.4:
            click["context"] = {
                "store_id": f"sto_{rng.randint(1, 5_000):06d}",
                "position": rng.randint(0, 40),
            }
        return click

    def encoded(self, index: int) -> tuple[bytes, bytes]:
        """The ``index``-th event as a (key, value) pair of bytes, ready to produce."""
        event = self.envelope(index)
        payload = event["payload"]
        key_field = next((k for k in payload if k.endswith("_id") and isinstance(payload[k], str)), None)
        key = str(payload[key_field]) if key_field else event["event_id"]
        return key.encode(), json.dumps(event, separators=(",", ":")).encode()

    def _value(self, field: SchemaField) -> Any:
        if field.nullable and self._rng.random() < 0.1:
            return None
        return self._typed(field.name, field.type)

    def _typed(self, name: str, field_type: FieldType) -> Any:  # noqa: PLR0911 - one branch per kind
        rng = self._rng
        kind = field_type.kind
        if kind == "string":
            return self._string(name)
        if kind in ("int", "long"):
            return rng.randint(1, 5) if "count" in name or "quantity" in name else rng.randint(0, 1000)
        if kind in ("float", "double"):
            return round(rng.uniform(1, 5), 2) if "rating" in name else round(rng.uniform(-90, 90), 6)
        if kind == "boolean":
            return rng.random() < 0.8
        if kind == "decimal":
            scale = field_type.scale or 0
            amount = Decimal(rng.randint(100, 9000)) / Decimal(100)
            return str(amount.quantize(Decimal(1).scaleb(-scale)))
        if kind == "timestamp":
            moment = self._start + timedelta(
                minutes=rng.randint(0, 120), microseconds=rng.randint(0, 999_999)
            )
            return moment.isoformat().replace("+00:00", "Z")
        if kind == "date":
            return (date(2026, 11, 27) - timedelta(days=rng.randint(0, 3))).isoformat()
        if kind == "record":
            return {f.name: self._value(f) for f in field_type.fields}
        if kind == "array":
            assert field_type.items is not None
            return [self._typed(name, field_type.items) for _ in range(rng.randint(1, 4))]
        return {"note": "free-form", "n": rng.randint(0, 9)}

    def _string(self, name: str) -> str:
        rng = self._rng
        if name.endswith("_id"):
            return f"{name.removesuffix('_id')[:3]}_{rng.randint(1, 50_000):06d}"
        choices = {
            "city": _CITIES,
            "cuisine": _CUISINES,
            "platform": _PLATFORMS,
            "screen": _SCREENS,
            "element": _ELEMENTS,
            "currency": ["USD", "CAD", "AUD"],
            "sku": None,
        }
        for hint, options in choices.items():
            if hint in name and options:
                return rng.choice(options)
        if "version" in name:
            return f"{rng.randint(4, 6)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}"
        if "name" in name:
            return f"{rng.choice(_WORDS)} {rng.choice(_WORDS)}"
        if "sku" in name:
            return f"SKU-{rng.randint(1000, 9999)}"
        return f"{name}-{rng.randint(1, 999)}"


async def produce_samples(settings: Settings, spec: EventSpec, count: int) -> int:
    """Produce ``count`` sample events to ``spec``'s topic (seeded by the event name); return ``count``."""
    samples = SampleEvents(spec.name, schema_for(spec), seed=zlib.crc32(spec.name.encode()))
    producer = make_producer(spec, settings.kafka)
    try:
        await producer.start()
        for index in range(count):
            key, value = samples.encoded(index)
            await producer.send(spec.kafka.topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()
    return count


async def produce_dev_samples(spec: EventSpec, count: int) -> int:
    """``loader dev produce``: :func:`produce_samples` onto the running dev stack's own Kafka only,
    into a topic that exists (a missing one would make the producer wait for a minute)."""
    targets = DevTargets.running()
    if refusal := targets.kafka_refusal(spec):
        raise DevStackError(f"no sample events produced: {refusal}")
    admin = AIOKafkaAdminClient(**client_kwargs(spec, targets.settings.kafka))
    try:
        with kafka_errors(f"cannot read the topics of cluster {spec.kafka.cluster!r}"):
            await admin.start()
            exists = spec.kafka.topic in await admin.list_topics()
    finally:
        await admin.close()
    if not exists:
        raise DevStackError(
            f"topic {spec.kafka.topic} does not exist on the dev stack: `loader dev provision {spec.name}` "
            "creates it"
        )
    return await produce_samples(targets.settings, spec, count)
