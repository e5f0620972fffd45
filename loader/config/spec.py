"""The declarative spec of one event type: everything its pipeline needs.

One YAML file per event type in the specs folder (``pipelines/``). The spec
names the Kafka topic, the schema, the S3 layout, the rolling policy, the
Snowflake objects and the deployment; every other piece (worker, table,
stage, pipe, Helm values) is derived from it. Loading validates everything
up front, in this one place (every command loads specs through
:func:`load_specs`): a bad spec gets a message naming its file, its field
and the rule the value breaks. Every name is checked against the rules of
where it ends up (:mod:`loader.config.identifiers`), including the names
derived from it: the stage, pipe and file format named after the table, and
the Kubernetes names derived from the event name.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from loader.config.identifiers import (
    SNOWFLAKE_NAME_CHARS,
    check_bucket,
    check_event_name,
    check_ident,
    check_kafka_cluster,
    check_s3_prefix,
    check_topic,
)
from loader.config.problems import validation_problems
from loader.config.yamlfile import YamlFileError, read_yaml
from loader.errors import ConfigError, SpecError, clip, excerpt

__all__ = [
    "FILE_FORMAT_SUFFIX",
    "PIPES_TABLE",
    "PIPE_SUFFIX",
    "RESERVED_TABLES",
    "STAGE_SUFFIX",
    "TABLE_OBJECT_SUFFIXES",
    "DeploymentSpec",
    "EventSpec",
    "ExtraFields",
    "KafkaMatch",
    "KafkaSpec",
    "RollingSpec",
    "S3Spec",
    "SchemaRef",
    "SnowflakeSpec",
    "TopicSibling",
    "load_spec",
    "load_specs",
]

MIB = 1024 * 1024

FILE_FORMAT_SUFFIX, STAGE_SUFFIX, PIPE_SUFFIX = "_PARQUET", "_STAGE", "_PIPE"
TABLE_OBJECT_SUFFIXES = (FILE_FORMAT_SUFFIX, STAGE_SUFFIX, PIPE_SUFFIX)
"""The event's file format, stage and pipe are named after its table with these suffixes
(:class:`loader.warehouse.objects.EventObjects`), so the table name leaves room for them."""

_TABLE_CHARS = SNOWFLAKE_NAME_CHARS - max(map(len, TABLE_OBJECT_SUFFIXES))

PIPES_TABLE = "LOADER_PIPES"
"""The table of copy-mode pipe definitions in each event schema (:mod:`loader.warehouse.objects`)."""
RESERVED_TABLES = frozenset({PIPES_TABLE})
"""Tables of the loader itself in each event schema."""


def _snowflake_name(value: str) -> str:
    return check_ident(value, "Snowflake name")


def _table_name(value: str) -> str:
    if len(value) > _TABLE_CHARS:
        raise ValueError(
            f"table name {excerpt(value)} has {len(value)} characters: at most {_TABLE_CHARS} are allowed, "
            f"because its file format, stage and pipe add {', '.join(TABLE_OBJECT_SUFFIXES)} to it and "
            f"Snowflake names hold at most {SNOWFLAKE_NAME_CHARS} characters"
        )
    table = check_ident(value, "Snowflake name")
    if table in RESERVED_TABLES:
        raise ValueError(f"{table} holds the loader's pipe definitions: name the event's table otherwise")
    return table


def _free_text(value: str) -> str:
    # Printed by `loader plan` and the like: a control character would drive the terminal.
    if any((ord(ch) < 32 and ch not in "\n\t") or 127 <= ord(ch) < 160 for ch in value):
        raise ValueError("control characters are not allowed (only text, new lines and tabs)")
    return value


SnowflakeName = Annotated[str, AfterValidator(_snowflake_name)]
FreeText = Annotated[str, Field(max_length=4096), AfterValidator(_free_text)]
TableName = Annotated[str, AfterValidator(_table_name)]
EventName = Annotated[str, AfterValidator(check_event_name)]
KafkaTopic = Annotated[str, AfterValidator(check_topic)]
KafkaCluster = Annotated[str, AfterValidator(check_kafka_cluster)]
S3Bucket = Annotated[str, AfterValidator(check_bucket)]
S3Prefix = Annotated[str, AfterValidator(check_s3_prefix)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _match_value(value: str) -> str:
    if not value or len(value) > 255:
        raise ValueError("a match value has 1 to 255 characters")
    return _free_text(value)


MatchValue = Annotated[str, AfterValidator(_match_value)]


class KafkaMatch(_Model):
    """Which records of a shared topic this event type takes (``kafka.match``): exactly one of

    - ``event_name: order_created``: the envelope's ``event_name`` (the ``event_name`` header
      when the envelope rides in headers, else the JSON value's field);
    - ``header: type`` with ``equals: order_created``: a Kafka header's value (its last
      occurrence, as UTF-8 text);
    - ``catch_all: true``: what no other spec on the topic takes.

    Specs on one topic match on the same thing (all ``event_name``, or all the same header),
    with distinct values, so no record is taken twice (checked by :func:`load_specs`).
    """

    event_name: MatchValue | None = None
    header: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._\-]{1,249}$")
    equals: MatchValue | None = None
    catch_all: bool = False

    @model_validator(mode="after")
    def _one_rule(self) -> KafkaMatch:
        by_header = self.header is not None or self.equals is not None
        forms = [self.event_name is not None, by_header, self.catch_all]
        if sum(forms) != 1:
            raise ValueError(
                "give exactly one of: event_name: <name>; header: <key> with equals: <value>; catch_all: true"
            )
        if (self.header is None) != (self.equals is None):
            raise ValueError("a header match needs both header: <key> and equals: <value>")
        return self

    @property
    def on(self) -> str | None:
        """What the rule reads: ``event_name``, ``header:<key>``, or None for the catch-all."""
        if self.event_name is not None:
            return "event_name"
        return None if self.header is None else f"header:{self.header}"

    @property
    def value(self) -> str | None:
        """The value a record's :attr:`on` must have (None for the catch-all)."""
        return self.event_name if self.event_name is not None else self.equals

    def describe(self) -> str:
        """One line for ``loader plan`` and ``loader status``."""
        if self.catch_all:
            return "catch-all (what no other spec on the topic takes)"
        if self.event_name is not None:
            return f"event_name = {self.event_name!r}"
        return f"header {self.header!r} = {self.equals!r}"


