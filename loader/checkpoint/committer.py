"""Offset commits that carry the roll protocol, fenced by the consumer group.

Every commit goes to the group coordinator with the generation the partition was
assigned under: once the group has rebalanced, a commit from the old generation
is refused and surfaces here as :class:`~loader.errors.FencedError`. That is
what keeps a zombie worker from recording (and so from uploading) a file the
partition's new owner will not also produce identically. Every error a
commit or an offset fetch meets (refusals included) is counted by its class in
``loader_errors_total{component="kafka"}`` when the committer has metrics.
The coordinator is reached through :mod:`loader.checkpoint.group`, the one place
that uses aiokafka's private API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiokafka.errors as aiokafka_errors
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.commit import OffsetCommitRequest

from loader.checkpoint.group import GroupCoordinator
from loader.checkpoint.marker import PendingFile, Position, decode_marker
from loader.consume.errors import kafka_errors
from loader.errors import FencedError, KafkaError
from loader.retry import Backoff

if TYPE_CHECKING:
    from loader.metrics import EventMetrics

__all__ = ["Committed", "Committer", "Generation"]


class Committed:
    """A partition's committed position and the roll in flight there, if any.

    ``by_loader`` says the offset carries the loader's own position marker (a pending roll
    is checked by the worker against its spec instead); any other offset was set by someone
    else, or by a worker before that marker, and recovery checks it against S3."""

    __slots__ = ("by_loader", "offset", "pending")

    def __init__(self, offset: int | None, pending: PendingFile | None, *, by_loader: bool = False) -> None:
        self.offset = offset
        self.pending = pending
        self.by_loader = by_loader

    def __repr__(self) -> str:
        return f"Committed(offset={self.offset}, pending={self.pending}, by_loader={self.by_loader})"


@dataclass(frozen=True)
class Generation:
    """The group generation and member id a partition was assigned under."""

    generation_id: int
    member_id: str


_FENCED = {
    aiokafka_errors.UnknownMemberIdError,
    aiokafka_errors.IllegalGenerationError,
    aiokafka_errors.RebalanceInProgressError,
}
_RETRY = {
    aiokafka_errors.GroupCoordinatorNotAvailableError,
    aiokafka_errors.NotCoordinatorForGroupError,
    aiokafka_errors.RequestTimedOutError,
    aiokafka_errors.GroupLoadInProgressError,
}


class Committer:
    """Writes and reads the roll protocol's commits for one consumer group.

    Commits carry the generation *pinned when the partition was assigned*,
    not whatever the consumer holds at send time: after aiokafka resets an
    evicted member to generation -1, its commits would otherwise go out as
    "admin" commits, which a broker accepts once the group is empty, and a
    zombie could record a roll the new owner never makes.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        admin: AIOKafkaAdminClient,
        group_id: str,
        *,
        metrics: EventMetrics | None = None,
    ) -> None:
        self._group = GroupCoordinator(consumer)
        self._admin = admin
        self._group_id = group_id
        self._metrics = metrics

    def _count(self, error: type[BaseException]) -> None:
        if self._metrics is not None:
            self._metrics.error("kafka", error.__name__)

    def current_generation(self) -> Generation:
        """The consumer's generation now (read when partitions are assigned)."""
        return Generation(*self._group.generation())

    async def record_pending(self, tp: TopicPartition, pending: PendingFile, generation: Generation) -> None:
        """Durably record a roll before its upload (offset stays at its first record)."""
        await self._commit(tp, pending.first, pending.encode(), generation)

    async def record_done(self, tp: TopicPartition, last_offset: int, generation: Generation) -> None:
        """The file covering up to ``last_offset`` is in S3: move the position past it."""
        await self.record_position(tp, last_offset + 1, generation)

    async def record_position(self, tp: TopicPartition, next_offset: int, generation: Generation) -> None:
        """Record ``next_offset`` as the loader's position, with no roll in flight."""
        await self._commit(tp, next_offset, Position(next_offset).encode(), generation)

    async def _commit(self, tp: TopicPartition, offset: int, metadata: str, generation: Generation) -> None:
        where = f"{tp.topic}[{tp.partition}]"
        if generation.generation_id < 0 or not generation.member_id:
            raise FencedError(f"{where}: no group generation to commit under")
        request = OffsetCommitRequest(
            self._group_id,
            generation.generation_id,
            generation.member_id,
            OffsetCommitRequest.DEFAULT_RETENTION_TIME,
            [(tp.topic, [(tp.partition, offset, metadata)])],
        )
        backoff = Backoff(first_s=0.1, max_s=5.0)
        while True:
            with kafka_errors(f"{where}: commit failed", metrics=self._metrics):
                error = await self._group.commit(request)
            if error is aiokafka_errors.NoError:
                return
            self._count(error)
            if error in _FENCED:
                self._group.request_rejoin()
                raise FencedError(f"{where}: commit refused ({error.__name__}): the group moved on")
            if error not in _RETRY and not getattr(error, "retriable", False):
                raise KafkaError(f"{where}: commit failed: {error.__name__}", transient=False)
            if error is aiokafka_errors.NotCoordinatorForGroupError:
                self._group.coordinator_dead()
            await backoff.wait()

    async def fetch(self, partitions: list[TopicPartition]) -> dict[TopicPartition, Committed]:
        """Committed offsets and pending-roll records of ``partitions``."""
        with kafka_errors(f"cannot read committed offsets of {self._group_id}", metrics=self._metrics):
            found = await self._admin.list_consumer_group_offsets(self._group_id, partitions=partitions)
        result = {}
        for tp in partitions:
            entry = found.get(tp)
            if entry is None or entry.offset < 0:
                result[tp] = Committed(None, None)
                continue
            try:
                marker = decode_marker(entry.metadata)
            except ValueError:
                # Metadata written by another tool: the offset still counts, nothing is pending.
                marker = None
            pending = marker if isinstance(marker, PendingFile) else None
            ours = isinstance(marker, Position) and marker.next == entry.offset
            result[tp] = Committed(entry.offset, pending, by_loader=ours)
        return result
