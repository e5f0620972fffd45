"""Listing an event's data files in S3, by the time partition their keys name.

Reconcile, replay, status and freshness all start from this listing; it needs
only S3 (never the warehouse or Kafka), so a command that reads files pulls in
no other service's client. The worker's recovery lists a partition's data and
dead-letter files when Kafka lost its position (:mod:`loader.checkpoint.recovery`).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from loader.config.spec import EventSpec
from loader.store.layout import parse_data_key, parse_key
from loader.store.s3 import ObjectInfo, S3Store

__all__ = ["data_files", "data_prefix_listing", "partition_keys"]


def data_files(
    store: S3Store, spec: EventSpec, since: datetime | None, until: datetime | None
) -> list[ObjectInfo]:
    """The event's data files whose time partition falls in [since, until), in key order."""
    return data_prefix_listing(store, spec, since, until)[0]


def data_prefix_listing(
    store: S3Store, spec: EventSpec, since: datetime | None, until: datetime | None
) -> tuple[list[ObjectInfo], list[str]]:
    """The data files of the range (see ``data_files``), and every key under the data prefix
    that is not a data file name of the event (never loaded, whatever its time)."""
    files, foreign = [], []
    for info in store.list_objects(spec.data_prefix):
        parsed = parse_data_key(spec, info.key)
        if parsed is None:
            foreign.append(info.key)
            continue
        if since is not None and parsed.time_partition < since:
            continue
        if until is not None and parsed.time_partition >= until:
            continue
        files.append(info)
    return files, foreign


def partition_keys(store: S3Store, spec: EventSpec, partitions: Collection[int]) -> dict[int, list[str]]:
    """Keys of the event's data and dead-letter files whose names say they hold records of
    ``partitions`` of its topic, by partition (whether to trust a name is the caller's call).

    A key starts with its time partition, so one partition's files are spread over every
    folder: rather than one request per folder and partition, this lists the two prefixes
    once for all the partitions asked about (one request per 1,000 objects)."""
    found: dict[int, list[str]] = {p: [] for p in partitions}
    for prefix in (spec.data_prefix, spec.dead_letter_prefix):
        for info in store.list_objects(prefix):
            parsed = parse_key(info.key)
            if parsed is not None and parsed.topic == spec.kafka.topic and parsed.partition in found:
                found[parsed.partition].append(info.key)
    return found
