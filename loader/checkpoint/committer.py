"""Offset commits that carry the roll protocol, fenced by the consumer group.

Every commit goes through the group coordinator with this member's
generation: once the group has rebalanced, a commit from the old generation
is refused and surfaces here as :class:`~loader.errors.FencedError`. That is
what keeps a zombie worker from recording (and so from uploading) a file the
partition's new owner will not also produce identically.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.errors import KafkaError as AioKafkaError
from aiokafka.structs import OffsetAndMetadata

from loader.checkpoint.marker import PendingFile, decode_marker
from loader.errors import FencedError, KafkaError

__all__ = ["Committed", "Committer"]


class Committed:
    """A partition's committed position and the roll in flight there, if any."""

    __slots__ = ("offset", "pending")

    def __init__(self, offset: int | None, pending: PendingFile | None) -> None:
        self.offset = offset
        self.pending = pending

    def __repr__(self) -> str:
        return f"Committed(offset={self.offset}, pending={self.pending})"


class Committer:
    """Writes and reads the roll protocol's commits for one consumer group."""

    def __init__(self, consumer: AIOKafkaConsumer, admin: AIOKafkaAdminClient, group_id: str) -> None:
        self._consumer = consumer
        self._admin = admin
        self._group_id = group_id

    async def record_pending(self, tp: TopicPartition, pending: PendingFile) -> None:
        """Durably record a roll before its upload (offset stays at its first record)."""
        await self._commit(tp, pending.first, pending.encode())

    async def record_done(self, tp: TopicPartition, last_offset: int) -> None:
        """The file covering up to ``last_offset`` is in S3: move the position past it."""
        await self._commit(tp, last_offset + 1, "")

    async def _commit(self, tp: TopicPartition, offset: int, metadata: str) -> None:
        try:
            await self._consumer.commit({tp: OffsetAndMetadata(offset, metadata)})
        except (CommitFailedError, IllegalStateError) as exc:
            raise FencedError(f"{tp.topic}[{tp.partition}]: commit refused, the group rebalanced") from exc
        except AioKafkaError as exc:
            raise KafkaError(
                f"{tp.topic}[{tp.partition}]: commit failed: {exc}",
                transient=bool(getattr(exc, "retriable", False)),
            ) from exc

    async def fetch(self, partitions: list[TopicPartition]) -> dict[TopicPartition, Committed]:
        """Committed offsets and pending-roll records of ``partitions``."""
        try:
            found = await self._admin.list_consumer_group_offsets(self._group_id, partitions=partitions)
        except AioKafkaError as exc:
            raise KafkaError(f"cannot read committed offsets of {self._group_id}: {exc}") from exc
        result = {}
        for tp in partitions:
            entry = found.get(tp)
            if entry is None or entry.offset < 0:
                result[tp] = Committed(None, None)
                continue
            try:
                pending = decode_marker(entry.metadata)
            except ValueError:
                # Metadata written by another tool: the offset still counts, nothing is pending.
                pending = None
            result[tp] = Committed(entry.offset, pending)
        return result
