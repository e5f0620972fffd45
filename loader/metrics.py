"""Prometheus metrics of the workers and the loader: every definition, and how they are served.

One registry: the metrics below live in :data:`REGISTRY` (not prometheus_client's
global one), so what a process exposes is exactly the loader's metrics. A
single worker and the loader serve that registry. A worker pool
(``--processes N``) switches to prometheus_client's multiprocess mode before
forking: each child writes its values to memory-mapped files in a fresh folder
and the supervisor serves their merge (counters and histograms summed, gauges
summed over live children or maxed; see each gauge's ``multiprocess_mode``).
Multiprocess mode needs no IPC of our own and survives a child that crashes
mid-update; it cannot remove a label set or compute values at scrape time in
a child, which is why:

- a partition's lag gauge is set to 0 (not removed) when the partition goes:
  sums over processes and pods stay right;
- freshness is derived at scrape time, by the serving process, from the
  newest ``_CREATED_AT`` gauges (a Unix time): it keeps growing while nothing
  arrives;
- readiness (``loader_ready``) is asked of the serving process's probes at
  scrape time too: it is what ``/readyz`` answers, so Prometheus sees it.

Labels are bounded: ``event`` is a spec name (empty on an error of the SQS
loader that is no one event's: its queue, its Snowflake session), ``partition``
a partition number, ``kind`` an error class or code (at most
:data:`MAX_ERROR_KINDS` per component, then ``other``), ``field`` an unknown payload
field's path (at most :data:`MAX_UNKNOWN_FIELDS` per event, then ``other``). Nothing is updated per
record: the hot path increments once per batch or per file.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import prometheus_client.values
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    push_to_gateway,
)
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "AUDIT_LAST_RUN",
    "AUDIT_PROBLEMS",
    "CONTENT_TYPE",
    "MAX_ERROR_KINDS",
    "MAX_UNKNOWN_FIELDS",
    "REGISTRY",
    "Component",
    "EventMetrics",
    "ReadyProbe",
    "count_error",
    "enable_multiprocess",
    "exposition",
    "mark_process_dead",
    "notifications_queued",
    "push_audit",
    "render",
]

Component = Literal["kafka", "s3", "sqs", "snowflake", "registry"]
MAX_ERROR_KINDS = 20
"""Distinct ``kind`` values per component; later kinds are counted as ``other``."""
MAX_UNKNOWN_FIELDS = 50
"""Distinct ``field`` values of ``loader_unknown_fields_total`` per event; later fields are
counted as ``other`` (``loader schemas drift`` lists them all, from the data files)."""

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The classic text format every Prometheus reads (what ``start_http_server`` answers by default)."""

_MIB = 1024 * 1024
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def _per_event(name: str, documentation: str) -> Counter:
    return Counter(name, documentation, ["event"], registry=REGISTRY)


def _histogram(name: str, documentation: str, buckets: tuple[float, ...]) -> Histogram:
    return Histogram(name, documentation, ["event"], buckets=buckets, registry=REGISTRY)


