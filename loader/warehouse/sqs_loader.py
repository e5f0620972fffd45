"""The SQS-triggered loader (``copy`` mode): notifications in, COPY statements out.

Long-polls the queue that receives the buckets' ObjectCreated notifications
(:mod:`loader.notify.queue`), maps each key to its event by prefix, batches
keys per event, COPYs them, and deletes a message only once every file it
names is loaded (or known loaded). While a COPY runs, the batch's messages
have their visibility extended so no other loader picks them up.

It outlives its services. Each failure is judged by the mark its boundary put
on it (:mod:`loader.store.aws`, :mod:`loader.warehouse.connection`):

- **Transient** (connection refused or reset, timeouts, throttling, 5xx of SQS
  or S3; Snowflake's network errors and statement timeouts): retried with
  capped backoff (:data:`RETRY_FIRST_S` doubling to :data:`RETRY_MAX_S`) for
  as long as it lasts. A batch whose load fails so is kept, still hidden, and
  loaded again once the service is back, so an outage costs a message no extra
  receive (the redrive policy counts receives). No new batch is received
  meanwhile: nothing could load it.
- **Configuration** (ends ``pipes run`` with a message, exit 2): the queue does
  not exist or refuses the loader (no such queue, not a queue URL, credentials
  unknown or wrongly signed, access or its KMS key denied); at start, an
  event's bucket that does not exist or refuses its listing; Snowflake refusing
  the login (any terminal error while connecting: account, user, credentials).
- **One event's problem** (its files stay unloaded and their notifications are
  left for the redrive policy; the loop goes on): no pipe recorded for it
  (``loader pipes apply``), a terminal error of its statements or objects (its
  table dropped, a privilege or an object denied), a file refused or failed.
- **A message that cannot be read** (not an S3 notification, whatever its body
  holds): logged with an excerpt, counted, left for the redrive policy.
- **A file of no event this loader loads** (a spec added after it started, or
  left out of its ``EVENTS``): logged with what to do, counted, and its message
  left for the redrive policy, never deleted: a restarted loader loads it, and
  until then it is in plain sight (the queue, then its dead-letter queue).
- **Anything else** (a bug, an error no boundary translated): logged with its
  traceback (``loop_failed``); the batch is left, and the loop goes on after a
  backoff.

``/readyz`` reports each service's latest answer (:mod:`loader.warehouse.readiness`),
from the loop's calls and from a probe per service.

Metrics (:mod:`loader.metrics`): files and rows loaded, load latency (from
the notification's ``SentTimestamp``, which S3 sets as the object is
created, to the end of its COPY), the newest ``_CREATED_AT`` queryable in each
table (re-read after loads and on a timer, never per scrape), the messages
waiting in the queue (read by the queue's readiness probe), and every failure
in ``loader_errors_total``: S3's per attempt, by event (:mod:`loader.store.s3`);
SQS's and Snowflake's as they reach the loader (after the client's own
retries; its probes' included), by event where a load of one event failed, else
with an empty ``event``; unreadable messages as ``component="sqs",
kind="unreadable_message"``, files of no loaded event as ``kind="unknown_event"``.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass, field
from textwrap import shorten
from typing import TypeVar

import botocore.exceptions
import structlog

from loader.config.settings import Settings
from loader.config.spec import EventSpec
from loader.errors import (
    ConfigError,
    LoaderError,
    NotAppliedError,
    ServiceError,
    StorageError,
    WarehouseError,
    excerpt,
)
from loader.metrics import EventMetrics, count_error, notifications_queued
from loader.notify.queue import NotificationQueue, Received
from loader.retry import Backoff
from loader.store.s3 import S3Store, attempt_error_kind
from loader.warehouse.connection import Warehouse
from loader.warehouse.freshness import newest_created_at_in_table
from loader.warehouse.load import REFUSED, load_files
from loader.warehouse.manager import recorded_pipe
from loader.warehouse.objects import EventObjects
from loader.warehouse.readiness import PROBE_INTERVAL_S, Readiness, Service, watch

__all__ = ["LoaderStats", "SqsLoader"]

log = structlog.get_logger("loader.pipes")

T = TypeVar("T")

PIPE_CACHE_S = 60.0
SHUTDOWN_GRACE_S = 10.0
"""How long a stop waits for the batch in flight before abandoning it (see ``serve``)."""
FRESHNESS_REFRESH_S = 30.0
"""Each table's newest ``_CREATED_AT`` is re-read at least this often..."""
FRESHNESS_AFTER_LOAD_S = 5.0
"""...and after a load, but not more often than this."""
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0
"""The pace of retries while a service is down: from RETRY_FIRST_S, doubling, capped here."""
PROBE_TIMEOUT_S = 5
"""Network and statement timeouts of the Snowflake probe's own session..."""
PROBE_LOGIN_TIMEOUT_S = 10
"""...and its login's (a real login may take seconds; it is redone only after a failure)."""
EXCERPT_CHARS = 200
"""The most of an unreadable message's body that is logged."""

