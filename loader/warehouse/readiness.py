"""What the SQS loader's services answered last: the answer of its ``/readyz``.

The loader needs three services: its notifications queue (``sqs``), its events'
buckets (``s3``) and Snowflake (``snowflake``). Two sources report on them:

- the loader's own calls: a failure marks the service down, with the error as
  the reason; a call that succeeds marks it up;
- a probe per service on a thread of its own (:func:`watch`), every
  :data:`PROBE_INTERVAL_S`, with a cheap call of its own: the loader's calls may
  sit inside a client's retries for minutes (the Snowflake connector retries a
  statement on a cut connection for as long as its network timeout), or there
  may be nothing to load and so no call at all.

The latest report wins. A probe that has not answered for :data:`STUCK_AFTER_S`
counts as a failure (a service that accepts connections and never answers), and
a service not reported yet is down ("not checked yet"): the loader is ready once
every service has answered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from loader.errors import LoaderError, clip

__all__ = [
    "PROBE_INTERVAL_S",
    "SERVICES",
    "STUCK_AFTER_S",
    "Readiness",
    "ReadinessReport",
    "Service",
    "watch",
]

log = structlog.get_logger("loader.pipes")

Service = Literal["sqs", "s3", "snowflake"]
SERVICES: tuple[Service, ...] = ("sqs", "s3", "snowflake")
PROBE_INTERVAL_S = 5.0
"""How often each service is probed (a queue attribute, a bucket listing, ``SELECT 1``)."""
STUCK_AFTER_S = 15.0
"""A probe without an answer for this long reports its service down."""
REASON_CHARS = 300
"""The most of an error that ``/readyz`` quotes."""
NOT_CHECKED = "not checked yet"


@dataclass(frozen=True)
class ReadinessReport:
    """Whether every service answers, and for each one that does not, why."""

    ready: bool
    down: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"ready": self.ready, "down": self.down}


class Readiness:
    """The latest word on each service; written by the loader's threads, read by ``/readyz``."""

    def __init__(self, *, stuck_after_s: float = STUCK_AFTER_S, clock: Callable[[], float] = time.monotonic):
        self._stuck_after_s = stuck_after_s
        self._clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._down: dict[Service, tuple[str, float]] = dict.fromkeys(SERVICES, (NOT_CHECKED, now))
        """Each service down: why, and since when."""
        self._probing: dict[Service, float] = {}

    def answered(self, service: Service) -> None:
        """``service`` answered a call."""
        with self._lock:
            was = self._down.pop(service, None)
        if was is not None and was[0] != NOT_CHECKED:
            log.info("service_up", service=service, down_for_s=round(self._clock() - was[1], 1))

    def failed(self, service: Service, reason: str) -> None:
        """A call to ``service`` failed for ``reason`` (an error message, clipped here)."""
        reason = clip(reason, REASON_CHARS)
        with self._lock:
            was = self._down.get(service)
            self._down[service] = (reason, self._clock() if was is None else was[1])
        if was is None or was[0] == NOT_CHECKED:
            log.warning("service_down", service=service, reason=reason)

    @contextmanager
    def probing(self, service: Service) -> Iterator[None]:
        """Report the outcome of the block, a probe of ``service``; while it runs, it counts
        as stuck after :data:`STUCK_AFTER_S`. Errors are reported, then raised."""
        with self._lock:
            self._probing[service] = self._clock()
        try:
            yield
        except LoaderError as exc:
            self.failed(service, str(exc))
            raise
        except Exception as exc:
            self.failed(service, f"{type(exc).__name__}: {exc}")
            raise
        else:
            self.answered(service)
        finally:
            with self._lock:
                self._probing.pop(service, None)

    def report(self) -> ReadinessReport:
        now = self._clock()
        with self._lock:
            down = {service: reason for service, (reason, _) in self._down.items()}
            for service, started in self._probing.items():
                if service not in down and now - started > self._stuck_after_s:
                    down[service] = f"no answer to a probe for {now - started:.0f} s"
        return ReadinessReport(ready=not down, down=dict(sorted(down.items())))


def watch(
    readiness: Readiness,
    service: Service,
    check: Callable[[], object],
    stop: threading.Event,
    *,
    interval_s: float = PROBE_INTERVAL_S,
    finish: Callable[[], None] | None = None,
) -> threading.Thread:
    """Probe ``service`` with ``check`` every ``interval_s`` on a daemon thread until ``stop``
    is set, then call ``finish`` there (the probe's own client is closed by its thread)."""

    def probe() -> None:
        try:
            while not stop.wait(interval_s):
                try:
                    with readiness.probing(service):
                        check()
                except Exception:  # noqa: S112 - reported to readiness: the next probe is the retry
                    continue
        finally:
            if finish is not None:
                finish()

    thread = threading.Thread(target=probe, name=f"probe-{service}", daemon=True)
    thread.start()
    return thread
