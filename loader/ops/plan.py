"""Everything one event spec implies, before anything exists (``loader plan EVENT``).

Kafka topic and group, the event gateway's endpoints and the form it produces,
S3 layout with example keys, the Snowflake statements a first ``loader pipes
apply`` would run, and the worker's Helm values. It is
worked out offline, by the same code that later creates each piece (the
layout's keys, the pipe manager's plan, the chart's values), so what it shows
cannot drift from what happens.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from loader.config.settings import Settings
from loader.config.spec import MIB, EventSpec
from loader.deploy.render import event_values, values_yaml
from loader.encode.decode import ENVELOPE_FIELDS
from loader.store.layout import FileRange, data_key, dead_letter_key, period_of
from loader.warehouse.connection import Warehouse
from loader.warehouse.manager import PipeManager
from loader.worker.rolling import MAX_LATENESS_MS

__all__ = ["EventPlan", "GatewayPlan", "KafkaPlan", "S3Plan", "SnowflakePlan", "plan_event", "roll_rules"]


@dataclass(frozen=True)
class KafkaPlan:
    """Where the worker reads."""

    cluster: str
    topic: str
    partitions: int
    consumer_group: str
    takes: str
    """Which of the topic's records are this event type's (``kafka.match``)."""
    shared_with: list[str]
    """The other event types reading the topic, with what each takes (empty: not shared)."""


@dataclass(frozen=True)
class GatewayPlan:
    """How HTTP clients post the event through ``loader gateway``, and what lands on Kafka."""

    served: bool
    """False for registry formats: the gateway does not serialize those (it answers 415)."""
    endpoint: str
    """The gateway's own API (a JSON array or NDJSON of events)."""
    rest_proxy: str
    """The Confluent REST Proxy v2 produce endpoint of the event's topic."""
    port: int
    mode: str
    envelope: str
    """The spec's ``kafka.envelope``: ``headers`` or ``json``."""
    record_form: str
    """What one produced record looks like, in words."""
    adds_header: str | None
    """The header the gateway sets so that the record matches this spec (a header match)."""


@dataclass(frozen=True)
class S3Plan:
    """Where the worker writes, and when it rolls a file."""

    bucket: str
    prefix: str
    data_prefix: str
    dead_letter_prefix: str
    time_partition: str
    example_data_key: str
    """The key of partition 0's first full file, were its first record produced now."""
    example_dead_letter_key: str
    notification: str
    """Where S3 reports each new data file, so that it gets loaded."""
    rolling: dict[str, Any]
    """The spec's ``rolling`` limits, as given."""
    roll_rules: list[str]
    """Every reason the worker rolls a file, in :mod:`loader.worker.rolling`'s order; the first met wins."""
    max_lateness_s: float
    """How much older than the open file's time partition a record may be and still join it."""


@dataclass(frozen=True)
class SnowflakePlan:
    """Where the rows land, and the statements that create it."""

    load_mode: str
    table: str
    schema_version: int
    columns: list[dict[str, Any]]
    statements: list[str]
    """What ``loader pipes apply`` runs against a warehouse where none of it exists yet."""


