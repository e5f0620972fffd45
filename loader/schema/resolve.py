"""The schema an event spec implies: its Avro file, or the fixed raw-event shape."""

from __future__ import annotations

from loader.config.spec import EventSpec
from loader.schema.avro import load_avro_schema
from loader.schema.model import EventSchema, raw_schema

__all__ = ["schema_for"]


def schema_for(spec: EventSpec) -> EventSchema:
    """The event's schema (raises ConfigError when its file is invalid)."""
    if spec.schema_ref.mode == "raw" or spec.schema_path is None:
        return raw_schema(spec.name)
    return load_avro_schema(spec.schema_path)
