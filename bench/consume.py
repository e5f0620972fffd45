"""The two in-process baselines: (a) raw batch consumption, (b) a naive loader.

Both read the whole topic from the beginning with the same fetch settings the
worker uses (``fetch_settings``), so the only difference to the worker is
what happens to the records:

- (a) counts records and value bytes, nothing else: the ceiling of what an
  aiokafka ``getmany`` loop can deliver on this machine;
- (b) is the loader a person would write first: ``json.loads`` per record, a
  list of flat dicts, every 100k records ``Table.from_pylist`` →
  ``pq.write_table`` (zstd) → ``put_object`` → commit, all on one loop.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.cpu import CpuMeter, CpuUsage

__all__ = ["FETCH_MAX_RECORDS", "Measured", "consume_naive", "consume_raw", "fetch_settings"]

MIB = 1024 * 1024
FETCH_MAX_RECORDS = 20_000
"""``getmany(max_records=...)``: the worker's default."""
NAIVE_FILE_RECORDS = 100_000


@dataclass(frozen=True)
class Measured:
    """One stage's result: records and value bytes read, and the seconds it took."""

    events: int
    value_bytes: int
    seconds: float
    files: int = 0
    cpu: CpuUsage | None = None

    @property
    def eps(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def mbps(self) -> float:
        return self.value_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


def fetch_settings(budget_mb: int) -> dict[str, int]:
    """The fetch sizes the worker derives from its memory budget (StreamWorker.run), so that
    the baselines fetch exactly like the worker does."""
    fetch_bytes = max(4 * MIB, min(32 * MIB, budget_mb * MIB // 8))
    return {"fetch_max_bytes": fetch_bytes, "max_partition_fetch_bytes": max(1 * MIB, fetch_bytes // 4)}


async def _consumer(
    bootstrap: str, topic: str, partitions: int, budget_mb: int, group_id: str | None
) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        **fetch_settings(budget_mb),
    )
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return consumer


async def consume_raw(
    bootstrap: str, topic: str, partitions: int, events: int, budget_mb: int, meter: CpuMeter
) -> Measured:
    """(a) ``getmany`` until all ``events`` are read, counting records and value bytes only."""
    consumer = await _consumer(bootstrap, topic, partitions, budget_mb, None)
    count = value_bytes = 0
    try:
        meter.start()
        began = time.perf_counter()
        while count < events:
            batches = await consumer.getmany(timeout_ms=1_000, max_records=FETCH_MAX_RECORDS)
            for records in batches.values():
                count += len(records)
                value_bytes += sum(len(r.value) for r in records)
        seconds = time.perf_counter() - began
        cpu = meter.stop()
    finally:
        await consumer.stop()
    return Measured(count, value_bytes, seconds, cpu=cpu)


def _flat_row(record: Any) -> dict[str, Any]:
    """Envelope and payload flattened into one row, with the worker's metadata columns."""
    event = json.loads(record.value)
    row: dict[str, Any] = dict(event.get("payload") or {})
    row["_EVENT_ID"] = event.get("event_id")
    row["_EVENT_NAME"] = event.get("event_name")
    row["_CREATED_AT"] = event.get("created_at")
    row["_SOURCE"] = event.get("source")
    row["_SCHEMA_VERSION"] = event.get("schema_version")
    row["_TOPIC"] = record.topic
    row["_PARTITION"] = record.partition
    row["_OFFSET"] = record.offset
    row["_KAFKA_TIMESTAMP"] = record.timestamp
    row["_KEY"] = record.key
    return row


async def consume_naive(
    bootstrap: str,
    topic: str,
    partitions: int,
    events: int,
    budget_mb: int,
    *,
    group_id: str,
    s3: Any,
    bucket: str,
    prefix: str,
    meter: CpuMeter,
) -> Measured:
    """(b) The straightforward loader: per-record json.loads, from_pylist, write, put, commit."""
    consumer = await _consumer(bootstrap, topic, partitions, budget_mb, group_id)
    rows: list[dict[str, Any]] = []
    count = value_bytes = files = 0

    async def flush() -> None:
        nonlocal rows, files
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), buffer, compression="zstd")
        s3.put_object(Bucket=bucket, Key=f"{prefix}/part-{files:05d}.parquet", Body=buffer.getvalue())
        await consumer.commit()
        rows = []
        files += 1

    try:
        meter.start()
        began = time.perf_counter()
        while count < events:
            batches = await consumer.getmany(timeout_ms=1_000, max_records=FETCH_MAX_RECORDS)
            for records in batches.values():
                for record in records:
                    rows.append(_flat_row(record))
                    value_bytes += len(record.value)
                count += len(records)
            if len(rows) >= NAIVE_FILE_RECORDS:
                await flush()
        if rows:
            await flush()
        seconds = time.perf_counter() - began
        cpu = meter.stop()
    finally:
        await consumer.stop()
    return Measured(count, value_bytes, seconds, files, cpu)