RECORDS_CONSUMED = _per_event("loader_records_consumed", "Kafka records taken by the worker.")
BYTES_CONSUMED = _per_event("loader_bytes_consumed", "Bytes of Kafka record values taken by the worker.")
RECORDS_WRITTEN = _per_event("loader_records_written", "Rows in data files committed to S3.")
RECORDS_DEAD_LETTERED = _per_event(
    "loader_records_dead_lettered", "Records in dead-letter files committed to S3."
)
RECORDS_SKIPPED = Counter(
    "loader_records_skipped",
    "Records of a shared topic that this event type does not take, in files' ranges committed to S3: "
    "reason other_event (another spec's) or unmatched (no spec on the topic takes it).",
    ["event", "reason"],
    registry=REGISTRY,
)
FILES_WRITTEN = _per_event("loader_files_written", "Data files committed to S3.")
BYTES_WRITTEN = _per_event("loader_bytes_written", "Bytes of data files committed to S3.")
FILE_SIZE = _histogram(
    "loader_file_size_bytes",
    "Size of the data files committed to S3.",
    (64 * 1024, _MIB, 4 * _MIB, 16 * _MIB, 64 * _MIB, 128 * _MIB, 256 * _MIB),
)
FLUSH_DURATION = _histogram(
    "loader_flush_duration_seconds",
    "Time to finish a rolled file on local disk (last row group and dead letters).",
    _DURATION_BUCKETS,
)
UPLOAD_DURATION = _histogram(
    "loader_upload_duration_seconds",
    "Time to get a rolled file's objects into S3, retries included.",
    _DURATION_BUCKETS,
)
WORKER_STAGE_SECONDS = Counter(
    "loader_worker_stage_seconds",
    "Seconds the worker spent in each stage: fetch, join, decode, spool, parquet, upload, commit "
    "(stages run in different threads and overlap).",
    ["event", "stage"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "loader_consumer_lag_records",
    "Records in the partition not yet taken by the worker (highwater minus next offset); 0 once revoked.",
    ["event", "partition"],
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
BUFFER_MEMORY = Gauge(
    "loader_buffer_memory_bytes",
    "Bytes of open row groups and dead letters held in memory.",
    ["event"],
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
BUFFER_BUDGET = Gauge(
    "loader_buffer_memory_budget_bytes",
    "The memory budget buffers are rolled to stay under (a pool's processes each set their share).",
    ["event"],
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
ERRORS = Counter(
    "loader_errors",
    "Errors of Kafka, S3, SQS, Snowflake and the schema registry, by kind (error class or code).",
    ["event", "component", "kind"],
    registry=REGISTRY,
)
UNKNOWN_FIELDS = Counter(
    "loader_unknown_fields",
    "Rows written with a payload field the schema does not know (kept in _EXTRA), by field path.",
    ["event", "field"],
    registry=REGISTRY,
)
FILES_LOADED = _per_event("loader_files_loaded", "Files COPYed into the event's table.")
ROWS_LOADED = _per_event("loader_rows_loaded", "Rows COPYed into the event's table.")
LOAD_LATENCY = _histogram(
    "loader_load_latency_seconds",
    "From a file's S3 notification being sent to its COPY finishing.",
    (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
)
NEWEST_NAME = "loader_newest_created_at_seconds"
NEWEST_CREATED_AT = Gauge(
    NEWEST_NAME,
    "Unix time of the newest _CREATED_AT durable in S3 (where=s3) or queryable in the table (where=table).",
    ["event", "where"],
    multiprocess_mode="max",
    registry=REGISTRY,
)
FRESHNESS_NAME = "loader_freshness_seconds"
ROLLING_MAX_AGE = Gauge(
    "loader_rolling_max_age_seconds",
    "The spec's rolling.max_age_s: the freshness bound the freshness alerts add a margin to.",
    ["event"],
    multiprocess_mode="max",
    registry=REGISTRY,
)
READY_NAME = "loader_ready"
NOTIFICATIONS_QUEUED = Gauge(
    "loader_notifications_queued_messages",
    "Messages in the notifications queue (SQS's approximate counts, read by the loader's probe): "
    "state visible (waiting to be received) or in_flight (received, not yet deleted).",
    ["queue", "state"],
    multiprocess_mode="max",
    registry=REGISTRY,
)

# -- gateway (``loader gateway``) ------------------------------------------------------------------

GATEWAY_REQUESTS = Counter(
    "loader_gateway_requests",
    "HTTP requests to the event gateway, by API (events, rest_proxy) and status code.",
    ["api", "code"],
    registry=REGISTRY,
)
GATEWAY_RECORDS = Counter(
    "loader_gateway_records",
    "Records posted to the event gateway, by outcome: accepted (handed to the producer) or rejected.",
    ["event", "outcome"],
    registry=REGISTRY,
)
GATEWAY_REJECTED = Counter(
    "loader_gateway_rejected",
    "Records the gateway rejected, by reason: envelope, schema, not_taken (the spec's kafka.match "
    "would not take it), not_object, too_large, forbidden, undelivered (not acknowledged in time).",
    ["event", "reason"],
    registry=REGISTRY,
)
GATEWAY_PRODUCE_SECONDS = Histogram(
    "loader_gateway_produce_seconds",
    "Time from handing a request's records to the producer to their acknowledgement (async: buffering).",
    ["event"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
GATEWAY_IN_FLIGHT = Gauge(
    "loader_gateway_in_flight_records",
    "Records produced by the gateway and not yet acknowledged (or spilled), by Kafka cluster.",
    ["cluster"],
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
GATEWAY_ASYNC_FAILURES = Counter(
    "loader_gateway_async_failures",
    "Async-mode delivery attempts that failed (the record is retried until its deadline, then spilled).",
    ["event"],
    registry=REGISTRY,
)
GATEWAY_SPILLED = Counter(
    "loader_gateway_spilled",
    "Async-mode records not delivered by their deadline, written to the event's dead-letter area in S3.",
    ["event"],
    registry=REGISTRY,
)
GATEWAY_REJECT_REASONS = (
    "envelope",
    "schema",
    "not_taken",
    "not_object",
    "too_large",
    "forbidden",
    "undelivered",
)
"""The ``reason`` label values of ``loader_gateway_rejected_total`` (a fixed, bounded set)."""

# -- audit (``loader audit --pushgateway``, the chart's scheduled audit) ----------------------------

AUDIT_PROBLEMS = Gauge(
    "loader_audit_problems",
    "Gaps and mismatches the last `loader audit` found for the event type (0: complete).",
    ["event"],
    registry=REGISTRY,
    multiprocess_mode="max",
)
AUDIT_LAST_RUN = Gauge(
    "loader_audit_last_run_timestamp_seconds",
    "Unix time the last `loader audit` of the event type finished.",
    ["event"],
    registry=REGISTRY,
    multiprocess_mode="max",
)
AUDIT_JOB = "loader_audit"
"""The Pushgateway job the audit pushes to; each event type is its own group (``event`` label)."""


class _AuditOf:
    """The audit gauges' samples of one event type (what one Pushgateway group holds)."""

    def __init__(self, event: str) -> None:
        self.event = event

    def collect(self) -> Iterator[Metric]:
        names = ["loader_audit_problems", "loader_audit_last_run_timestamp_seconds"]
        for family in REGISTRY.restricted_registry(names).collect():
            family.samples = [s for s in family.samples if s.labels.get("event") == self.event]
            yield family


def push_audit(url: str, event: str, problems: int, *, timeout_s: float = 30.0) -> None:
    """Record an audit of ``event`` (``problems`` found, finished now) and push it to the
    Pushgateway at ``url``, replacing that event type's group only."""
    AUDIT_PROBLEMS.labels(event).set(problems)
    AUDIT_LAST_RUN.labels(event).set(time.time())
    push_to_gateway(url, AUDIT_JOB, _AuditOf(event), grouping_key={"event": event}, timeout=timeout_s)


class EventMetrics:
    """One event type's metrics, bound once (``labels`` is a locked lookup: not per batch)."""

    def __init__(self, event: str) -> None:
        self.event = event
        self.records_consumed = RECORDS_CONSUMED.labels(event)
        self.bytes_consumed = BYTES_CONSUMED.labels(event)
        self.records_written = RECORDS_WRITTEN.labels(event)
        self.records_dead_lettered = RECORDS_DEAD_LETTERED.labels(event)
        self._skipped: dict[str, Counter] = {}
        self.files_written = FILES_WRITTEN.labels(event)
        self.bytes_written = BYTES_WRITTEN.labels(event)
        self.file_size = FILE_SIZE.labels(event)
        self.flush_duration = FLUSH_DURATION.labels(event)
        self.upload_duration = UPLOAD_DURATION.labels(event)
        self.buffer_memory = BUFFER_MEMORY.labels(event)
        self.buffer_budget = BUFFER_BUDGET.labels(event)
        self.files_loaded = FILES_LOADED.labels(event)
        self.rows_loaded = ROWS_LOADED.labels(event)
        self.load_latency = LOAD_LATENCY.labels(event)
        self.rolling_max_age = ROLLING_MAX_AGE.labels(event)
        self._lag: dict[int, Gauge] = {}
        self._newest: dict[str, float] = {}
        self._unknown: dict[str, Counter] = {}
        self._stages: dict[str, Counter] = {}

    def lag(self, partition: int, records: int) -> None:
        """Set a partition's lag (0 when it is revoked: it is another member's now)."""
        gauge = self._lag.get(partition)
        if gauge is None:
            gauge = self._lag[partition] = CONSUMER_LAG.labels(self.event, str(partition))
        gauge.set(records)

    def stage_seconds(self, stage: str, seconds: float) -> None:
        """Add ``seconds`` to the time the worker spent in ``stage``."""
        counter = self._stages.get(stage)
        if counter is None:
            counter = self._stages[stage] = WORKER_STAGE_SECONDS.labels(self.event, stage)
        counter.inc(seconds)

    def records_skipped(self, reason: str, records: int) -> None:
        """Count records of a shared topic skipped (``reason``: other_event or unmatched)."""
        counter = self._skipped.get(reason)
        if counter is None:
            counter = self._skipped[reason] = RECORDS_SKIPPED.labels(self.event, reason)
        counter.inc(records)

    def newest_created_at(self, where: Literal["s3", "table"], unix_s: float) -> None:
        """Move the newest known ``_CREATED_AT`` forward (never back: a late file is not news)."""
        if unix_s > self._newest.get(where, float("-inf")):
            self._newest[where] = unix_s
            NEWEST_CREATED_AT.labels(self.event, where).set(unix_s)

    def error(self, component: Component, kind: str) -> None:
        count_error(self.event, component, kind)

    def unknown_fields(self, counts: Mapping[str, int]) -> None:
        """Count rows by unknown field path; past :data:`MAX_UNKNOWN_FIELDS` paths, as ``other``."""
        for path, count in counts.items():
            child = self._unknown.get(path)
            if child is None:
                label = path if len(self._unknown) < MAX_UNKNOWN_FIELDS else "other"
                child = UNKNOWN_FIELDS.labels(self.event, _FIELD_CHARS.sub("_", label)[:120])
                if label != "other":
                    self._unknown[path] = child
            child.inc(count)


_kinds: dict[str, set[str]] = {}
_kinds_lock = threading.Lock()
_KIND_CHARS = re.compile(r"[^A-Za-z0-9_.:-]")
_FIELD_CHARS = re.compile(r"[^A-Za-z0-9_.:\[\]$-]")


def count_error(event: str, component: Component, kind: str) -> None:
    """Count one error; ``kind`` is cleaned and capped per component (bounded cardinality)."""
    clean = _KIND_CHARS.sub("_", kind)[:64] or "unknown"
    with _kinds_lock:
        seen = _kinds.setdefault(component, set())
        if clean not in seen:
            if len(seen) >= MAX_ERROR_KINDS:
                clean = "other"
            else:
                seen.add(clean)
    ERRORS.labels(event, component, clean).inc()


def notifications_queued(queue: str, visible: int, in_flight: int) -> None:
    """Set the notifications queue's message counts (``queue``: its name, the URL's last part)."""
    NOTIFICATIONS_QUEUED.labels(queue, "visible").set(visible)
    NOTIFICATIONS_QUEUED.labels(queue, "in_flight").set(in_flight)


# -- serving ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadyProbe:
    """Whom ``loader_ready`` is about (a worker of ``event``, or the loader with ``event`` empty)
    and what tells whether it is ready: the same probe as its ``/readyz``."""

    role: Literal["worker", "loader"]
    event: str
    ready: Callable[[], bool]


class _WithFreshness:
    """The source's metrics plus ``loader_freshness_seconds`` and ``loader_ready``, derived when
    scraped."""

    def __init__(self, source: Collector, clock: Callable[[], float], probe: ReadyProbe | None) -> None:
        self._source = source
        self._clock = clock
        self._probe = probe

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        freshness = GaugeMetricFamily(
            FRESHNESS_NAME,
            "Seconds since the newest _CREATED_AT durable in S3 (where=s3) or queryable in the table "
            "(where=table); grows while nothing new arrives.",
            labels=["event", "where"],
        )
        for family in self._source.collect():
            yield family
            if family.name == NEWEST_NAME:
                for sample in family.samples:
                    freshness.add_metric(
                        [sample.labels["event"], sample.labels["where"]], max(0.0, now - sample.value)
                    )
        yield freshness
        ready = GaugeMetricFamily(
            READY_NAME,
            "1 while the process's /readyz answers ready, else 0; role worker (of event) or loader.",
            labels=["role", "event"],
        )
        if self._probe is not None:
            ready.add_metric([self._probe.role, self._probe.event], float(self._probe.ready()))
        yield ready


def exposition(
    multiprocess_dir: Path | None = None,
    *,
    clock: Callable[[], float] = time.time,
    ready: ReadyProbe | None = None,
) -> CollectorRegistry:
    """What ``/metrics`` serves: this process's metrics, or (``multiprocess_dir``) the
    merge of every pool child's, each with freshness derived at scrape time, and
    ``loader_ready`` from ``ready`` (none without it)."""
    source: Collector = (
        _multiprocess.MultiProcessCollector(None, str(multiprocess_dir))  # type: ignore[no-untyped-call]
        if multiprocess_dir is not None
        else REGISTRY
    )
    served = CollectorRegistry(auto_describe=False)
    served.register(_WithFreshness(source, clock, ready))
    return served


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format (content type :data:`CONTENT_TYPE`)."""
    return generate_latest(registry)


def enable_multiprocess(path: Path) -> None:
    """Switch this process (and the children it forks next) to multiprocess mode, writing to
    ``path``. Call before any labelled metric is used: values already created stay in-process."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    # prometheus_client picks its value class when imported; labelled children take it when
    # first used, so switching here is enough for every metric above (all are labelled).
    prometheus_client.values.ValueClass = prometheus_client.values.MultiProcessValue()  # type: ignore[no-untyped-call]


def mark_process_dead(pid: int, path: Path) -> None:
    """Drop a dead child's live gauges (lag, buffer memory) from the merge."""
    _multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
