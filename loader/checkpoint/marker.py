"""The durable record of a roll: which file covers which offsets, written before its upload.

It travels as the metadata string of a Kafka offset commit, at the file's
first offset::

    offset = first, metadata = {"v":1,"first":F,"last":L,"bucket":P,"rg":N,"key":"…","dlq":"…"}

so it is exactly as durable as committed offsets and fenced the same way (a
commit from a stale consumer-group generation is refused). The commit at
``last + 1`` that clears the record carries ``{"v":1,"next":L+1}`` (a
:class:`Position`): no roll in flight, and a position the loader wrote itself.
Any other offset, such as one an operator set with ``--reset-offsets`` (empty
metadata), is not the loader's, and recovery checks it against S3 (see
:mod:`loader.checkpoint.recovery`). Workers before that marker committed empty
metadata there; their offsets are checked against S3 once, then recorded again.
``bucket`` is the file's period (:attr:`PendingFile.period`) under the name
markers already committed by running workers carry: it is part of the format.

Commit metadata is not only ours to write (any client of the group can commit),
so a marker is read as untrusted: one that does not parse, or whose range and
keys are not what this worker would have decided at that offset, is ignored
(the offset still counts) rather than followed or allowed to stop the worker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from loader.config.spec import EventSpec
from loader.errors import clip
from loader.store.layout import FileRange, data_key, dead_letter_key

__all__ = ["MARKER_VERSION", "PendingFile", "Position", "decode_marker"]

MARKER_VERSION = 1


@dataclass(frozen=True)
class PendingFile:
    """A roll decided but maybe not yet in S3: recovery must finish exactly this file."""

    first: int
    last: int
    period: int
    """The time partition of the file's first record (see :func:`~loader.store.layout.period_of`)."""
    rg: int
    """Records per row group, so the rebuilt file has the same bytes."""
    key: str
    dlq: str

    def covered(self, topic: str, partition: int) -> FileRange:
        return FileRange(topic, partition, self.first, self.last, self.period)

    def encode(self) -> str:
        # "bucket" is the period's name on the wire: markers already committed by running
        # workers carry it, so it stays (see decode_marker).
        document: dict[str, int | str] = {"v": MARKER_VERSION, "first": self.first, "last": self.last}
        document |= {"bucket": self.period, "rg": self.rg, "key": self.key, "dlq": self.dlq}
        return json.dumps(document, separators=(",", ":"))

    def mismatch(self, spec: EventSpec, topic: str, partition: int, committed: int) -> str | None:
        """Why this cannot be a roll the worker of ``spec`` recorded at offset ``committed``
        of the partition; None if it can. A marker written by this code always matches."""
        if self.first != committed:
            return f"it covers offsets from {self.first} but was committed at {committed}"
        if not 0 <= self.first <= self.last or self.rg < 1:
            return f"offsets {self.first}..{self.last} with row groups of {self.rg} records make no file"
        try:
            covered = self.covered(topic, partition)
            keys = (data_key(spec, covered), dead_letter_key(spec, covered))
        except (ValueError, OverflowError, OSError):
            return f"time partition {self.period} is no date"
        if (self.key, self.dlq) != keys:
            return f"its key {clip(self.key, 200)!r} is not the one the spec gives these offsets ({keys[0]})"
        return None


@dataclass(frozen=True)
class Position:
    """A position the loader committed with no roll in flight: the offset to read next."""

    next: int

    def encode(self) -> str:
        return json.dumps({"v": MARKER_VERSION, "next": self.next}, separators=(",", ":"))


def decode_marker(metadata: str | None) -> PendingFile | Position | None:
    """The pending file or the loader's position recorded in commit metadata; None for empty
    metadata. Raises ValueError for anything else (see :meth:`PendingFile.mismatch` for a
    marker that parses but is not ours)."""
    if not metadata:
        return None
    try:
        document = json.loads(metadata)
        if not isinstance(document, dict) or document.get("v") != MARKER_VERSION:
            raise ValueError("no version")  # noqa: TRY301 - one message for every way of failing
        if document.keys() == {"v", "next"}:
            if type(document["next"]) is not int:
                raise ValueError("wrong types")  # noqa: TRY301
            return Position(document["next"])
        numbers = [document[name] for name in ("first", "last", "bucket", "rg")]
        texts = [document[name] for name in ("key", "dlq")]
        if not all(type(n) is int for n in numbers) or not all(isinstance(t, str) for t in texts):
            raise ValueError("wrong types")  # noqa: TRY301
    except (ValueError, KeyError, RecursionError):
        raise ValueError(f"not a loader checkpoint marker: {clip(metadata, 100)!r}") from None
    first, last, period, rg = numbers
    return PendingFile(first=first, last=last, period=period, rg=rg, key=texts[0], dlq=texts[1])
