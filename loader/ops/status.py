"""What ``loader status`` reports for one event type, gathered from Kafka, S3 and Snowflake.

Each source is asked on its own, and one that fails (the warehouse is down,
the broker is unreachable) leaves its fields empty with a short reason under
``unavailable``; the other sources still report. Nothing here retries: a
status command answers now, with what it can reach.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from loader.checkpoint.committer import Committed, Committer
from loader.config.settings import KafkaSettings, Settings
from loader.config.spec import EventSpec
from loader.consume.errors import kafka_errors
from loader.consume.kafka import client_kwargs
from loader.errors import KafkaError, LoaderError, WarehouseError
from loader.ops.dead_letters import summarize_dead_letters
from loader.ops.freshness import newest_created_at_in_s3
from loader.ops.pipe_status import pipe_status
from loader.retry import Backoff
from loader.store.listing import data_files
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.freshness import missing_object, newest_created_at_in_table
from loader.warehouse.objects import EventObjects

__all__ = ["EventStatus", "PartitionLag", "consumer_lag", "event_status", "gather_status", "partition_lags"]

KAFKA_TIMEOUT_S = 15.0
"""How long the lag query may take before Kafka is reported unavailable."""
STATUS_S3_ATTEMPTS = 2
"""Tries per S3 request: a status answers now (the workers' 8 tries take 7 s against a dead S3)."""


@dataclass(frozen=True)
class PartitionLag:
    """One partition's position: records after the committed offset are not yet in S3."""

    partition: int
    end_offset: int
    committed: int | None
    lag: int


@dataclass
class EventStatus:
    """One event type's pipeline, end to end. None means unknown: see ``unavailable``."""

    event: str
    topic: str = ""
    takes: str = ""
    """Which of the topic's records are this event type's (``kafka.match``)."""
    shared_with: list[str] = field(default_factory=list)
    """The other event types reading the topic, with what each takes (empty: not shared)."""
    lag: int | None = None
    lag_by_partition: list[PartitionLag] | None = None
    last_file: str | None = None
    last_file_time: datetime | None = None
    files_in_s3: int | None = None
    files_not_loaded: int | None = None
    """Staged within the load history's reach (14 days) and not loaded."""
    files_unknown: int | None = None
    """Not in the load history, which cannot tell whether they loaded (see ``PipeStatus``)."""
    last_load_time: str | None = None
    load_history: str | None = None
    """Where loads were read: COPY_HISTORY, or LOAD_HISTORY where that is unavailable."""
    load_history_note: str | None = None
    """Why LOAD_HISTORY was read and what it cannot show."""
    dead_letters: int | None = None
    freshness_table_s: float | None = None
    freshness_s3_s: float | None = None
    unavailable: dict[str, str] = field(default_factory=dict)
    """Source (``kafka``, ``s3``, ``warehouse``) -> why it could not be asked."""

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "topic": self.topic,
            "takes": self.takes,
            "shared_with": self.shared_with,
            "lag": self.lag,
            "lag_by_partition": None
            if self.lag_by_partition is None
            else {str(p.partition): p.lag for p in self.lag_by_partition},
            "last_file": self.last_file,
            "last_file_time": self.last_file_time.isoformat() if self.last_file_time else None,
            "files_in_s3": self.files_in_s3,
            "files_not_loaded": self.files_not_loaded,
            "files_unknown": self.files_unknown,
            "last_load_time": self.last_load_time,
            "load_history": self.load_history,
            "load_history_note": self.load_history_note,
            "dead_letters": self.dead_letters,
            "freshness_table_s": self.freshness_table_s,
            "freshness_s3_s": self.freshness_s3_s,
            "unavailable": self.unavailable,
        }


def partition_lags(
    end: dict[int, int], beginning: dict[int, int], committed: dict[int, int | None]
) -> list[PartitionLag]:
    """Lag per partition: end - committed, counted from the earliest offset where nothing is committed.

    A committed offset below the earliest (records deleted by retention) counts from the earliest too.
    """
    lags = []
    for partition in sorted(end):
        position = committed.get(partition)
        start = max(position if position is not None else 0, beginning.get(partition, 0))
        lags.append(PartitionLag(partition, end[partition], position, max(0, end[partition] - start)))
    return lags


async def _committed(committer: Committer, tps: list[TopicPartition]) -> dict[TopicPartition, Committed]:
    # A new broker creates its offsets topic on the first group lookup: the coordinator may
    # answer "not available" for a moment. The caller's timeout bounds the retries.
    backoff = Backoff(first_s=0.2, max_s=2.0)
    while True:
        try:
            return await committer.fetch(tps)
        except KafkaError as exc:
            if not exc.transient:
                raise
            await backoff.wait()