@dataclass(frozen=True)
class EventPlan:
    """One event type's pipeline, piece by piece."""

    event: str
    description: str
    owner: str
    spec_path: str | None
    schema_mode: str
    schema_path: str | None
    kafka: KafkaPlan
    gateway: GatewayPlan
    s3: S3Plan
    snowflake: SnowflakePlan
    deployment: dict[str, Any]
    """The event's entry in the Helm chart's ``events`` value."""

    def to_json(self) -> dict[str, Any]:
        """The plan as plain data, for ``--json`` and scripts."""
        return dataclasses.asdict(self)

    def render(self) -> str:
        """The plan as text for people: one section per stage of the pipeline."""
        kafka, gateway, s3, sf = self.kafka, self.gateway, self.s3, self.snowflake
        rolling = s3.rolling
        about = " - ".join(part for part in (self.description, self.owner and f"owner {self.owner}") if part)
        schema = f"{self.schema_mode}, version {sf.schema_version}"
        if self.schema_path:
            schema += f", {self.schema_path}"
        statements = [line for statement in sf.statements for line in f"{statement};".splitlines()]
        sections = [
            _section(
                f"event type {self.event}" + (f": {about}" if about else ""),
                [("spec", self.spec_path or "-"), ("schema", schema)],
            ),
            _section(
                "Kafka",
                [
                    ("cluster", kafka.cluster),
                    ("topic", f"{kafka.topic} ({kafka.partitions} partitions)"),
                    ("consumer group", kafka.consumer_group),
                    ("takes", kafka.takes),
                    *[
                        ("shared with" if number == 0 else "", sibling)
                        for number, sibling in enumerate(kafka.shared_with)
                    ],
                ],
            ),
            _section(
                f"Gateway (`loader gateway`, port {gateway.port}, {gateway.mode} mode)",
                _gateway_lines(gateway),
            ),
            _section(
                "S3",
                [
                    ("data", f"s3://{s3.bucket}/{s3.data_prefix} ({s3.time_partition} folders)"),
                    ("dead letters", f"s3://{s3.bucket}/{s3.dead_letter_prefix}"),
                    ("example data key", s3.example_data_key),
                    ("example dead letters", s3.example_dead_letter_key),
                    *_rules("roll a file at", s3.roll_rules),
                    ("", f"whichever comes first ({rolling['row_group_records']:,} records per row group)"),
                    ("notifications", s3.notification),
                ],
            ),
            _section(
                f"Snowflake (load mode {sf.load_mode})",
                [("table", f"{sf.table}, {len(sf.columns)} columns")],
                ["-- what `loader pipes apply` runs where none of it exists yet:", *statements],
            ),
            _section("Deployment (Helm values)", [], values_yaml({"events": [self.deployment]}).splitlines()),
        ]
        return "\n\n".join(sections)


def _gateway_lines(gateway: GatewayPlan) -> list[tuple[str, str]]:
    if not gateway.served:
        return [("not served", gateway.record_form)]
    return [
        ("events API", f"{gateway.endpoint} (JSON array or NDJSON; ?form=envelope or ?form=payload)"),
        ("REST Proxy", f"{gateway.rest_proxy} (application/vnd.kafka.json.v2+json)"),
        (f"envelope ({gateway.envelope})", gateway.record_form),
        *([("adds header", gateway.adds_header)] if gateway.adds_header else []),
    ]


def _gateway(spec: EventSpec, settings: Settings) -> GatewayPlan:
    """The gateway's view of ``spec``: its endpoints and the record form its ``kafka.envelope`` gives."""
    fmt = spec.schema_ref.format
    match = spec.kafka.match
    if fmt != "json":
        form = f"format {fmt}: produce with a registry serializer (the gateway answers 415)"
    elif spec.kafka.envelope == "headers":
        form = f"Kafka headers {', '.join(ENVELOPE_FIELDS)}; the value is the payload's JSON"
    else:
        form = f"the value is one JSON object: {', '.join(ENVELOPE_FIELDS)} and payload"
    header = match.header if match is not None else None
    return GatewayPlan(
        served=fmt == "json",
        endpoint=f"POST /v1/events/{spec.name}",
        rest_proxy=f"POST /topics/{spec.kafka.topic}",
        port=settings.gateway.port,
        mode=settings.gateway.mode,
        envelope=spec.kafka.envelope,
        record_form=form,
        adds_header=f"{header}: {match.equals}" if header is not None and match is not None else None,
    )


def _rules(label: str, rules: list[str]) -> list[tuple[str, str]]:
    """``rules`` as pairs, ``label`` on the first, one rule a line, "or" before the last."""
    lines = [f"{rule}," for rule in rules[:-1]] + [f"or {rule}" for rule in rules[-1:]]
    return [(label if number == 0 else "", line) for number, line in enumerate(lines)]


