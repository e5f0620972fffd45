"""Reading dead letters back: what was rejected, where, and why (``loader dead-letters``)."""

from __future__ import annotations

import io
import re
from collections import Counter
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from loader.config.spec import EventSpec
from loader.store.s3 import S3Store

__all__ = ["DeadLetterSummary", "summarize_dead_letters"]

_VARIABLE = re.compile(r"'[^']*'|\d+")


@dataclass
class DeadLetterSummary:
    """Dead letters of one event type."""

    event: str
    files: int = 0
    records: int = 0
    by_partition: Counter[int] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    samples: list[dict[str, object]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (``dataclasses.asdict`` would mangle the Counters)."""
        return {
            "event": self.event,
            "files": self.files,
            "records": self.records,
            "by_partition": {str(p): n for p, n in sorted(self.by_partition.items())},
            "by_reason": dict(self.by_reason.most_common()),
            "samples": self.samples,
        }


def _reason_kind(reason: str) -> str:
    """A reason with its values blanked, so that similar rejects group together."""
    return _VARIABLE.sub("…", reason)[:120]


def summarize_dead_letters(spec: EventSpec, store: S3Store, *, samples: int = 5) -> DeadLetterSummary:
    """Read every dead-letter file of ``spec`` and count by partition and kind of reason."""
    summary = DeadLetterSummary(event=spec.name)
    for info in store.list_objects(spec.dead_letter_prefix):
        table = pq.read_table(
            io.BytesIO(store.get_bytes(info.key)), columns=["_PARTITION", "_OFFSET", "_REASON", "_VALUE"]
        )
        summary.files += 1
        summary.records += table.num_rows
        summary.by_partition.update(table.column("_PARTITION").to_pylist())
        reasons = table.column("_REASON").to_pylist()
        summary.by_reason.update(_reason_kind(r) for r in reasons)
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
