"""Exactly-once checkpoints: a roll is recorded in the consumer group before its upload.

The protocol, per partition (see also the README):

1. Decide a roll: the file covers offsets ``first..last`` and has its key.
2. Record it: commit offset ``first`` with the file's range and key as the
   commit's metadata. The commit carries the group generation, so a worker
   that lost the partition in a rebalance is refused here and uploads nothing.
3. Upload the file (dead letters first, then data). The content is a pure
   function of the records it covers, so any rewrite gives the same bytes
   under the same key.
4. Commit ``last + 1`` with empty metadata.

On assignment, a worker reads the committed offset and metadata first. If a
roll is pending it finishes exactly that file (or sees it is already in S3)
before it consumes anything else.
"""

from __future__ import annotations

from loader.checkpoint.committer import Committed, Committer
from loader.checkpoint.marker import PendingFile, decode_marker

__all__ = ["Committed", "Committer", "PendingFile", "decode_marker"]