class KafkaSpec(_Model):
    """Where the events come from."""

    topic: KafkaTopic
    """Kafka topic holding this event type."""
    cluster: KafkaCluster = "default"
    """Name of the cluster in the settings (``LOADER_KAFKA__CLUSTERS``)."""
    consumer_group: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._\-]{1,249}$")
    """Consumer group; defaults to ``loader.<event name>``."""
    partitions: int = Field(default=6, ge=1, le=10_000)
    """Partition count used when the topic is created locally (and the scaling ceiling)."""
    match: KafkaMatch | None = None
    """Which of the topic's records are this event type's; None: all of them. Needed when
    specs share the topic: the others are skipped (counted, not dead-lettered)."""
    envelope: Literal["headers", "json"] = "headers"
    """How the event gateway (``loader gateway``) writes the envelope: ``headers`` (Kafka
    headers, the value is the bare payload, so routing reads no payload) or ``json`` (one JSON
    object holding the envelope and its ``payload``). The worker reads both forms."""


class TopicSibling(_Model):
    """Another spec reading the same topic (filled in by :func:`load_specs`)."""

    name: str
    match: KafkaMatch


class ExtraFields(_Model):
    """Whether payload fields the schema does not know are kept (the ``_EXTRA`` column)."""

    keep: bool = True
    """Keep them in ``_EXTRA``, as JSON of the unknown fields only (NULL when there are none)."""
    reason: str | None = Field(default=None, min_length=3, max_length=500)
    """Why they may be dropped: required when ``keep`` is false, so no field goes unexplained."""

    @model_validator(mode="after")
    def _reason_when_off(self) -> ExtraFields:
        if not self.keep and not (self.reason or "").strip():
            raise ValueError(
                "schema.extra_fields.keep: false needs a reason (why unknown fields may be dropped)"
            )
        return self


