"""Batching across requests: the records of every request go into one open batch per
topic-partition, sent when it is full or ``linger_ms`` after its first record.

aiokafka's ``send()`` costs about 15 µs a record (a coroutine and a future each), which
is all a direct producer spends, and would cap the gateway far below it. Appending to a
batch builder costs about half a microsecond, so the gateway fills aiokafka's
:class:`~aiokafka.producer.message_accumulator.BatchBuilder` itself and hands each full
or lingered batch over with ``send_batch``: one future per batch, and each record's
offset is the batch's base offset plus its position in it.

Partitions are chosen as Kafka's producers do: the partition a client asked for; else the
murmur2 hash of the key; else the topic's *sticky* partition, which moves on each time its
batch is sent, so keyless records fill one batch at a time (Kafka's sticky partitioner).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiokafka.errors
from aiokafka.partitioner import DefaultPartitioner

from loader.gateway.outbound import OutboundRecord, Outcome

__all__ = ["Batcher", "Placed"]

_PARTITIONER = DefaultPartitioner()


@dataclass(frozen=True)
class Placed:
    """Where a record went: the future of its batch (RecordMetadata of the batch once the
    broker acknowledged it) and its position in the batch."""

    future: asyncio.Future[Any]
    position: int


@dataclass(eq=False)
class _Open:
    """A batch still taking records."""

    topic: str
    partition: int
    builder: Any
    """aiokafka's BatchBuilder."""
    settled: asyncio.Future[Any]
    timer: asyncio.TimerHandle | None = None
    count: int = 0


@dataclass
class Batcher:
    """The open batches of one cluster's producer (whichever producer is current when a
    batch is sent: ``producer()`` answers it, None while it is being replaced)."""

    producer: Callable[[], Any]
    linger_s: float
    _open: dict[tuple[str, int], _Open] = field(default_factory=dict)
    _sticky: dict[str, int] = field(default_factory=dict)
    _sent_last: dict[str, int] = field(default_factory=dict)
    """Per topic, the sticky partition whose batch went last (still in flight, most likely)."""
    _sending: set[asyncio.Task[None]] = field(default_factory=set)

    def place(
        self, producer: Any, topic: str, partitions: Sequence[int], records: Sequence[OutboundRecord]
    ) -> list[Placed | Outcome]:
        """Append each record to its partition's open batch (``partitions``: the topic's, sorted);
        a record that fits no batch, or names a partition the topic lacks, gets its outcome."""
        placed: list[Placed | Outcome] = []
        for record in records:
            partition = self._partition(topic, partitions, record)
            if partition is None:
                placed.append(
                    Outcome(
                        "failed", error=f"topic {topic} has no partition {record.partition}", retryable=False
                    )
                )
                continue
            placed.append(self._append(producer, topic, partition, record))
        return placed

    def _partition(self, topic: str, partitions: Sequence[int], record: OutboundRecord) -> int | None:
        if record.partition is not None:
            return record.partition if record.partition in partitions else None
        if record.key is not None:
            return int(_PARTITIONER(record.key, list(partitions), list(partitions)))
        sticky = self._sticky.get(topic)
        if sticky is None or sticky not in partitions:
            # Not the partition just sent: its next batch would wait for that one's answer (an
            # idempotent producer has one batch in flight per partition), as Kafka's sticky
            # partitioner avoids too.
            others = [p for p in partitions if p != self._sent_last.get(topic)] or list(partitions)
            sticky = self._sticky[topic] = random.choice(others)  # noqa: S311 - spreads load, no secret
        return sticky

    def _append(self, producer: Any, topic: str, partition: int, record: OutboundRecord) -> Placed:
        batch = self._open.get((topic, partition))
        if batch is None or not self._add(batch, record):
            if batch is not None:
                self._send(batch)  # full
            batch = self._new(producer, topic, partition)
            # An empty batch takes any record, as Kafka's do: one larger than the batch size
            # goes alone (and the broker refuses it if it exceeds its message size limit).
            self._add(batch, record)
        return Placed(batch.settled, batch.count - 1)

    @staticmethod
    def _add(batch: _Open, record: OutboundRecord) -> bool:
        appended = batch.builder.append(
            key=record.key, value=record.value, timestamp=record.timestamp_ms, headers=list(record.headers)
        )
        if appended is None:
            return False
        batch.count += 1
        return True

    def _new(self, producer: Any, topic: str, partition: int) -> _Open:
        loop = asyncio.get_running_loop()
        batch = _Open(topic, partition, producer.create_batch(), loop.create_future())
        batch.timer = loop.call_later(self.linger_s, self._send, batch)
        self._open[(topic, partition)] = batch
        return batch

    def _send(self, batch: _Open) -> None:
        """Close ``batch`` and hand it to the producer in the background."""
        if self._open.get((batch.topic, batch.partition)) is batch:
            del self._open[(batch.topic, batch.partition)]
        if batch.timer is not None:
            batch.timer.cancel()
        if self._sticky.get(batch.topic) == batch.partition:
            self._sticky.pop(batch.topic)  # the next keyless record picks a partition again
            self._sent_last[batch.topic] = batch.partition
        if batch.count == 0:
            batch.settled.cancel()
            return
        task = asyncio.create_task(self._hand_over(batch), name=f"gateway-batch-{batch.topic}")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _hand_over(self, batch: _Open) -> None:
        batch.builder.close()  # a closed batch does not linger in aiokafka
        try:
            producer = self.producer()
            if producer is None:
                raise aiokafka.errors.KafkaConnectionError("the cluster's producer is being replaced")
            sent = await producer.send_batch(batch.builder, batch.topic, partition=batch.partition)
            metadata = await sent
        except (aiokafka.errors.KafkaError, OSError) as exc:
            if not batch.settled.done():
                batch.settled.set_exception(exc)
            return
        except asyncio.CancelledError:
            if not batch.settled.done():
                batch.settled.set_exception(aiokafka.errors.KafkaConnectionError("the gateway stopped"))
            raise
        if not batch.settled.done():
            batch.settled.set_result(metadata)

    def send_all(self) -> set[asyncio.Task[None]]:
        """Send every open batch now (stopping); the hand-overs under way."""
        for batch in list(self._open.values()):
            self._send(batch)
        return set(self._sending)
