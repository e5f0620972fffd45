"""The garbage collector's settings for the long-running services (worker, gateway).

Their work makes many short-lived, acyclic objects (a record, a request) that
reference counting frees: collections are pure overhead for them. Two changes,
measured in the benchmarks:

- Everything loaded at start (modules, clients) lives as long as the process.
  ``gc.freeze()`` puts it out of the collector's sight, so a full collection
  walks only what the work made (in the gateway, full collections had paused
  every request 50-70 ms; in the worker, collections took a tenth of its stage
  time in a busy benchmark run, and none measurable after, see
  ``loader_worker_stage_seconds_total{stage="gc"}``).
- The youngest generation is collected every :data:`YOUNG_THRESHOLD`
  allocations instead of 700: a fetched batch's records die before a
  collection sees them, rather than being walked and promoted while in use.
  Reference cycles are still collected, just later.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "settle"]

YOUNG_THRESHOLD = 50_000


def settle() -> None:
    """Call once the service has started: collect, freeze what is there, collect less often."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