class SchemaRef(_Model):
    """The event's schema: a versioned Avro file in the repository, or raw JSON."""

    path: Path | None = None
    """Avro schema file (``.avsc``), relative to the spec file. None for raw events."""
    mode: Literal["typed", "raw"] = "typed"
    """typed: one column per field; raw: the payload lands in one VARIANT column."""
    max_json_depth: int = Field(default=64, ge=8, le=200)
    """Levels of JSON objects and arrays a record's value may nest (the envelope object is
    level 1); a deeper record is a dead letter. Every decoding path holds records to it."""
    format: Literal["json", "avro-registry", "protobuf-registry"] = "json"
    """How values are encoded: json (an enveloped JSON object), avro-registry (Confluent's
    wire format: magic byte 0, the writer schema's registry id, Avro binary, resolved to this
    schema), or protobuf-registry (the same framing with message indexes, then a Protobuf
    message of type :attr:`message`, whose fields fill this schema's fields by name)."""
    message: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
    """protobuf-registry: the full name of the Protobuf message type the event's values hold
    (``com.acme.OrderCreated``); a value of another type is a dead letter."""
    extra_fields: ExtraFields = ExtraFields()
    """Payload fields the schema does not know: kept in ``_EXTRA`` unless switched off with a
    reason (``{keep: false, reason: "..."}``)."""

    @model_validator(mode="after")
    def _path_matches_mode(self) -> SchemaRef:
        if self.mode == "typed" and self.path is None:
            raise ValueError("a typed event needs schema.path (an .avsc file); use mode: raw for raw JSON")
        if self.format == "avro-registry" and self.mode != "typed":
            raise ValueError(
                "format avro-registry needs mode: typed (the .avsc is the reader schema of the records)"
            )
        if self.format == "protobuf-registry" and (self.mode != "typed" or self.message is None):
            raise ValueError(
                "format protobuf-registry needs mode: typed (the .avsc is the table's shape) and "
                "schema.message: the full name of the Protobuf message type (e.g. com.acme.OrderCreated)"
            )
        if self.message is not None and self.format != "protobuf-registry":
            raise ValueError(
                "schema.message names a Protobuf message type: only for format protobuf-registry"
            )
        return self


class S3Spec(_Model):
    """Where the Parquet files go."""

    bucket: S3Bucket
    """General purpose bucket of the files (S3's bucket naming rules)."""
    prefix: S3Prefix
    """Key prefix of this event's files; data lands under ``<prefix>/data/``."""
    time_partition: Literal["hour", "day"] = "hour"
    """Granularity of the ``dt=``/``hour=`` folders, taken from the records' Kafka timestamps."""


class RollingSpec(_Model):
    """When a partition's buffered records become a file in S3."""

    max_records: int = Field(default=2_000_000, ge=1)
    """Roll after this many records."""
    max_file_bytes: int = Field(default=128 * MIB, ge=1024)
    """Roll once the compressed file reaches about this size (Snowflake likes 100-250 MB)."""
    max_age_s: float = Field(default=300.0, gt=0, le=7 * 86_400, allow_inf_nan=False)
    """Roll a partition's open file this long after its first record arrived (freshness bound;
    at most 7 days, the window in which Snowpipe's REFRESH still finds a file)."""
    row_group_records: int = Field(default=100_000, ge=1)
    """Records per Parquet row group (deterministic boundaries)."""


class SnowflakeSpec(_Model):
    """Where the rows land."""

    database: SnowflakeName
    schema_: SnowflakeName = Field(alias="schema")
    table: TableName
    """The table; its file format, stage and pipe are named after it (``<TABLE>_STAGE``, ...)."""
    on_error: Literal["ABORT_STATEMENT", "SKIP_FILE", "CONTINUE"] = "ABORT_STATEMENT"
    """ON_ERROR of the pipe's COPY. Bad records are dead-lettered before they reach S3."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DeploymentSpec(_Model):
    """How the event's worker runs."""

    replicas: int = Field(default=1, ge=0)
    memory_budget_mb: int = Field(default=512, ge=64, le=1024 * 1024)
    """Buffer memory the worker may use before it pauses partitions."""


