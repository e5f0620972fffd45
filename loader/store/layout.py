"""Where files live in S3: keys derived only from the data they hold.

A data file's key names the event (through the spec's prefix), the time
partition of its first record's Kafka timestamp, the topic, the partition
and the first and last offsets it covers::

    <prefix>/data/dt=2026-11-27/hour=08/<topic>/p0003-00000000000000001000-00000000000000001999.parquet

The same records always give the same key, which is what makes a rewrite
after a crash (and Snowflake's per-path load dedup) idempotent. Offsets are
zero-padded so keys sort by offset within a partition.

A Kafka timestamp is whatever a producer sent. One outside
``KAFKA_TIMESTAMP_RANGE_MS`` (-1 for "none", before 1970, after year 9999)
has no time partition of its own; its record becomes a dead letter, and if it
opens a file, that file's folder is the epoch's (``dt=1970-01-01/hour=00``). So
every key is a real date, computed from the records alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from loader.config.spec import EventSpec
from loader.schema.types import KAFKA_TIMESTAMP_RANGE_MS

__all__ = [
    "FileName",
    "FileRange",
    "data_key",
    "dead_letter_key",
    "parse_data_key",
    "parse_key",
    "period_ms",
    "period_of",
]

# The exact form _key writes, anchored at both ends: a key is a name, never a path, so any
# other key (``..``, ``//``, a backslash, a control character, other text around) is not ours.
# The prefix is what spec validation allows; a topic is what Kafka allows, except "." and "..".
_FILE = re.compile(
    r"(?P<prefix>[a-z0-9][a-z0-9._\-]*(?:/[a-z0-9][a-z0-9._=\-]*)*)/(?P<kind>data|dead-letter)/"
    r"dt=(?P<dt>\d{4}-\d{2}-\d{2})(?:/hour=(?P<hour>\d{2}))?/(?P<topic>(?!\.\.?/)[A-Za-z0-9._\-]{1,249})/"
    r"p(?P<partition>\d{4,})-(?P<first>\d{20})-(?P<last>\d{20})\.parquet",
    re.ASCII,
)


@dataclass(frozen=True)
class FileName:
    """What a key says about its file."""

    prefix: str
    """The event's prefix (``spec.s3.prefix``) the key starts with."""
    hourly: bool
    """Whether the key has an hour folder (a spec partitioned by hour)."""
    kind: str
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    time_partition: datetime


def period_ms(spec: EventSpec) -> int:
    """How long one time partition (one folder) of the event is: period ``p`` holds the
    timestamps ``p * period_ms(spec)`` up to, not including, ``(p + 1) * period_ms(spec)``."""
    return 3_600_000 if spec.s3.time_partition == "hour" else 86_400_000


def period_of(spec: EventSpec, timestamp_ms: int) -> int:
    """The period (the time partition's index: hours or days since the epoch) a Kafka timestamp
    falls in; the epoch's (0) for a timestamp outside ``KAFKA_TIMESTAMP_RANGE_MS`` (see the
    module docstring). The only place a record's time partition is computed: the worker's files,
    their keys and ``loader plan``'s example keys all come from it."""
    low, high = KAFKA_TIMESTAMP_RANGE_MS
    if not low <= timestamp_ms <= high:
        return 0
    return timestamp_ms // period_ms(spec)


@dataclass(frozen=True)
class FileRange:
    """The records one file covers: a partition's offsets ``first..last`` (inclusive),
    and the time partition (``period``, see :func:`period_of`) of the first of them."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    period: int


def _key(spec: EventSpec, kind: str, covered: FileRange) -> str:
    moment = datetime.fromtimestamp(covered.period * period_ms(spec) // 1000, tz=UTC)
    folder = f"dt={moment:%Y-%m-%d}" + (f"/hour={moment:%H}" if spec.s3.time_partition == "hour" else "")
    name = f"p{covered.partition:04d}-{covered.first_offset:020d}-{covered.last_offset:020d}.parquet"
    return f"{spec.s3.prefix}/{kind}/{folder}/{covered.topic}/{name}"


def data_key(spec: EventSpec, covered: FileRange) -> str:
    """Key of the data file for ``covered``."""
    return _key(spec, "data", covered)


def dead_letter_key(spec: EventSpec, covered: FileRange) -> str:
    """Key of the dead-letter file for the same range as a data file."""
    return _key(spec, "dead-letter", covered)


def parse_key(key: str) -> FileName | None:
    """Read a key written by this module back; None for any other key (also one with an
    impossible date or hour)."""
    match = _FILE.fullmatch(key)
    if not match:
        return None
    try:
        moment = datetime.strptime(match["dt"], "%Y-%m-%d").replace(hour=int(match["hour"] or 0), tzinfo=UTC)
    except ValueError:
        return None
    return FileName(
        prefix=match["prefix"],
        hourly=match["hour"] is not None,
        kind=match["kind"],
        topic=match["topic"],
        partition=int(match["partition"]),
        first_offset=int(match["first"]),
        last_offset=int(match["last"]),
        time_partition=moment,
    )


def parse_data_key(spec: EventSpec, key: str) -> FileName | None:
    """Read ``key`` back as a data file of ``spec`` (its prefix, its time partitioning);
    None for any other key, which the loader refuses to load."""
    parsed = parse_key(key)
    if (
        parsed is None
        or parsed.kind != "data"
        or parsed.prefix != spec.s3.prefix
        or parsed.hourly != (spec.s3.time_partition == "hour")
    ):
        return None
    return parsed
