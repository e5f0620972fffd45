"""Reading dead letters back: what was rejected, where, and why (``loader dead-letters``).

Dead-letter files are the archive of record and are never rewritten: a record that a
re-drive (:mod:`loader.replay.redrive`) loaded is in a re-driven data file named after
its dead-letter file, and is no longer counted here as a dead letter.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from loader.config.spec import EventSpec
from loader.store.layout import dead_letter_of
from loader.store.s3 import ObjectInfo, S3Store

__all__ = ["DeadLetterSummary", "offsets_in", "reason_kind", "redriven_files", "summarize_dead_letters"]

_VARIABLE = re.compile(r"'[^']*'|\d+")


@dataclass
class DeadLetterSummary:
    """Dead letters of one event type."""

    event: str
    files: int = 0
    records: int = 0
    """Records still dead letters (not re-driven since)."""
    redriven: int = 0
    """Records re-driven into data files."""
    unsent: int = 0
    """Records the gateway never got into Kafka (spilled; counted in ``records`` too, in no partition)."""
    by_partition: Counter[int] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    samples: list[dict[str, object]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (``dataclasses.asdict`` would mangle the Counters)."""
        return {
            "event": self.event,
            "files": self.files,
            "records": self.records,
            "redriven": self.redriven,
            "unsent": self.unsent,
            "by_partition": {str(p): n for p, n in sorted(self.by_partition.items())},
            "by_reason": dict(self.by_reason.most_common()),
            "samples": self.samples,
        }


def reason_kind(reason: str) -> str:
    """A reason with its values blanked, so that similar rejects group together."""
    return _VARIABLE.sub("…", reason)[:120]


def redriven_files(store: S3Store, spec: EventSpec) -> dict[str, list[ObjectInfo]]:
    """The event's re-driven data files, by the dead-letter file each came from."""
    found: dict[str, list[ObjectInfo]] = {}
    for info in store.list_objects(spec.data_prefix):
        source = dead_letter_of(info.key)
        if source is not None:
            found.setdefault(source, []).append(info)
    return found


def offsets_in(store: S3Store, keys: Iterable[str]) -> set[int]:
    """The ``_OFFSET`` values of the Parquet files at ``keys`` (that column only is decoded)."""
    offsets: set[int] = set()
    for key in keys:
        table = pq.read_table(io.BytesIO(store.get_bytes(key)), columns=["_OFFSET"])
        offsets.update(table.column("_OFFSET").to_pylist())
    return offsets


def summarize_dead_letters(spec: EventSpec, store: S3Store, *, samples: int = 5) -> DeadLetterSummary:
    """Read every dead-letter file of ``spec`` and count, by partition and kind of reason, the
    records not re-driven since."""
    summary = DeadLetterSummary(event=spec.name)
    redriven = redriven_files(store, spec)
    for info in store.list_objects(spec.dead_letter_prefix):
        table = pq.read_table(
            io.BytesIO(store.get_bytes(info.key)), columns=["_PARTITION", "_OFFSET", "_REASON", "_VALUE"]
        )
        summary.files += 1
        done = offsets_in(store, (r.key for r in redriven.get(info.key, [])))
        if done:
            left = pc.invert(pc.is_in(table.column("_OFFSET"), value_set=pa.array(sorted(done), pa.int64())))
            summary.redriven += table.num_rows
            table = table.filter(left)
            summary.redriven -= table.num_rows
        summary.records += table.num_rows
        summary.unsent += table.column("_OFFSET").null_count  # gateway spills: never in Kafka
        summary.by_partition.update(p for p in table.column("_PARTITION").to_pylist() if p is not None)
        reasons = table.column("_REASON").to_pylist()
        summary.by_reason.update(reason_kind(r) for r in reasons)
        for row in table.slice(0, max(0, samples - len(summary.samples))).to_pylist():
            value = row["_VALUE"] or b""
            summary.samples.append(
                {
                    "key": info.key,
                    "partition": row["_PARTITION"],
                    "offset": row["_OFFSET"],
                    "reason": row["_REASON"],
                    "value": value[:120].decode("utf-8", errors="replace"),
                }
            )
    return summary