class EventSpec(_Model):
    """One event type's pipeline, from Kafka topic to Snowflake table."""

    name: EventName
    """Event type name (lower snake case, at most 63 characters), used in file names, metrics,
    defaults and, with ``-`` for ``_``, the Helm chart's Kubernetes names."""
    description: FreeText = ""
    owner: FreeText = ""
    kafka: KafkaSpec
    schema_ref: SchemaRef = Field(alias="schema")
    s3: S3Spec
    rolling: RollingSpec = Field(default_factory=RollingSpec)
    snowflake: SnowflakeSpec
    deployment: DeploymentSpec = Field(default_factory=DeploymentSpec)
    source_path: Path | None = Field(default=None, exclude=True)
    """The file the spec was loaded from (set by the loader, not written in YAML)."""
    siblings: tuple[TopicSibling, ...] = Field(default=(), exclude=True)
    """The other specs of the specs folder reading the same topic (set by :func:`load_specs`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def consumer_group(self) -> str:
        return self.kafka.consumer_group or f"loader.{self.name}"

    @property
    def takes(self) -> str:
        """Which records of its topic the event type takes, in words (plan and status)."""
        match = self.kafka.match
        return "every record of the topic" if match is None else match.describe()

    @property
    def shared_with(self) -> list[str]:
        """The other event types on its topic, each with what it takes (plan and status)."""
        return [f"{s.name}: {s.match.describe()}" for s in self.siblings]

    @property
    def data_prefix(self) -> str:
        """Key prefix of the data files (the notification and stage scope)."""
        return f"{self.s3.prefix}/data/"

    @property
    def dead_letter_prefix(self) -> str:
        return f"{self.s3.prefix}/dead-letter/"

    @property
    def schema_path(self) -> Path | None:
        """The schema file, resolved against the spec's folder."""
        path = self.schema_ref.path
        if path is None or path.is_absolute() or self.source_path is None:
            return path
        return (self.source_path.parent / path).resolve()


def load_spec(path: Path) -> EventSpec:
    """Load and validate one spec file; raise SpecError naming the file and fields."""
    try:
        data = read_yaml(path)
    except OSError as exc:
        raise SpecError(str(path), [f"cannot read the file: {exc.strerror}"]) from None
    except YamlFileError as exc:
        raise SpecError(str(path), [str(exc)]) from None
    if not isinstance(data, dict):
        raise SpecError(str(path), ["the file must hold a mapping (name:, kafka:, schema:, s3:, snowflake:)"])
    try:
        spec = EventSpec.model_validate({**data, "source_path": path})
    except ValidationError as exc:
        raise SpecError(str(path), validation_problems(exc, show_input=True)) from None
    schema_path = spec.schema_path
    if schema_path is not None and not schema_path.is_file():
        raise SpecError(str(path), [f"schema.path: file {schema_path} does not exist"])
    return spec


def load_specs(specs_dir: Path, names: list[str] | None = None) -> list[EventSpec]:
    """Load every spec in ``specs_dir`` (or the ``names`` asked for), checking for clashes."""
    if not specs_dir.is_dir():
        raise ConfigError(f"specs folder {specs_dir} does not exist: set LOADER_SPECS_DIR or --specs")
    files = sorted([*specs_dir.glob("*.yaml"), *specs_dir.glob("*.yml")])
    specs = [load_spec(f) for f in files]
    _check_unique(specs)
    specs = _with_siblings(specs)
    if names:
        by_name = {s.name: s for s in specs}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ConfigError(
                f"no spec for event type(s) {clip(', '.join(unknown), 200)} in {specs_dir}; "
                f"known: {', '.join(sorted(by_name)) or 'none'}"
            )
        return [by_name[n] for n in names]
    return specs


