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

A dead-letter file whose records were re-driven (``loader dead-letters redrive``)
gets data files beside its range's data file, named after it and after the
offsets they hold (:func:`redriven_key`)::

    <prefix>/data/dt=…/<topic>/p0003-…1000-…1999.redriven-<16 hex digits>.parquet

A re-driven file is a data file (loaded, replayed, reconciled like any), but not a
position of its partition: the dead-letter file of its range is.

Records the event gateway (``loader gateway``, async mode) could not deliver to Kafka by
their deadline never had a partition or offset; they are spilled to the dead-letter area
under a folder of their own, by the time of the spill, one file per spill
(:func:`spill_key`)::

    <prefix>/dead-letter/gateway/dt=2026-11-27/hour=08/<uuid>.parquet

:func:`parse_key` does not read such a key (it names no range), so recovery and re-drive,
which work on ranges, leave them alone; ``loader dead-letters`` lists them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from loader.config.spec import EventSpec
from loader.schema.types import KAFKA_TIMESTAMP_RANGE_MS

__all__ = [
    "FileName",
    "FileRange",
    "data_key",
    "dead_letter_key",
    "dead_letter_of",
    "parse_data_key",
    "parse_key",
    "period_ms",
    "period_of",
    "redriven_key",
    "spill_key",
]

# The exact form _key writes, anchored at both ends: a key is a name, never a path, so any
# other key (``..``, ``//``, a backslash, a control character, other text around) is not ours.
# The prefix is what spec validation allows; a topic is what Kafka allows, except "." and "..".
_FILE = re.compile(
    r"(?P<prefix>[a-z0-9][a-z0-9._\-]*(?:/[a-z0-9][a-z0-9._=\-]*)*)/(?P<kind>data|dead-letter)/"
    r"dt=(?P<dt>\d{4}-\d{2}-\d{2})(?:/hour=(?P<hour>\d{2}))?/(?P<topic>(?!\.\.?/)[A-Za-z0-9._\-]{1,249})/"
    r"p(?P<partition>\d{4,})-(?P<first>\d{20})-(?P<last>\d{20})(?:\.redriven-(?P<redriven>[0-9a-f]{16}))?"
    r"\.parquet",
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
    redriven: str | None = None
    """A re-driven data file's content id (see :func:`redriven_key`); None for any other file."""

    @property
    def covered(self) -> FileRange:
        """The range the name covers, as the worker wrote it (a re-driven file: its dead letters')."""
        period = int(self.time_partition.timestamp() * 1000) // (3_600_000 if self.hourly else 86_400_000)
        return FileRange(self.topic, self.partition, self.first_offset, self.last_offset, period)


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


REDRIVE_ID_DIGITS = 16
"""Hex digits of a re-driven file's content id: 64 bits of SHA-256, no collision in practice."""


def redriven_key(dead_letter: str, offsets: Iterable[int]) -> str:
    """The key of the data file holding the re-driven records at ``offsets`` of the dead-letter
    file ``dead_letter``: its range's data key, with an id derived from the offsets. Other
    offsets give another name, so a later re-drive never rewrites an earlier one's file."""
    parsed = parse_key(dead_letter)
    if parsed is None or parsed.kind != "dead-letter":
        raise ValueError(f"not a dead-letter key: {dead_letter[:300]!r}")
    held = sorted(set(offsets))
    if not held or held[0] < parsed.first_offset or held[-1] > parsed.last_offset:
        raise ValueError(f"re-driven offsets must be in {parsed.first_offset}..{parsed.last_offset}")
    digest = hashlib.sha256(",".join(map(str, held)).encode()).hexdigest()[:REDRIVE_ID_DIGITS]
    folder, name = dead_letter.rsplit("/", 1)
    data_folder = folder.replace(f"{parsed.prefix}/dead-letter/", f"{parsed.prefix}/data/", 1)
    return f"{data_folder}/{name.removesuffix('.parquet')}.redriven-{digest}.parquet"


SPILL_FOLDER = "gateway"
"""The folder of the dead-letter area holding the gateway's spilled records."""


def spill_key(spec: EventSpec, moment: datetime, spill_id: str) -> str:
    """Key of a file of records the gateway spilled at ``moment`` (UTC); ``spill_id`` (a UUID's
    hex) names the spill, so a retried upload writes the same object."""
    if not re.fullmatch(r"[0-9a-f]{32}", spill_id):
        raise ValueError(f"a spill id is 32 hex digits, not {spill_id[:40]!r}")
    at = moment.astimezone(UTC)
    return f"{spec.s3.prefix}/dead-letter/{SPILL_FOLDER}/dt={at:%Y-%m-%d}/hour={at:%H}/{spill_id}.parquet"


def dead_letter_of(key: str) -> str | None:
    """The dead-letter file a re-driven data file came from; None for any other key."""
    parsed = parse_key(key)
    if parsed is None or parsed.redriven is None:
        return None
    folder, name = key.rsplit("/", 1)
    dead_folder = folder.replace(f"{parsed.prefix}/data/", f"{parsed.prefix}/dead-letter/", 1)
    return f"{dead_folder}/{name.split('.redriven-', 1)[0]}.parquet"


def parse_key(key: str) -> FileName | None:
    """Read a key written by this module back; None for any other key (also one with an
    impossible date or hour, or a dead-letter key with a re-drive id)."""
    match = _FILE.fullmatch(key)
    if not match or (match["redriven"] is not None and match["kind"] != "data"):
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
        redriven=match["redriven"],
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
