"""The Helm chart's values, derived from the event specs.

``deploy/helm/event-loader`` deploys one worker Deployment per entry of its
``events`` value; this module builds those entries from the specs, so the
specs stay the one source of truth. Each entry carries its spec and schema
text: the chart puts them into a ConfigMap per event and mounts them where
``LOADER_SPECS_DIR`` points, so adding an event type needs no image rebuild.
No setting is read here, so no credential can reach the output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import yaml

from loader.config.spec import MIB, EventSpec
from loader.errors import ConfigError, excerpt

__all__ = [
    "CPU_REQUEST",
    "MEMORY_OVERHEAD_MB",
    "chart_values",
    "event_values",
    "image_values",
    "spec_text",
    "values_yaml",
]

MEMORY_OVERHEAD_MB = 256
"""Memory a worker uses beside its buffer budget: the interpreter, pyarrow's pools and
aiokafka's fetch buffers (measured peak: budget + 150 MB, plus headroom)."""

CPU_REQUEST = "500m"
"""One worker process uses up to about one core; no CPU limit, throttling only adds lag."""

MIN_SPOOL_MB = 1024
"""Floor of the spool emptyDir's size limit, for specs with small files."""

SCHEMAS_DIR = "../schemas"
"""Where a spec's schema lives relative to its spec inside the pod (see the chart's ConfigMap)."""


def spec_text(spec: EventSpec) -> str:
    """The spec as YAML, with its schema path pointing where the chart mounts the schema."""
    data = spec.model_dump(mode="json", by_alias=True, exclude={"source_path"})
    if spec.schema_ref.path is not None:
        data["schema"]["path"] = f"{SCHEMAS_DIR}/{spec.name}.avsc"
    header = f"# {spec.name}: rendered by `loader deploy render` from {spec.source_path or 'a spec'}.\n"
    return header + yaml.safe_dump(data, sort_keys=False)


def _schema_text(spec: EventSpec) -> str | None:
    path = spec.schema_path
    if path is None:
        return None
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError(f"{spec.source_path}: cannot read schema {path}: {exc.strerror}") from None


def event_values(spec: EventSpec) -> dict[str, Any]:
    """One entry of the chart's ``events`` value: the event's worker Deployment.

    Memory is requested and limited at the spec's budget plus the process overhead
    (a Guaranteed memory share: the worker pauses partitions at its budget, so it
    should never be OOM-killed). The spool emptyDir holds at most one open and
    one uploading file per partition, should one replica own them all.
    """
    partitions = spec.kafka.partitions
    replicas = spec.deployment.replicas
    if replicas > partitions:
        raise ConfigError(
            f"{spec.source_path or spec.name}: deployment.replicas is {replicas} but topic "
            f"{spec.kafka.topic} has {partitions} partitions: replicas beyond the partition count "
            f"would sit idle in the consumer group; use at most {partitions}"
        )
    memory = f"{spec.deployment.memory_budget_mb + MEMORY_OVERHEAD_MB}Mi"
    spool_mb = max(MIN_SPOOL_MB, math.ceil(2 * partitions * spec.rolling.max_file_bytes / MIB))
    return {
        "name": spec.name,
        "topic": spec.kafka.topic,
        "cluster": spec.kafka.cluster,
        "consumerGroup": spec.consumer_group,
        "partitions": partitions,
        "replicas": replicas,
        "memoryBudgetMb": spec.deployment.memory_budget_mb,
        "resources": {
            "requests": {"cpu": CPU_REQUEST, "memory": memory},
            "limits": {"memory": memory},
        },
        "spoolSizeLimit": f"{spool_mb}Mi",
        "spec": spec_text(spec),
        "schema": _schema_text(spec),
    }


def image_values(image: str) -> dict[str, str]:
    """``repository[:tag]`` or ``repository@digest`` as the chart's ``image`` value."""
    repository, at, digest = image.partition("@")
    if at:
        if not repository or not digest:
            raise ConfigError(f"--image {excerpt(image)}: expected REPOSITORY@sha256:DIGEST")
        return {"repository": repository, "digest": digest}
    head, colon, tag = image.rpartition(":")
    if not colon or "/" in tag or not head or not tag:
        raise ConfigError(
            f"--image {excerpt(image)}: expected REPOSITORY:TAG, e.g. ghcr.io/acme/event-loader:1.4.0"
        )
    return {"repository": head, "tag": tag}


def chart_values(specs: Sequence[EventSpec], *, image: str | None = None) -> dict[str, Any]:
    """The chart's values for ``specs``: every event's entry, and the image when given."""
    if not specs:
        raise ConfigError("no event specs to render: add a spec to the specs folder (see `loader new-event`)")
    values: dict[str, Any] = {}
    if image is not None:
        values["image"] = image_values(image)
    values["events"] = [event_values(spec) for spec in specs]
    return values


_VALUES_HEADER = (
    "# Helm values for deploy/helm/event-loader, rendered from the event specs by `loader deploy render`.\n"
)


class _ValuesDumper(yaml.SafeDumper):
    """Writes multi-line strings (specs, schemas) as ``|`` blocks, readable in review."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ValuesDumper.add_representer(str, _represent_str)


def values_yaml(values: dict[str, Any]) -> str:
    """``values`` as a Helm values file."""
    return _VALUES_HEADER + yaml.dump(values, Dumper=_ValuesDumper, sort_keys=False)