def roll_rules(spec: EventSpec) -> list[str]:
    """When ``spec``'s worker rolls a partition's open file, one rule each, from the numbers the
    worker uses (:mod:`loader.worker.rolling`)."""
    rolling, partition = spec.rolling, spec.s3.time_partition
    return [
        f"{rolling.max_records:,} records",
        f"{rolling.max_file_bytes / MIB:g} MiB (compressed, estimated while the file is open)",
        f"the {partition} partition moving forward (or a record more than "
        f"{MAX_LATENESS_MS / 3_600_000:g} h older than the open file's {partition})",
        f"{rolling.max_age_s:g} s after its first record",
        f"memory pressure (the biggest open file, once buffered rows exceed the "
        f"{spec.deployment.memory_budget_mb} MB budget)",
    ]


def _section(title: str, pairs: list[tuple[str, str]], lines: list[str] | None = None) -> str:
    """A heading, aligned ``label  value`` pairs, then free lines, all indented under it."""
    width = max((len(label) for label, _ in pairs), default=0)
    body = [f"{label:<{width}}  {value}" for label, value in pairs] + (lines or [])
    return "\n".join([title, *(f"  {line}" for line in body)])


class _EmptyWarehouse(Warehouse):
    """A warehouse in which nothing exists yet: planning against it gives exactly the statements of
    a first apply, and it never connects."""

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        return []


def _notification(spec: EventSpec, settings: Settings) -> str:
    source = f"s3:ObjectCreated:* on s3://{spec.s3.bucket}/{spec.data_prefix}"
    if settings.snowflake.load_mode == "auto-ingest":
        return f"{source} -> the Snowpipe's notification channel (AUTO_INGEST)"
    queue = settings.aws.notifications_queue_url or "$LOADER_AWS__NOTIFICATIONS_QUEUE_URL (not set)"
    return f"{source} -> SQS {queue} -> `loader pipes run`"


def plan_event(spec: EventSpec, settings: Settings, *, now: datetime | None = None) -> EventPlan:
    """Everything ``spec`` implies with ``settings`` (nothing is contacted); example keys are for
    records produced at ``now`` (default: the current time)."""
    moment = now or datetime.now(UTC)
    manager = PipeManager(_EmptyWarehouse(settings.snowflake), settings)
    objects = manager.objects(spec)
    first_file = FileRange(
        topic=spec.kafka.topic,
        partition=0,
        first_offset=0,
        last_offset=spec.rolling.max_records - 1,
        period=period_of(spec, int(moment.timestamp() * 1000)),
    )
    return EventPlan(
        event=spec.name,
        description=spec.description,
        owner=spec.owner,
        spec_path=str(spec.source_path) if spec.source_path else None,
        schema_mode=spec.schema_ref.mode,
        schema_path=str(spec.schema_path) if spec.schema_path else None,
        kafka=KafkaPlan(
            cluster=spec.kafka.cluster,
            topic=spec.kafka.topic,
            partitions=spec.kafka.partitions,
            consumer_group=spec.consumer_group,
            takes=spec.takes,
            shared_with=spec.shared_with,
        ),
        gateway=_gateway(spec, settings),
        s3=S3Plan(
            bucket=spec.s3.bucket,
            prefix=spec.s3.prefix,
            data_prefix=spec.data_prefix,
            dead_letter_prefix=spec.dead_letter_prefix,
            time_partition=spec.s3.time_partition,
            example_data_key=data_key(spec, first_file),
            example_dead_letter_key=dead_letter_key(spec, first_file),
            notification=_notification(spec, settings),
            rolling=spec.rolling.model_dump(mode="json"),
            roll_rules=roll_rules(spec),
            max_lateness_s=MAX_LATENESS_MS / 1000,
        ),
        snowflake=SnowflakePlan(
            load_mode=settings.snowflake.load_mode,
            table=objects.table,
            schema_version=objects.schema.version,
            columns=[dataclasses.asdict(column) for column in objects.columns()],
            statements=[step.sql for step in manager.plan(spec).steps],
        ),
        deployment=event_values(spec),
    )
