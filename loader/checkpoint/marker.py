"""The durable record of a roll: which file covers which offsets, written before its upload.

It travels as the metadata string of a Kafka offset commit, at the file's
first offset::

    offset = first, metadata = {"v":1,"first":F,"last":L,"bucket":B,"rg":N,"key":"…","dlq":"…"}

so it is exactly as durable as committed offsets and fenced the same way (a
commit from a stale consumer-group generation is refused). An empty metadata
string means "no roll in flight"; a commit at ``last + 1`` clears the record.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from loader.store.layout import FileRange

__all__ = ["MARKER_VERSION", "PendingFile", "decode_marker"]

MARKER_VERSION = 1


@dataclass(frozen=True)
class PendingFile:
    """A roll decided but maybe not yet in S3: recovery must finish exactly this file."""

    first: int
    last: int
    bucket: int
    rg: int
    """Records per row group, so the rebuilt file has the same bytes."""
    key: str
    dlq: str

    def covered(self, topic: str, partition: int) -> FileRange:
        return FileRange(topic, partition, self.first, self.last, self.bucket)

    def encode(self) -> str:
        return json.dumps({"v": MARKER_VERSION, **asdict(self)}, separators=(",", ":"))


def decode_marker(metadata: str | None) -> PendingFile | None:
    """The pending file recorded in commit metadata, or None. Raises ValueError if unreadable."""
    if not metadata:
        return None
    document = json.loads(metadata)
    if not isinstance(document, dict) or document.get("v") != MARKER_VERSION:
        raise ValueError(f"not a loader checkpoint marker: {metadata[:100]!r}")
    return PendingFile(
        first=int(document["first"]),
        last=int(document["last"]),
        bucket=int(document["bucket"]),
        rg=int(document["rg"]),
        key=str(document["key"]),
        dlq=str(document["dlq"]),
    )
