"""Filling the benchmark's topics: N realistic events, generated once in parallel, produced in batches.

Generation (:class:`loader.devstack.samples.SampleEvents`, pure Python) runs in a
process pool so that it overlaps production; records are appended to
per-partition batches (``create_batch``/``send_batch``) rather than sent one
by one, which keeps a million events well under two minutes on two cores.
Records are keyed like the demo's (the event's first ``*_id`` field) and
partitioned by a hash of the key, as a keyed producer would.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from loader.devstack.samples import SampleEvents
from loader.schema.avro import load_avro_schema

__all__ = ["Produced", "average_value_bytes", "create_topic", "pick_schema", "produce"]

SCHEMA_PREFERENCE = ("order_created", "store_updated", "app_click")
"""Example schemas, in the order the benchmark prefers them (the issue names order_created)."""
TARGET_VALUE_BYTES = (350.0, 400.0)
"""The issue's "about 350-400 bytes of JSON each"."""
CHUNK = 25_000
BATCH_BYTES = 512 * 1024
"""Producer batch size: large, and under the broker's default 1 MB message limit."""


@dataclass(frozen=True)
class Produced:
    """What is in the topic, and what producing it cost."""

    events: int
    value_bytes: int
    seconds: float

    @property
    def avg_value_bytes(self) -> float:
        return self.value_bytes / max(1, self.events)


def _samples(name: str, schema_path: Path, seed: int) -> SampleEvents:
    return SampleEvents(name, load_avro_schema(schema_path), seed=seed, source="bench-producer")


def average_value_bytes(name: str, schema_path: Path, seed: int, count: int = 2_000) -> float:
    """Average JSON size of ``name``'s sample events (a quick sample)."""
    samples = _samples(name, schema_path, seed)
    return sum(len(samples.encoded(i)[1]) for i in range(count)) / count


def pick_schema(schemas_dir: Path, seed: int) -> tuple[str, float, dict[str, float]]:
    """The first example schema whose events average 350-400 bytes (the issue's size), its
    average, and every candidate's average (printed, so the choice is visible)."""
    averages: dict[str, float] = {}
    for name in SCHEMA_PREFERENCE:
        averages[name] = average_value_bytes(name, schemas_dir / f"{name}.avsc", seed)
        low, high = TARGET_VALUE_BYTES
        if low <= averages[name] <= high:
            return name, averages[name], averages
    raise RuntimeError(f"no example schema averages {TARGET_VALUE_BYTES} bytes per event: {averages}")


def _generate(job: tuple[str, str, int, int, int]) -> list[tuple[bytes, bytes]]:
    """One chunk of events (runs in a pool process; seeded per chunk, so runs repeat)."""
    name, schema_path, seed, start, count = job
    samples = _samples(name, Path(schema_path), seed * 1_000_003 + start // CHUNK)
    return [samples.encoded(i) for i in range(start, start + count)]


def _jobs(name: str, schema_path: Path, seed: int, events: int) -> Iterator[tuple[str, str, int, int, int]]:
    for start in range(0, events, CHUNK):
        yield name, str(schema_path), seed, start, min(CHUNK, events - start)


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create the benchmark's own topic (a fresh name per run)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    for _name, code, *rest in response.topic_errors:
        if code:
            raise RuntimeError(f"cannot create topic {topic}: error {code} {rest[-1] if rest else ''}")


async def produce(
    bootstrap: str,
    topics: dict[str, int],
    name: str,
    schema_path: Path,
    events: int,
    seed: int,
    *,
    compression: str | None = None,
) -> Produced:
    """Produce ``events`` sample events of ``name`` to each topic of ``topics`` (topic → its
    partitions), in batches compressed with ``compression`` (aiokafka's name, None for none).
    The same events go to every topic, generated once: generation is what takes the time.
    Returns the counts (per topic) and the time taken."""
    began = time.perf_counter()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=20,
        max_batch_size=BATCH_BYTES,
        compression_type=compression,
    )
    await producer.start()
    loop = asyncio.get_running_loop()
    value_bytes = count = 0
    builders: dict[tuple[str, int], Any] = {}
    inflight: list[asyncio.Future[Any]] = []

    async def send(topic: str, partition: int) -> None:
        batch = builders.pop((topic, partition))
        inflight.append(await producer.send_batch(batch, topic, partition=partition))

    try:
        with ProcessPoolExecutor(max_workers=2) as pool:
            jobs = _jobs(name, schema_path, seed, events)
            # A few chunks generate ahead of the one being produced (bounded memory).
            ahead = deque(loop.run_in_executor(pool, _generate, job) for job in itertools.islice(jobs, 4))
            while ahead:
                chunk = await ahead.popleft()
                ahead.extend(loop.run_in_executor(pool, _generate, job) for job in itertools.islice(jobs, 1))
                for key, value in chunk:
                    key_hash = zlib.crc32(key)
                    for topic, partitions in topics.items():
                        where = topic, key_hash % partitions
                        builder = builders.get(where)
                        if builder is None:
                            builder = builders[where] = producer.create_batch()
                        if builder.append(key=key, value=value, timestamp=None) is None:
                            await send(*where)
                            builder = builders[where] = producer.create_batch()
                            builder.append(key=key, value=value, timestamp=None)
                    value_bytes += len(value)
                    count += 1
                if len(inflight) > 256:
                    await asyncio.gather(*inflight)
                    inflight.clear()
            for where in list(builders):
                await send(*where)
            await asyncio.gather(*inflight)
    finally:
        await producer.stop()
    return Produced(count, value_bytes, time.perf_counter() - began)
