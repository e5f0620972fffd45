"""The gateway's ``/readyz``: ready only once every Kafka cluster has proved it takes records.

A cold pod must not take traffic. A cluster counts as ready when a fresh metadata request
answered and holds every topic the specs produce to there, and a canary record was
produced to the canary topic and acknowledged (acks=all, like every record). The check is
repeated (:data:`CHECK_INTERVAL_S`), so a cluster lost later turns ``/readyz`` 503 again.
A producer's metadata comes from its cache; only a request of its own shows the cluster
answers now, hence :meth:`~aiokafka.client.AIOKafkaClient.fetch_all_metadata`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterable
from typing import Any

import aiokafka.errors

from loader.errors import clip

__all__ = ["CHECK_INTERVAL_S", "CHECK_TIMEOUT_S", "NOT_CHECKED", "Readiness", "check_cluster"]

CHECK_INTERVAL_S = 30.0
"""How often a ready cluster is checked again."""
RECHECK_S = 2.0
"""How often a cluster that is not ready is checked again (a cold pod turns ready soon)."""
CHECK_TIMEOUT_S = 10.0
"""The longest one step of a check (metadata, canary acknowledgement) may take."""
NOT_CHECKED = "not checked yet"
REASON_CHARS = 300


class Readiness:
    """The latest check of every cluster: written by the check loop, read by ``/readyz``
    (which may serve from another thread)."""

    def __init__(self, clusters: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._down: dict[str, dict[str, str]] = {c: {f"kafka:{c}": NOT_CHECKED} for c in clusters}

    def report(self, cluster: str, problems: dict[str, str]) -> None:
        """Replace what is known of ``cluster`` by ``problems`` (empty: ready)."""
        with self._lock:
            self._down[cluster] = dict(problems)

    def ready(self, cluster: str) -> bool:
        with self._lock:
            return not self._down[cluster]

    def down(self) -> dict[str, str]:
        """What keeps the gateway from taking traffic, by what is down; empty when ready."""
        with self._lock:
            return {what: why for problems in self._down.values() for what, why in problems.items()}


async def check_cluster(
    producer: Any,
    cluster: str,
    topics: Iterable[str],
    canary_topic: str,
    *,
    timeout_s: float = CHECK_TIMEOUT_S,
) -> dict[str, str]:
    """What is wrong with ``cluster`` (empty: ready), checked with its started ``producer``
    (an :class:`~aiokafka.AIOKafkaProducer`): fresh metadata with every topic, then a canary
    record acknowledged on ``canary_topic``."""
    try:
        async with asyncio.timeout(timeout_s):
            metadata = await producer.client.fetch_all_metadata()
    except (aiokafka.errors.KafkaError, TimeoutError) as exc:
        return {f"kafka:{cluster}": _why("no metadata from the cluster", exc, timeout_s)}
    problems = {
        f"topic:{topic}": f"topic {topic} is not on Kafka cluster {cluster}: create it (on the dev stack, "
        "`loader dev provision` does)"
        for topic in sorted(set(topics))
        if not metadata.partitions_for_topic(topic)
    }
    if canary_topic not in metadata.topics():
        problems[f"canary:{cluster}"] = (
            f"canary topic {canary_topic} is not on Kafka cluster {cluster}: create it (1 partition), or set "
            "LOADER_GATEWAY__CANARY_TOPIC to one that exists (on the dev stack, `loader dev provision` does)"
        )
        return problems
    value = json.dumps({"canary": "loader-gateway", "at_ms": int(time.time() * 1000)}).encode()
    present = [t for t in set(topics) if f"topic:{t}" not in problems]
    what = f"canary record on {canary_topic} not acknowledged"
    try:
        async with asyncio.timeout(timeout_s):
            for topic in present:  # the producer's own metadata, so that the first sends need not wait
                await producer.partitions_for(topic)
            acked = await producer.send(canary_topic, value)
        done, _ = await asyncio.wait([acked], timeout=timeout_s)  # never cancels the record's future
        if done:
            acked.result()
    except (aiokafka.errors.KafkaError, TimeoutError) as exc:
        problems[f"canary:{cluster}"] = _why(what, exc, timeout_s)
        return problems
    if not done:
        problems[f"canary:{cluster}"] = f"{what} within {timeout_s:g} s"
    return problems


def _why(what: str, exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"{what} within {timeout_s:g} s"
    return clip(f"{what}: {type(exc).__name__}: {exc}", REASON_CHARS)