async def consumer_lag(spec: EventSpec, settings: KafkaSettings) -> list[PartitionLag]:
    """The event's consumer-group lag per partition, as the worker reads (committed data only)."""
    kwargs = client_kwargs(spec, settings)
    admin = AIOKafkaAdminClient(**kwargs, request_timeout_ms=int(KAFKA_TIMEOUT_S * 1000))
    consumer = AIOKafkaConsumer(
        **kwargs,
        enable_auto_commit=False,
        isolation_level="read_committed",
        request_timeout_ms=int(KAFKA_TIMEOUT_S * 1000),
    )
    try:
        async with asyncio.timeout(KAFKA_TIMEOUT_S):
            with kafka_errors(f"cannot read offsets of {spec.kafka.topic}"):
                await admin.start()
                await consumer.start()
                # Listed first: describing a missing topic could create it on a broker that auto-creates.
                if spec.kafka.topic not in await admin.list_topics():
                    raise KafkaError(f"topic {spec.kafka.topic} does not exist", transient=False)
                (described,) = await admin.describe_topics([spec.kafka.topic])
                tps = sorted(
                    TopicPartition(spec.kafka.topic, p["partition"]) for p in described["partitions"]
                )
                end = await consumer.end_offsets(tps)
                beginning = await consumer.beginning_offsets(tps)
                committed = await _committed(Committer(consumer, admin, spec.consumer_group), tps)
    except TimeoutError:
        raise KafkaError(f"no answer from Kafka within {KAFKA_TIMEOUT_S:.0f} s") from None
    finally:
        await consumer.stop()
        await admin.close()
    return partition_lags(
        {tp.partition: n for tp, n in end.items()},
        {tp.partition: n for tp, n in beginning.items()},
        {tp.partition: c.offset for tp, c in committed.items()},
    )


def _reason(exc: Exception) -> str:
    """A one-line reason: the first line of a loader error, or the exception's type otherwise."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _age_s(now: datetime, moment: datetime | None) -> float | None:
    return None if moment is None else round((now - moment).total_seconds(), 3)


def _kafka(status: EventStatus, spec: EventSpec, settings: Settings) -> None:
    lags = asyncio.run(consumer_lag(spec, settings.kafka))
    status.lag_by_partition = lags
    status.lag = sum(p.lag for p in lags)


def _s3(status: EventStatus, spec: EventSpec, store: S3Store, now: datetime) -> None:
    files = data_files(store, spec, None, None)
    status.files_in_s3 = len(files)
    if files:
        newest = max(files, key=lambda info: (info.last_modified or now, info.key))
        status.last_file, status.last_file_time = newest.key, newest.last_modified
    status.dead_letters = summarize_dead_letters(spec, store, samples=0).records
    status.freshness_s3_s = _age_s(now, newest_created_at_in_s3(store, files))


def _warehouse(
    status: EventStatus, warehouse: Warehouse, store: S3Store, objects: EventObjects, now: datetime
) -> None:
    status.freshness_table_s = _age_s(now, newest_created_at_in_table(warehouse, objects))
    try:
        pipe = pipe_status(warehouse, store, objects)
    except WarehouseError as exc:
        if not missing_object(exc):
            raise
        status.files_not_loaded = status.files_in_s3  # no table yet: nothing is loaded
        return
    status.files_not_loaded, status.files_unknown = pipe.files_pending, pipe.files_unknown
    status.last_load_time = pipe.last_load_time
    status.load_history, status.load_history_note = pipe.history, pipe.history_note


def event_status(
    spec: EventSpec, settings: Settings, warehouse: Warehouse, *, now: datetime, down: dict[str, str]
) -> EventStatus:
    """Ask Kafka, S3 and the warehouse about ``spec``; each may fail without the others.

    ``down`` remembers services that failed transiently (unreachable), so the next event
    types report them at once instead of waiting for the same timeout again.
    """
    status = EventStatus(
        event=spec.name, topic=spec.kafka.topic, takes=spec.takes, shared_with=spec.shared_with
    )
    store = S3Store(settings.aws, spec.s3.bucket, max_attempts=STATUS_S3_ATTEMPTS)
    objects = EventObjects.for_spec(spec, settings.snowflake)
    sources: dict[str, tuple[str, Callable[[], None]]] = {
        "kafka": (f"kafka:{spec.kafka.cluster}", lambda: _kafka(status, spec, settings)),
        "s3": ("s3", lambda: _s3(status, spec, store, now)),
        "warehouse": ("warehouse", lambda: _warehouse(status, warehouse, store, objects, now)),
    }
    for source, (service, ask) in sources.items():
        if service in down:
            status.unavailable[source] = down[service]
            continue
        try:
            ask()
        except LoaderError as exc:
            status.unavailable[source] = _reason(exc)
            if exc.transient:
                down[service] = status.unavailable[source]
    return status


def gather_status(
    specs: list[EventSpec], settings: Settings, *, now: datetime | None = None
) -> list[EventStatus]:
    """The status of every event type in ``specs``, in their order."""
    now = now or datetime.now(UTC)
    down: dict[str, str] = {}
    with Warehouse(settings.snowflake) as warehouse:
        return [event_status(spec, settings, warehouse, now=now, down=down) for spec in specs]
