"""Scaffolding of a new event type: a commented spec and an example schema that load as they are.

Adding an event type is adding one file. ``loader new-event`` writes that file
with every field explained next to its default, plus an example Avro schema,
so a team starts from something valid rather than from a copy of another
team's spec. What it writes is loaded back (with every other spec of the
folder) before the command returns; if it does not load, nothing is left
behind.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from loader.config import identifiers
from loader.config.spec import (
    DeploymentSpec,
    KafkaSpec,
    RollingSpec,
    S3Spec,
    SchemaRef,
    SnowflakeSpec,
    load_specs,
)
from loader.errors import ConfigError
from loader.schema.resolve import schema_for

__all__ = [
    "DEFAULT_BUCKET",
    "Scaffold",
    "check_event_name",
    "render_schema",
    "render_spec",
    "scaffold",
]

DEFAULT_BUCKET = "delivery-events"
"""The example specs' bucket; ``--bucket`` names another."""
_DATABASE = "ANALYTICS"
_SCHEMA = "EVENTS"
_COMMENT_COLUMN = 34


@dataclass(frozen=True)
class Scaffold:
    """The files ``new-event`` wrote."""

    name: str
    spec_path: Path
    schema_path: Path | None
    """None for a raw event type (no schema)."""


def check_event_name(name: str) -> str:
    """Return ``name`` if a spec accepts it as its event name, else raise ConfigError saying why.

    Checked before anything is written, because the name also becomes the spec's file name."""
    try:
        return identifiers.check_event_name(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _default(model: type[BaseModel], field: str) -> Any:
    return model.model_fields[field].default


def _scalar(value: object) -> str:
    """A YAML scalar that reads back as the same value (quoted only when YAML would change it)."""
    text = str(value)
    if not isinstance(value, str):
        return text
    try:
        plain = bool(value) and yaml.safe_load(text) == value
    except yaml.YAMLError:  # e.g. "*a" reads as an alias, "[" as an unclosed list
        plain = False
    return text if plain else json.dumps(value)


def render_spec(name: str, *, topic: str, partitions: int, bucket: str, schema_path: str | None) -> str:
    """The spec file's text: every field with what it means and its default, valid as it is."""
    lines: list[tuple[str, str]] = []

    def add(text: str, comment: str = "") -> None:
        lines.append((text, comment))

    def kafka(field: str) -> Any:
        return _default(KafkaSpec, field)

    def rolling(field: str) -> Any:
        return _default(RollingSpec, field)

    add(f"# Event spec of {name}: everything its pipeline needs, from Kafka topic to Snowflake table.")
    add("# Written by `loader new-event`; valid as it is. `loader plan` shows what it implies.")
    add(f"name: {name}", "lower snake case; used in S3 keys, metrics and defaults")
    add('description: ""', "what one event means, for analysts (default: empty)")
    add('owner: ""', "the team that produces these events (default: empty)")
    add("kafka:")
    add(f"  cluster: {kafka('cluster')}", "a cluster name from the settings (default: default)")
    add(f"  topic: {_scalar(topic)}", "the topic holding these events (required)")
    add(
        f"  partitions: {partitions}",
        f"used when the topic is created locally; the scaling ceiling (default: {kafka('partitions')})",
    )
    add(f"  # consumer_group: loader.{name}", f"the workers' consumer group (default: loader.{name})")
    add(
        "  # match:",
        "which records are this event type's when specs share the topic (default: all); one of:",
    )
    add(f"  #   event_name: {name}", "the envelope's event_name (its header, or the JSON value's field)")
    add("  #   header: type", "or a Kafka header's value, with equals:")
    add(f"  #   equals: {name}", "(the header's last occurrence, as text)")
    add("  #   catch_all: true", "or what no other spec on the topic takes")
    add(
        f"  envelope: {kafka('envelope')}",
        "how `loader gateway` writes the envelope: headers (the value is the bare payload) or json "
        f"(default: {kafka('envelope')})",
    )
    add("schema:")
    if schema_path is None:
        add("  mode: raw", "raw JSON: the payload lands whole in one VARIANT column (default: typed)")
    else:
        add(f"  path: {_scalar(schema_path)}", "Avro schema, relative to this file; one column per field")
        add("  # mode: typed", "typed (default): one column per field; raw: one VARIANT column")
    add(
        f"  # max_json_depth: {_default(SchemaRef, 'max_json_depth')}",
        "levels of JSON objects and arrays a value may nest; deeper is a dead letter (default: "
        f"{_default(SchemaRef, 'max_json_depth')})",
    )
    add(
        f"  # format: {_default(SchemaRef, 'format')}",
        "json (default): enveloped JSON; avro-registry: Confluent wire-format Avro, read with this schema; "
        "protobuf-registry: Confluent wire-format Protobuf, its fields filling this schema's by name",
    )
    add(
        "  # message: com.acme.OrderCreated",
        "protobuf-registry only: the full name of the Protobuf message type the values hold",
    )
    add(
        '  # extra_fields: {keep: false, reason: "..."}',
        "fields the schema does not know are kept in _EXTRA (default); dropping them needs a reason",
    )
    add("s3:")
    add(f"  bucket: {_scalar(bucket)}", "the bucket of the Parquet files (required)")
    add(
        f"  prefix: events/{name}",
        "data under <prefix>/data/, dead letters under <prefix>/dead-letter/ (required)",
    )
    add(
        f"  time_partition: {_default(S3Spec, 'time_partition')}",
        "hour or day folders, from the records' Kafka timestamps (default: hour)",
    )
    add("rolling:", "a partition's file is rolled at whichever limit comes first")
    add(f"  max_records: {rolling('max_records')}", f"records per file (default: {rolling('max_records')})")
    add(
        f"  max_file_bytes: {rolling('max_file_bytes')}",
        f"compressed bytes per file; Snowflake likes 100-250 MB (default: {rolling('max_file_bytes')})",
    )
    add(
        f"  max_age_s: {rolling('max_age_s'):g}",
        f"freshness: a quiet partition still flushes after this long (default: {rolling('max_age_s'):g})",
    )
    add(
        f"  row_group_records: {rolling('row_group_records')}",
        f"records per Parquet row group (default: {rolling('row_group_records')})",
    )
    add("snowflake:")
    add(f"  database: {_DATABASE}", "database of the table (required)")
    add(f"  schema: {_SCHEMA}", "schema of the table, file format, stage and pipe (required)")
    add(
        f"  table: {name.upper()}", "the table; its pipe, stage and file format are named after it (required)"
    )
    add(
        f"  on_error: {_default(SnowflakeSpec, 'on_error')}",
        "the COPY's ON_ERROR: ABORT_STATEMENT, SKIP_FILE or CONTINUE (default: ABORT_STATEMENT)",
    )
    add("deployment:")
    add(
        f"  replicas: {_default(DeploymentSpec, 'replicas')}",
        f"worker pods; 0 stops the pipeline (default: {_default(DeploymentSpec, 'replicas')})",
    )
    add(
        f"  memory_budget_mb: {_default(DeploymentSpec, 'memory_budget_mb')}",
        "buffer memory of a worker before it rolls early and pauses partitions "
        f"(default: {_default(DeploymentSpec, 'memory_budget_mb')})",
    )
    return "".join(
        f"{text:<{_COMMENT_COLUMN}} # {comment}\n" if comment else f"{text}\n" for text, comment in lines
    )


def render_schema(name: str) -> str:
    """An example Avro schema: a required id, an optional field and a timestamp, to edit."""
    record = "".join(part.capitalize() for part in name.split("_"))
    fields = [
        {"name": "id", "type": "string", "doc": "Required: every event has one (a NOT NULL column)."},
        {
            "name": "note",
            "type": ["null", "string"],
            "default": None,
            "doc": "Optional: null or absent. Fields added later must look like this to stay compatible.",
        },
        {
            "name": "created_at",
            "type": {"type": "long", "logicalType": "timestamp-micros"},
            "doc": "When it happened: an ISO-8601 string in the JSON payload (a TIMESTAMP_TZ column).",
        },
    ]
    body = ",\n".join(f"    {json.dumps(f)}" for f in fields)
    return (
        "{\n"
        '  "type": "record",\n'
        f'  "name": {json.dumps(record)},\n'
        '  "version": 1,\n'
        f'  "doc": {json.dumps(f"One {name} event. Describe what it means and who produces it.")},\n'
        f'  "fields": [\n{body}\n  ]\n'
        "}\n"
    )


def scaffold(
    name: str,
    *,
    specs_dir: Path,
    schemas_dir: Path,
    topic: str | None = None,
    partitions: int = 6,
    bucket: str = DEFAULT_BUCKET,
    raw: bool = False,
    force: bool = False,
) -> Scaffold:
    """Write ``<specs_dir>/NAME.yaml`` (and ``<schemas_dir>/NAME.avsc`` unless raw), then load them
    back with every other spec of the folder; raise ConfigError, leaving nothing behind, if they
    would not load or would overwrite a file without ``force``."""
    check_event_name(name)
    spec_path = specs_dir / f"{name}.yaml"
    schema_path = None if raw else schemas_dir / f"{name}.avsc"
    targets = [p for p in (spec_path, schema_path) if p is not None]
    existing = [p for p in targets if p.exists()]
    if existing and not force:
        verb = "exists" if len(existing) == 1 else "exist"
        raise ConfigError(
            f"{' and '.join(map(str, existing))} already {verb}: "
            "choose another name, or pass --force to overwrite"
        )
    relative_schema = None
    if schema_path is not None:
        relative_schema = Path(os.path.relpath(schema_path.resolve(), specs_dir.resolve())).as_posix()
    texts = {
        spec_path: render_spec(
            name, topic=topic or name, partitions=partitions, bucket=bucket, schema_path=relative_schema
        )
    }
    if schema_path is not None:
        texts[schema_path] = render_schema(name)
    previous = {path: path.read_bytes() if path.exists() else None for path in texts}
    for path, text in texts.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    try:
        [spec] = load_specs(specs_dir, [name])
        schema_for(spec)
    except ConfigError as exc:
        for path, content in previous.items():
            if content is None:
                path.unlink()
            else:
                path.write_bytes(content)
        raise ConfigError(f"{exc}\nthe new event type would not load, so nothing was written") from None
    return Scaffold(name=name, spec_path=spec_path, schema_path=schema_path)
