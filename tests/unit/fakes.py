"""In-memory stand-ins for unit tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import TopicPartition
from aiokafka.protocol.commit import OffsetCommitRequest_v2, OffsetCommitResponse_v2
from aiokafka.structs import OffsetAndMetadata

from loader.encode.decode import RecordValues
from loader.store.s3 import ObjectInfo

FakeRecord = RecordValues
"""A consumed Kafka record (the attributes aiokafka's ConsumerRecord has)."""


class ScriptedCoordinator:
    """The part of aiokafka's group coordinator that :class:`~loader.checkpoint.Committer` uses.

    Each ``_send_req`` answers with the next entry of ``script``: an error code (an offset
    commit response for one partition) or an exception to raise; once the script is spent,
    every commit succeeds. Commits are kept as the broker would see them, in ``commits``.
    """

    def __init__(
        self, script: Sequence[int | BaseException] = (), generation: int = 7, member_id: str = "m-1"
    ) -> None:
        self.generation = generation
        self.member_id = member_id
        self.script = list(script)
        self.calls: list[str] = []
        self.commits: list[SentCommit] = []

    async def ensure_coordinator_known(self) -> None:
        self.calls.append("ensure_coordinator_known")

    async def _send_req(self, request: Any) -> Any:
        self.calls.append("send")
        sent = request.build(OffsetCommitRequest_v2)
        [(topic, [(partition, offset, metadata)])] = sent.topics
        self.commits.append(
            SentCommit(
                sent.consumer_group,
                sent.consumer_group_generation_id,
                sent.consumer_id,
                topic,
                partition,
                offset,
                metadata,
            )
        )
        outcome = self.script.pop(0) if self.script else 0
        if isinstance(outcome, BaseException):
            raise outcome
        return OffsetCommitResponse_v2([(topic, [(partition, outcome)])])

    def request_rejoin(self) -> None:
        self.calls.append("request_rejoin")

    def coordinator_dead(self) -> None:
        self.calls.append("coordinator_dead")


@dataclass(frozen=True)
class SentCommit:
    """One offset commit as it went on the wire."""

    group: str
    generation_id: int
    member_id: str
    topic: str
    partition: int
    offset: int
    metadata: str


@dataclass
class FakeConsumer:
    """An AIOKafkaConsumer as far as the committer sees it: its coordinator."""

    _coordinator: ScriptedCoordinator


@dataclass
class FakeAdmin:
    """An AIOKafkaAdminClient that answers offset fetches from ``offsets`` (or raises ``error``)."""

    offsets: dict[TopicPartition, OffsetAndMetadata] = field(default_factory=dict)
    error: BaseException | None = None
    asked: list[tuple[str, list[TopicPartition]]] = field(default_factory=list)

    async def list_consumer_group_offsets(
        self, group_id: str, partitions: list[TopicPartition] | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        self.asked.append((group_id, list(partitions or [])))
        if self.error is not None:
            raise self.error
        return {tp: found for tp, found in self.offsets.items() if partitions is None or tp in partitions}


@dataclass
class FakeMetrics:
    """EventMetrics' error counter, kept as (component, kind) pairs."""

    errors: list[tuple[str, str]] = field(default_factory=list)

    def error(self, component: str, kind: str) -> None:
        self.errors.append((component, kind))


@dataclass
class FakeWarehouse:
    """A Warehouse as the ops see it: ``answer`` maps each statement to its rows (or to an
    exception to raise); every statement run is kept, in order, in ``executed``."""

    answer: Callable[[str], list[tuple[Any, ...]] | BaseException]
    executed: list[str] = field(default_factory=list)

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        self.executed.append(sql)
        outcome = self.answer(sql)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


@dataclass
class FakeStore:
    """An S3Store holding ``objects`` (key -> last modified), each a minimal Parquet-looking file."""

    objects: dict[str, datetime]

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        return [
            ObjectInfo(key, 64, "etag", modified)
            for key, modified in sorted(self.objects.items())
            if key.startswith(prefix)
        ]

    def object_size(self, key: str) -> int | None:
        return 64 if key in self.objects else None

    def get_head(self, key: str, size: int) -> bytes:
        return b"PAR1"

    def get_tail(self, key: str, size: int) -> bytes:
        return b"PAR1"
