"""The SQS-triggered loader (``copy`` mode): notifications in, COPY statements out.

Long-polls the queue that receives the buckets' ObjectCreated notifications
(:mod:`loader.notify.queue`), maps each key to its event by prefix, batches
keys per event, COPYs them, and deletes a message only once every file it
names is loaded (or known loaded). Messages it cannot read stay on the queue,
so the queue's redrive policy moves them to its dead-letter queue. While a
COPY runs, the batch's messages have their visibility extended so no other
loader picks them up.

Metrics (:mod:`loader.metrics`): files and rows loaded, load latency (from
the notification's ``SentTimestamp``, which S3 sets as the object is
created, to the end of its COPY), Snowflake errors by code, and the newest
``_CREATED_AT`` queryable in each table, re-read after loads and on a timer
(never per scrape).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import astuple, dataclass, field
from textwrap import shorten

import structlog

from loader.config.settings import Settings
from loader.config.spec import EventSpec
from loader.errors import ConfigError, LoaderError, NotAppliedError, WarehouseError
from loader.metrics import EventMetrics
from loader.notify.queue import NotificationQueue
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.freshness import newest_created_at_in_table
from loader.warehouse.load import REFUSED, load_files
from loader.warehouse.manager import recorded_pipe
from loader.warehouse.objects import EventObjects

__all__ = ["LoaderStats", "SqsLoader"]

log = structlog.get_logger("loader.pipes")

PIPE_CACHE_S = 60.0
SHUTDOWN_GRACE_S = 10.0
"""How long a stop waits for the batch in flight before abandoning it (see ``serve``)."""
FRESHNESS_REFRESH_S = 30.0
"""Each table's newest ``_CREATED_AT`` is re-read at least this often..."""
FRESHNESS_AFTER_LOAD_S = 5.0
"""...and after a load, but not more often than this."""


RECENT_FILES = 1000
"""How many of the latest loaded and not-loaded files the stats keep: a loader runs for
months, and a flood of bad objects must not grow its memory."""


@dataclass
class LoaderStats:
    """Counts since start, and the latest files (:data:`RECENT_FILES`) by outcome."""

    messages: int = 0
    files_loaded: int = 0
    rows_loaded: int = 0
    files_skipped: int = 0
    failures: int = 0
    loaded_keys: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT_FILES))
    not_loaded: dict[str, str] = field(default_factory=dict)
    """Files refused or failed (their notifications left for the redrive policy), and why."""

    def record_not_loaded(self, key: str, reason: str) -> None:
        self.not_loaded.pop(key, None)
        self.not_loaded[key] = reason
        if len(self.not_loaded) > RECENT_FILES:
            del self.not_loaded[next(iter(self.not_loaded))]


@dataclass
class _Pending:
    receipt: str
    keys: list[tuple[EventSpec, str]]
    sent_s: float | None
    """When SQS received the notification (Unix time), for the load latency."""


def _warehouse_error_kind(exc: WarehouseError) -> str:
    """The connector's error code (or class) behind a translated error, for the metrics."""
    if exc.errno is not None:
        return str(exc.errno)
    return exc.origin or type(exc).__name__


