"""Registering schemas with a Confluent-compatible schema registry, at deploy time only.

Schemas are never registered at run time (that floods the registry and turns
an incompatible change into a run-time failure): CI checks compatibility,
and deployment calls this once per schema. Subjects follow the registry's
TopicNameStrategy, ``<topic>-value``. The HTTP side (auth, TLS, errors) is
:class:`~loader.schema.registry_client.RegistryClient`'s; the password never
appears in a message.
"""

from __future__ import annotations

from dataclasses import dataclass

from loader.config.spec import EventSpec
from loader.errors import ConfigError
from loader.schema.registry_client import RegistryClient

__all__ = ["Registration", "register_schema"]


@dataclass(frozen=True)
class Registration:
    """A schema registered under its subject."""

    subject: str
    schema_id: int


def register_schema(spec: EventSpec, client: RegistryClient) -> Registration:
    """Register the event's Avro schema under ``<topic>-value``; the registry returns its id."""
    if spec.schema_path is None:
        raise ConfigError(f"{spec.name} is a raw event type: it has no schema to register")
    subject = f"{spec.kafka.topic}-value"
    schema_id = client.register(subject, "AVRO", spec.schema_path.read_text())
    return Registration(subject=subject, schema_id=schema_id)