def _check_unique(specs: list[EventSpec]) -> None:
    seen: dict[tuple[str, ...], str] = {}
    for spec in specs:
        for what, key in (
            ("event name", (spec.name,)),
            ("table", (spec.snowflake.database, spec.snowflake.schema_, spec.snowflake.table)),
            ("S3 prefix", (spec.s3.bucket, spec.s3.prefix)),
            ("consumer group", (spec.kafka.cluster, spec.consumer_group)),
        ):
            marker = (what, *key)
            if marker in seen:
                raise ConfigError(
                    f"{spec.source_path} and {seen[marker]} use the same {what} {'.'.join(key)}: "
                    "each event type needs its own"
                )
            seen[marker] = str(spec.source_path)
    prefixes = sorted((s.s3.bucket, s.s3.prefix + "/", str(s.source_path)) for s in specs)
    for (b1, p1, f1), (b2, p2, f2) in itertools.pairwise(prefixes):
        if b1 == b2 and p2.startswith(p1):
            raise ConfigError(
                f"{f2}: S3 prefix {clip(p2, 100)!r} is inside {f1}'s prefix {clip(p1, 100)!r}; "
                "prefixes must not nest"
            )


def _with_siblings(specs: list[EventSpec]) -> list[EventSpec]:
    """Check the specs sharing a topic and tell each its siblings: every one needs a
    ``kafka.match``, all on the same thing with distinct values, at most one catch-all."""
    by_topic: dict[tuple[str, str], list[EventSpec]] = {}
    for spec in specs:
        by_topic.setdefault((spec.kafka.cluster, spec.kafka.topic), []).append(spec)
    result: list[EventSpec] = []
    for spec in specs:
        group = by_topic[(spec.kafka.cluster, spec.kafka.topic)]
        if len(group) == 1:
            if spec.kafka.match is not None and spec.kafka.match.catch_all:
                raise ConfigError(
                    f"{spec.source_path}: kafka.match.catch_all takes what the other specs on topic "
                    f"{spec.kafka.topic!r} do not, but no other spec in the folder reads that topic"
                )
            result.append(spec)
            continue
        _check_shared(spec.kafka.topic, group)
        siblings = tuple(
            TopicSibling(name=other.name, match=other.kafka.match)
            for other in group
            if other is not spec and other.kafka.match is not None
        )
        result.append(spec.model_copy(update={"siblings": siblings}))
    return result


def _check_shared(topic: str, group: list[EventSpec]) -> None:
    names = ", ".join(f"{s.name} ({s.source_path})" for s in group)
    unmatched = [s for s in group if s.kafka.match is None]
    if unmatched:
        raise ConfigError(
            f"{unmatched[0].source_path}: topic {topic!r} is shared by {names}; each spec on a shared "
            "topic needs kafka.match (event_name: <name>, header: <key> with equals: <value>, or "
            "catch_all: true) saying which records it takes"
        )
    rules = [(s, s.kafka.match) for s in group if s.kafka.match is not None]
    catch_alls = [s for s, m in rules if m.catch_all]
    if len(catch_alls) > 1:
        raise ConfigError(
            f"{catch_alls[1].source_path} and {catch_alls[0].source_path} are both the catch-all of "
            f"topic {topic!r}: at most one spec may take what the others do not"
        )
    formats = {s.schema_ref.format for s in group}
    if len(formats) > 1:
        raise ConfigError(
            f"specs on topic {topic!r} read different value formats ({', '.join(sorted(formats))}): "
            f"{names} must agree on schema.format to agree on which record is whose"
        )
    taken: dict[str, EventSpec] = {}
    on = {m.on for _s, m in rules if not m.catch_all}
    if len(on) > 1:
        raise ConfigError(
            f"specs on topic {topic!r} match on different things ({', '.join(sorted(map(str, on)))}): "
            f"a record could match two of {names}; match all of them on event_name, or all on one header"
        )
    for spec, match in rules:
        if match.value is None:
            continue
        if match.value in taken:
            raise ConfigError(
                f"{spec.source_path} and {taken[match.value].source_path} both take the records of "
                f"topic {topic!r} with {match.describe()}: each record goes to one spec"
            )
        taken[match.value] = spec
