"""The metric names the code exports: what an alerting rule or a dashboard may query."""

from __future__ import annotations

from loader.metrics import exposition

_SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count"),
}


def exported_metric_names() -> set[str]:
    """Every sample name ``/metrics`` serves: loader.metrics' REGISTRY (a counter as
    ``<name>_total``, a histogram as ``<name>_bucket``/``_sum``/``_count``) and the
    metrics derived at scrape time (freshness, readiness)."""
    names: set[str] = set()
    for family in exposition().collect():
        names.update(family.name + suffix for suffix in _SAMPLE_SUFFIXES.get(family.type, ("",)))
    return names