_HINTS: dict[Service, str] = {
    "sqs": (
        "check the notifications queue URL (--queue-url or LOADER_AWS__NOTIFICATIONS_QUEUE_URL), the "
        "loader's AWS credentials, and its permissions (sqs:ReceiveMessage, sqs:DeleteMessage, "
        "sqs:ChangeMessageVisibility, sqs:GetQueueAttributes, and the queue's KMS key if it has one)"
    ),
    "s3": "check s3.bucket in the spec, and the loader's s3:ListBucket permission on its data prefix",
    "snowflake": "check LOADER_SNOWFLAKE__ACCOUNT, LOADER_SNOWFLAKE__USER and the login credentials",
}


RECENT_FILES = 1000
"""How many of the latest loaded and not-loaded files the stats keep: a loader runs for
months, and a flood of bad objects must not grow its memory."""


@dataclass
class LoaderStats:
    """Counts since start, and the latest files (:data:`RECENT_FILES`) by outcome."""

    messages: int = 0
    unreadable: int = 0
    unknown_event: int = 0
    """Notifications left because they name a file of no event this loader loads."""
    files_loaded: int = 0
    rows_loaded: int = 0
    files_skipped: int = 0
    failures: int = 0
    retries: int = 0
    """Calls retried because a service was down."""
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
    names_unknown_event: bool = False
    """It also names a file of no event this loader loads: never deleted."""


class _Stopped(Exception):  # noqa: N818 - a signal inside the loop, not an error
    """The stop event was set while a service was down: the loop ends, the batch comes back."""


def _warehouse_error_kind(exc: WarehouseError) -> str:
    """The connector's error code (or class) behind a translated error, for the metrics."""
    if exc.errno is not None:
        return str(exc.errno)
    return exc.origin or type(exc).__name__


def _error_kind(exc: LoaderError) -> str:
    """The metrics' ``kind`` of a translated error: Snowflake's code, AWS's error code (or
    ``connection``, ``timeout``, ``throttling``), else the error's class."""
    if isinstance(exc, WarehouseError):
        return _warehouse_error_kind(exc)
    cause = exc.__cause__
    if isinstance(cause, botocore.exceptions.ClientError):
        status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 400
        return attempt_error_kind(None, status, dict(cause.response)) or "ClientError"
    if cause is not None:
        return attempt_error_kind(cause, None, None) or type(cause).__name__
    return type(exc).__name__