class SqsLoader:
    """Loads every file the notifications name into its event's table."""

    def __init__(
        self,
        settings: Settings,
        specs: Sequence[EventSpec],
        *,
        queue_url: str | None = None,
        visibility_timeout_s: int = 120,
        wait_time_s: int = 5,
    ) -> None:
        url = queue_url or settings.aws.notifications_queue_url
        if not url:
            raise ConfigError(
                "no notifications queue: set LOADER_AWS__NOTIFICATIONS_QUEUE_URL (the SQS queue that "
                "receives the buckets' ObjectCreated notifications)"
            )
        self.queue_url = url
        self.settings = settings
        self.specs = list(specs)
        self.stats = LoaderStats()
        self._queue = NotificationQueue(
            settings.aws, url, visibility_timeout_s=visibility_timeout_s, wait_time_s=wait_time_s
        )
        self._warehouse = Warehouse(settings.snowflake)
        self._stores: dict[str, S3Store] = {}
        self._objects = {spec.name: EventObjects.for_spec(spec, settings.snowflake) for spec in self.specs}
        self._pipes_checked: dict[str, float] = {}
        self.metrics = {spec.name: EventMetrics(spec.name) for spec in self.specs}
        self._freshness_read: dict[str, float] = {}
        self._in_flight: dict[str, int] = {}
        """Files being loaded, by event (what a shutdown abandons)."""
        self._loaded_since_read: set[str] = set()

    def close(self) -> None:
        self._warehouse.close()

    def spec_for(self, bucket: str, key: str) -> EventSpec | None:
        """The event whose data prefix holds ``key`` (prefixes never nest, so at most one)."""
        for spec in self.specs:
            if spec.s3.bucket == bucket and key.startswith(spec.data_prefix):
                return spec
        return None

    def run(self, stop: threading.Event) -> LoaderStats:
        """Poll and load until ``stop`` is set."""
        log.info("loader_started", queue_url=self.queue_url, events=[spec.name for spec in self.specs])
        while not stop.is_set():
            self.poll_once()
            self.refresh_freshness()
        return self.stats

    def serve(self, stop: threading.Event, *, grace_s: float = SHUTDOWN_GRACE_S) -> bool:
        """:meth:`run` until ``stop`` is set, then wait at most ``grace_s`` for the batch in flight.

        The loop runs on a daemon thread, so a statement the warehouse never answers cannot
        hold a shutdown: returns False when that batch was abandoned. Its messages were not
        deleted, so they reappear after their visibility timeout, and a COPY that did finish
        is skipped then (Snowflake's load metadata). An error that ends the loop is raised."""
        failure: list[BaseException] = []

        def loop() -> None:
            try:
                self.run(stop)
            except BaseException as exc:  # handed to the caller's thread below
                failure.append(exc)
                stop.set()

        thread = threading.Thread(target=loop, name="sqs-loader", daemon=True)
        thread.start()
        # Polled, not stop.wait(): a signal handler that sets the event could otherwise find
        # its lock held by this very thread.
        while not stop.is_set():
            time.sleep(0.2)
        thread.join(grace_s)
        if failure:
            raise failure[0]
        if thread.is_alive():
            log.warning("shutdown_abandoned_batch", grace_s=grace_s, in_flight=self._in_flight)
            return False
        log.info("loader_stopped", **{k: v for k, v in vars(self.stats).items() if isinstance(v, int)})
        return True

    def refresh_freshness(self) -> None:
        """Re-read the newest ``_CREATED_AT`` of the tables that are due (see the constants)."""
        now = time.monotonic()
        for name, objects in self._objects.items():
            since = now - self._freshness_read.get(name, float("-inf"))
            loaded = name in self._loaded_since_read
            if since < FRESHNESS_REFRESH_S and not (loaded and since >= FRESHNESS_AFTER_LOAD_S):
                continue
            self._freshness_read[name] = now
            self._loaded_since_read.discard(name)
            try:
                newest = newest_created_at_in_table(self._warehouse, objects)
            except WarehouseError as exc:
                self.metrics[name].error("snowflake", _warehouse_error_kind(exc))
                log.warning("freshness_unknown", event_type=name, error=str(exc))
                continue
            if newest is not None:
                self.metrics[name].newest_created_at("table", newest.timestamp())

    def poll_once(self) -> int:
        """Receive one batch of messages and load what they name; returns messages received."""
        messages = self._queue.receive()
        pending: list[_Pending] = []
        for message in messages:
            self.stats.messages += 1
            note = message.notification
            if note.unreadable:
                log.warning("notification_unreadable", reason=note.unreadable, message_id=message.message_id)
                continue  # left for the redrive policy
            keys = []
            for bucket, key in note.objects:
                spec = self.spec_for(bucket, key)
                if spec is None:
                    log.info("notification_ignored", bucket=bucket, key=key)
                else:
                    keys.append((spec, key))
            pending.append(_Pending(message.receipt, keys, message.sent_s))
        if pending:
            self._load_and_delete(pending)
        return len(messages)

    def _load_and_delete(self, pending: list[_Pending]) -> None:
        by_event: dict[str, list[str]] = defaultdict(list)
        sent: dict[str, float] = {}
        for item in pending:
            for spec, key in item.keys:
                if key not in by_event[spec.name]:
                    by_event[spec.name].append(key)
                if item.sent_s is not None:
                    sent[key] = min(item.sent_s, sent.get(key, item.sent_s))
        done: set[str] = set()
        with self._queue.hidden([p.receipt for p in pending]):
            for event_name, keys in by_event.items():
                done |= self._load(event_name, keys, sent)
        for item in pending:
            if all(key in done for _, key in item.keys):
                self._queue.delete(item.receipt)

    def _load(self, event_name: str, keys: list[str], sent: dict[str, float]) -> set[str]:
        """COPY one event's files; the keys that are loaded now or were before."""
        objects = self._objects[event_name]
        metrics = self.metrics[event_name]
        self._in_flight[event_name] = len(keys)
        try:
            self._check_pipe_recorded(objects)
            results = load_files(self._warehouse, self._store(objects.spec), objects, keys)
        except LoaderError as exc:
            self.stats.failures += 1
            if isinstance(exc, WarehouseError):
                metrics.error("snowflake", _warehouse_error_kind(exc))
            log.warning(
                "load_failed", event_type=event_name, files=len(keys), error=str(exc), transient=exc.transient
            )
            return set()
        finally:
            del self._in_flight[event_name]
        finished = time.time()
        done: set[str] = set()
        for result in results:
            if not result.done:
                # Its notification stays for the redrive policy; load_files logged the reason.
                self.stats.failures += 1
                self.stats.record_not_loaded(result.key, f"{result.status}: {result.error}")
                if result.status == REFUSED:
                    metrics.error("s3", "refused_object")
                else:
                    metrics.error("snowflake", result.status)
                continue
            done.add(result.key)
            if result.status == "LOADED":
                self.stats.files_loaded += 1
                self.stats.rows_loaded += result.rows_loaded
                self.stats.loaded_keys.append(result.key)
                self._loaded_since_read.add(event_name)
                metrics.files_loaded.inc()
                metrics.rows_loaded.inc(result.rows_loaded)
                if result.key in sent:
                    metrics.load_latency.observe(max(0.0, finished - sent[result.key]))
            else:
                self.stats.files_skipped += 1
            log.info(
                "file_loaded",
                event_type=event_name,
                key=result.key,
                status=result.status,
                rows=result.rows_loaded,
            )
        return done

    def _check_pipe_recorded(self, objects: EventObjects) -> None:
        """Load only through a pipe that ``pipes apply`` recorded for the spec as it is now.

        ``LOADER_PIPES`` holds the pipe's parameters and the COPY is built from the spec, so a
        row changed by hand is refused, never run. Re-checked at most once a minute, so that
        an apply is picked up without a restart."""
        checked = self._pipes_checked.get(objects.pipe_name)
        if checked is not None and time.monotonic() - checked < PIPE_CACHE_S:
            return
        try:
            recorded = recorded_pipe(self._warehouse, objects)
        except WarehouseError as exc:
            if exc.transient:
                raise
            recorded = None  # no LOADER_PIPES yet, or one of the older shape
        name = objects.spec.name
        if recorded is None:
            raise NotAppliedError(f"no pipe recorded for {name}: run `loader pipes apply {name}`")
        wanted = objects.pipe_record()
        if recorded != wanted:
            differences = ", ".join(
                f"{field_name} {shorten(str(have), 80)!r} (spec: {want!r})"
                for field_name, have, want in zip(
                    ("table", "stage", "file format", "on_error"),
                    astuple(recorded),
                    astuple(wanted),
                    strict=True,
                )
                if have != want
            )
            raise NotAppliedError(
                f"the pipe recorded for {name} in LOADER_PIPES is not what its spec implies: {differences}; "
                f"run `loader pipes apply {name}`"
            )
        self._pipes_checked[objects.pipe_name] = time.monotonic()

    def _store(self, spec: EventSpec) -> S3Store:
        """The event's store (its S3 errors are counted under its name)."""
        if spec.name not in self._stores:
            self._stores[spec.name] = S3Store(
                self.settings.aws, spec.s3.bucket, metrics=self.metrics[spec.name]
            )
        return self._stores[spec.name]
