"""Registering schemas with a Confluent-compatible schema registry, at deploy time only.

Schemas are never registered at run time (that floods the registry and turns
an incompatible change into a run-time failure): CI checks compatibility,
and deployment calls this once per schema. Subjects follow the registry's
TopicNameStrategy, ``<topic>-value``. The password comes from the
environment and never appears in a message.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import quote

from loader.config.spec import EventSpec
from loader.errors import ConfigError, RegistryError, excerpt

__all__ = ["Registration", "register_schema"]

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


@dataclass(frozen=True)
class Registration:
    """A schema registered under its subject."""

    subject: str
    schema_id: int


def register_schema(
    spec: EventSpec,
    url: str,
    *,
    username: str | None = None,
    password: str | None = None,
    timeout_s: float = 30.0,
) -> Registration:
    """Register the event's Avro schema under ``<topic>-value``; the registry returns its id."""
    if spec.schema_path is None:
        raise ConfigError(f"{spec.name} is a raw event type: it has no schema to register")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"schema registry URL must start with http:// or https:// (got {excerpt(url)})")
    subject = f"{spec.kafka.topic}-value"
    body = json.dumps({"schemaType": "AVRO", "schema": spec.schema_path.read_text()}).encode()
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        f"{url.rstrip('/')}/subjects/{quote(subject, safe='')}/versions",
        data=body,
        method="POST",
        headers={"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE},
    )
    if username:
        token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        if exc.code == 409:
            raise RegistryError(
                f"{subject}: the registry refused the schema as incompatible: {detail}", transient=False
            ) from None
        raise RegistryError(
            f"{subject}: the registry answered {exc.code}: {detail}", transient=exc.code >= 500
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise RegistryError(f"{subject}: cannot reach the schema registry: {exc}", transient=True) from None
    return Registration(subject=subject, schema_id=int(answer["id"]))