def _service_of(exc: ServiceError) -> Service:
    return "snowflake" if isinstance(exc, WarehouseError) else "s3"


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
        probe_interval_s: float = PROBE_INTERVAL_S,
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
        self.readiness = Readiness()
        self._queue = NotificationQueue(
            settings.aws,
            url,
            visibility_timeout_s=visibility_timeout_s,
            wait_time_s=wait_time_s,
            on_error=lambda exc: count_error("", "sqs", _error_kind(exc)),
        )
        self._warehouse = Warehouse(settings.snowflake)
        self._stores: dict[str, S3Store] = {}
        self._objects = {spec.name: EventObjects.for_spec(spec, settings.snowflake) for spec in self.specs}
        self._pipes_checked: dict[str, float] = {}
        self.metrics = {spec.name: EventMetrics(spec.name) for spec in self.specs}
        for spec in self.specs:  # the table freshness alert's bound, where only the loader is scraped
            self.metrics[spec.name].rolling_max_age.set(spec.rolling.max_age_s)
        self._freshness_read: dict[str, float] = {}
        self._in_flight: dict[str, int] = {}
        """Files being loaded, by event (what a shutdown abandons)."""
        self._loaded_since_read: set[str] = set()
        self._probe_interval_s = probe_interval_s
        self._stop = threading.Event()
        """Set by the caller of :meth:`run` to end it (a retry waits on it)."""
        self._ended = threading.Event()

    def close(self) -> None:
        self._warehouse.close()

    def alive(self) -> bool:
        """Whether the loop still runs (``/healthz``): it ends only when stopped or misconfigured."""
        return not self._ended.is_set()

    def spec_for(self, bucket: str, key: str) -> EventSpec | None:
        """The event whose data prefix holds ``key`` (prefixes never nest, so at most one)."""
        for spec in self.specs:
            if spec.s3.bucket == bucket and key.startswith(spec.data_prefix):
                return spec
        return None

    # -- the loop ----------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> LoaderStats:
        """Poll and load until ``stop`` is set; a configuration error (ConfigError) ends it."""
        self._stop = stop
        log.info("loader_started", queue_url=self.queue_url, events=[spec.name for spec in self.specs])
        try:
            self._start()
            self._watch()
            backoff = self._backoff()
            while not stop.is_set():
                try:
                    self.poll_once()
                    self.refresh_freshness()
                except (ConfigError, _Stopped):
                    raise
                except Exception as exc:
                    # A bug, or an error no boundary translated: the batch stays on the queue (its
                    # redrive policy decides), the loop goes on.
                    self.stats.failures += 1
                    log.exception("loop_failed", error=str(exc), delay_s=round(backoff.next_s, 2))
                    if backoff.pause(stop):
                        break
                else:
                    backoff = self._backoff()
        except _Stopped:
            pass
        finally:
            self._ended.set()
        return self.stats

    def serve(self, stop: threading.Event, *, grace_s: float = SHUTDOWN_GRACE_S) -> bool:
        """:meth:`run` until ``stop`` is set, then wait at most ``grace_s`` for the batch in flight.

        The loop runs on a daemon thread, so a statement the warehouse never answers cannot
        hold a shutdown: returns False when that batch was abandoned. Its messages were not
        deleted, so they reappear after their visibility timeout, and a COPY that did finish
        is skipped then (Snowflake's load metadata). An error that ends the loop is raised
        (the loop has ended then)."""
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

    def poll_once(self) -> int:
        """Receive one batch of messages and load what they name; returns messages received."""
        messages = self._retrying("sqs", self._queue.receive)
        pending: list[_Pending] = []
        for message in messages:
            self.stats.messages += 1
            if message.notification.unreadable:
                self._unreadable(message)
                continue  # left for the redrive policy
            keys, unknown = [], False
            for bucket, key in message.notification.objects:
                spec = self.spec_for(bucket, key)
                if spec is None:
                    unknown = True
                    self._unknown_event(bucket, key)
                else:
                    keys.append((spec, key))
            pending.append(_Pending(message.receipt, keys, message.sent_s, unknown))
        if pending:
            self._load_and_delete(pending)
        return len(messages)

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

    # -- services: start, probes, retries ------------------------------------------------------------

    def _backoff(self) -> Backoff:
        return Backoff(RETRY_FIRST_S, RETRY_MAX_S, jitter=True)

    def _retrying(self, service: Service, call: Callable[[], T], *, answers: bool = True) -> T:
        """``call()``, retried while ``service`` fails transiently; a terminal failure is a
        configuration error. Raises _Stopped if stopped while retrying. ``answers``: whether a
        call that returns at once proves the service answers (a session kept open does not;
        one opened after failures does)."""
        backoff = self._backoff()
        failed = False
        while True:
            try:
                result = call()
            except ServiceError as exc:
                if not exc.transient:
                    self.readiness.failed(service, str(exc))
                    raise ConfigError(f"{exc}: {_HINTS[service]}") from None
                failed = True
                self._wait_for(service, exc, backoff)
            else:
                if answers or failed:
                    self.readiness.answered(service)
                return result

    def _wait_for(self, service: Service, exc: ServiceError, backoff: Backoff) -> None:
        """Report ``service`` down, then back off (raises _Stopped if stopped meanwhile)."""
        self.readiness.failed(service, str(exc))
        self.stats.retries += 1
        log.warning(
            "service_unavailable", service=service, error=str(exc), retry_in_s=round(backoff.next_s, 2)
        )
        if backoff.pause(self._stop):
            raise _Stopped

    def _start(self) -> None:
        """Reach every service once before loading: the queue, each event's data prefix, a
        Snowflake session. Retried while down; refused is a configuration error."""
        self._retrying("sqs", self._queue.check)
        self._retrying(
            "s3", lambda: self._check_buckets({spec.name: self._store(spec) for spec in self.specs})
        )
        self._retrying("snowflake", self._connect)

    def _connect(self) -> None:
        try:
            self._warehouse.connect()
        except WarehouseError as exc:
            count_error("", "snowflake", _warehouse_error_kind(exc))
            raise

    def _check_buckets(self, stores: dict[str, S3Store]) -> None:
        """Each event's bucket lists its data prefix (a missing bucket is a configuration error)."""
        for spec in self.specs:
            if not stores[spec.name].can_list(spec.data_prefix):
                raise StorageError(
                    f"bucket {spec.s3.bucket!r} of {spec.name} does not exist", transient=False
                )

    def _watch(self) -> None:
        """Start a probe per service (see :mod:`loader.warehouse.readiness`), each with clients of
        its own: a probe must answer quickly, whatever the loop is waiting for."""
        probe_settings = self.settings.snowflake.model_copy(
            update={
                "login_timeout_s": min(self.settings.snowflake.login_timeout_s, PROBE_LOGIN_TIMEOUT_S),
                "network_timeout_s": min(self.settings.snowflake.network_timeout_s, PROBE_TIMEOUT_S),
                "statement_timeout_s": PROBE_TIMEOUT_S,
            }
        )
        probe_warehouse = Warehouse(probe_settings)
        probe_stores = {
            spec.name: S3Store(
                self.settings.aws, spec.s3.bucket, metrics=self.metrics[spec.name], max_attempts=2
            )
            for spec in self.specs
        }

        def snowflake() -> None:
            try:
                probe_warehouse.execute("SELECT 1")
            except WarehouseError as exc:
                count_error("", "snowflake", _warehouse_error_kind(exc))
                raise

        interval = self._probe_interval_s
        watch(self.readiness, "sqs", self._probe_queue, self._stop, interval_s=interval)
        watch(
            self.readiness, "s3", lambda: self._check_buckets(probe_stores), self._stop, interval_s=interval
        )
        watch(
            self.readiness,
            "snowflake",
            snowflake,
            self._stop,
            interval_s=interval,
            finish=probe_warehouse.close,
        )

    def _probe_queue(self) -> None:
        """The queue answers, and how many notifications wait in it (the piling-up alert's metric)."""
        visible, in_flight = self._queue.depth()
        notifications_queued(self._queue.name, visible, in_flight)

    # -- messages and loads --------------------------------------------------------------------------

    def _unreadable(self, message: Received) -> None:
        self.stats.unreadable += 1
        count_error("", "sqs", "unreadable_message")
        log.warning(
            "notification_unreadable",
            reason=message.notification.unreadable,
            message_id=message.message_id,
            body=excerpt(message.body, EXCERPT_CHARS),
            body_chars=len(message.body),
        )

    def _unknown_event(self, bucket: str, key: str) -> None:
        self.stats.unknown_event += 1
        count_error("", "sqs", "unknown_event")
        log.warning(
            "notification_for_unknown_event",
            bucket=excerpt(bucket, EXCERPT_CHARS),
            key=excerpt(key, EXCERPT_CHARS),
            events=[spec.name for spec in self.specs],
            hint="no event this loader loads has this data prefix: if its spec was added since "
            "the loader started, restart `loader pipes run` (with the event among its EVENTS); "
            "the message is left for the queue's redrive policy",
        )

    def _load_and_delete(self, pending: list[_Pending]) -> None:
        by_event: dict[str, list[str]] = defaultdict(list)
        sent: dict[str, float] = {}
        for item in pending:
            for spec, key in item.keys:
                if key not in by_event[spec.name]:
                    by_event[spec.name].append(key)
                if item.sent_s is not None:
                    sent[key] = min(item.sent_s, sent.get(key, item.sent_s))
        with self._queue.hidden([p.receipt for p in pending]):
            done = self._load_all(by_event, sent)
        for item in pending:
            if not item.names_unknown_event and all(key in done for _, key in item.keys):
                self._retrying("sqs", functools.partial(self._queue.delete, item.receipt))

    def _load_all(self, by_event: dict[str, list[str]], sent: dict[str, float]) -> set[str]:
        """Load each event's files; an event whose load failed because a service is down is
        loaded again once it is back (capped backoff). The keys loaded now or before."""
        done: set[str] = set()
        waiting = dict(by_event)
        backoff = self._backoff()
        while True:
            failure: ServiceError | None = None
            for event_name, keys in list(waiting.items()):
                try:
                    done |= self._load(event_name, keys, sent)
                except ServiceError as exc:  # transient: _load handled every other failure
                    failure = exc
                else:
                    del waiting[event_name]
            if failure is None:
                return done
            self._wait_for(_service_of(failure), failure, backoff)

    def _load(self, event_name: str, keys: list[str], sent: dict[str, float]) -> set[str]:
        """COPY one event's files; the keys that are loaded now or were before. A transient
        failure of S3 or Snowflake is raised (to be retried); any other leaves the files."""
        objects = self._objects[event_name]
        metrics = self.metrics[event_name]
        # A session first (a no-op while one is open): a login refused, say after the password
        # was rotated, is a configuration error, not this event's problem.
        self._retrying("snowflake", self._connect, answers=False)
        self._in_flight[event_name] = len(keys)
        try:
            self._check_pipe_recorded(objects)
            results = load_files(self._warehouse, self._store(objects.spec), objects, keys)
        except LoaderError as exc:
            if isinstance(exc, WarehouseError):
                metrics.error("snowflake", _warehouse_error_kind(exc))
            elif isinstance(exc, NotAppliedError):
                metrics.error("snowflake", "not_applied")
            if isinstance(exc, ServiceError) and exc.transient:
                raise
            self.stats.failures += 1
            log.warning("load_failed", event_type=event_name, files=len(keys), error=str(exc))
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
