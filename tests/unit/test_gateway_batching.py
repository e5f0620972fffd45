"""The gateway's batching across requests: aiokafka's own batch builder, a fake producer's send_batch."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from loader.gateway.batching import Batcher, Placed
from loader.gateway.outbound import OutboundRecord, Outcome

pytestmark = pytest.mark.unit

TOPIC = "t"
PARTITIONS = [0, 1, 2]


class Producer:
    """aiokafka's batch builder (the real one, small batches), and send_batch noted and acknowledged."""

    def __init__(self, batch_bytes: int = 16_384) -> None:
        self.real = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", max_batch_size=batch_bytes)
        self.sent: list[tuple[int, int]] = []
        """Per batch sent: its partition and record count."""

    def create_batch(self) -> Any:
        return self.real.create_batch()

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        assert batch.closed()
        self.sent.append((partition, batch.record_count()))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(type("Meta", (), {"partition": partition, "offset": 10 * len(self.sent)})())
        return future


def record(
    value: bytes = b"v" * 100, key: bytes | None = None, partition: int | None = None
) -> OutboundRecord:
    return OutboundRecord(value, key, (("event_id", b"e"),), 1_764_230_400_000, partition)


def run(body: Any) -> Any:
    async def main() -> Any:
        producer = Producer()
        batcher = Batcher(lambda: producer, linger_s=0.05)
        try:
            return await body(producer, batcher)
        finally:
            await producer.real.stop()

    return asyncio.run(main())


def test_keyless_records_of_many_requests_share_one_batch_until_the_linger_sends_it() -> None:
    """Two requests' keyless records go to one sticky partition's batch, sent once after the linger;
    each record's offset is the batch's base plus its position."""

    async def body(producer: Producer, batcher: Batcher) -> None:
        first = batcher.place(producer, TOPIC, PARTITIONS, [record(), record()])
        second = batcher.place(producer, TOPIC, PARTITIONS, [record()])
        placed = [p for p in first + second if isinstance(p, Placed)]
        assert len({p.future for p in placed}) == 1 and [p.position for p in placed] == [0, 1, 2]
        assert producer.sent == []
        metadata = await asyncio.wait_for(placed[0].future, 1)
        assert producer.sent == [(metadata.partition, 3)]

    run(body)


def test_a_full_batch_is_sent_at_once_and_the_rest_opens_another() -> None:
    """Records beyond a batch's size go to new batches; full ones are sent without waiting for the linger."""

    async def body(producer: Producer, batcher: Batcher) -> None:
        placed = batcher.place(
            producer, TOPIC, PARTITIONS, [record(b"x" * 1000, partition=1) for _ in range(40)]
        )
        assert all(isinstance(p, Placed) for p in placed)
        await asyncio.sleep(0.01)
        full = list(producer.sent)
        assert len(full) == 40 // full[0][1] and {p for p, _ in full} == {1}  # the full ones, at once
        await asyncio.sleep(0.1)
        assert producer.sent == [*full, (1, 40 % full[0][1])]  # the rest, after the linger

    run(body)


def test_keys_hash_as_kafka_does_and_named_partitions_are_checked() -> None:
    """A keyed record goes to murmur2(key) % partitions (Kafka's default partitioner); a named partition
    the topic lacks gets a failed outcome that is not retryable; a record larger than a batch goes alone."""

    async def body(producer: Producer, batcher: Batcher) -> list[Placed | Outcome]:
        placed = batcher.place(
            producer,
            TOPIC,
            PARTITIONS,
            [record(key=b"customer-42"), record(partition=7), record(b"y" * 20_000, partition=0)],
        )
        await asyncio.sleep(0.1)
        return placed

    keyed, missing, huge = run(body)
    expected = PARTITIONS[(murmur2(b"customer-42") & 0x7FFFFFFF) % len(PARTITIONS)]
    assert isinstance(keyed, Placed) and keyed.future.result().partition == expected
    assert (
        isinstance(missing, Outcome) and not missing.retryable and "no partition 7" in (missing.error or "")
    )
    assert isinstance(huge, Placed) and huge.position == 0


def test_a_batch_without_a_producer_fails_retryable() -> None:
    """A batch sent while the cluster's producer is being replaced fails with a connection error."""

    async def main() -> BaseException | None:
        producer = Producer()
        batcher = Batcher(lambda: None, linger_s=0.01)
        (placed,) = batcher.place(producer, TOPIC, PARTITIONS, [record()])
        assert isinstance(placed, Placed)
        await asyncio.wait([placed.future], timeout=1)
        await producer.real.stop()
        return placed.future.exception()

    assert "being replaced" in str(asyncio.run(main()))


def test_the_next_sticky_partition_is_not_the_one_just_sent() -> None:
    """Once a sticky batch is sent, keyless records go to another partition (its batch would wait for
    the one in flight), whichever partition was sent."""

    async def body(producer: Producer, batcher: Batcher) -> list[tuple[int, int]]:
        pairs = []
        for _ in range(30):
            (first,) = batcher.place(producer, TOPIC, PARTITIONS, [record()])
            assert isinstance(first, Placed)
            sent = (await asyncio.wait_for(first.future, 1)).partition
            (second,) = batcher.place(producer, TOPIC, PARTITIONS, [record()])
            assert isinstance(second, Placed)
            pairs.append((sent, (await asyncio.wait_for(second.future, 1)).partition))
        return pairs

    pairs = run(body)
    assert all(sent != following for sent, following in pairs), pairs
