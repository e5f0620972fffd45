"""Exactly once under chaos: kill -9 at random instants, rebalances and S3 errors.

Real Kafka, real moto (behind a fault-injecting proxy) and fakesnow; the
worker runs as a separate process. The seed is printed; rerun a failure with
``CHAOS_SEED=<seed>``. ``CHAOS_RECORDS`` changes the volume (default 200,000).
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from loader.devstack import DevStack
from loader.schema.avro import load_avro_schema
from loader.warehouse.connection import Warehouse
from loader.warehouse.load import load_files
from loader.warehouse.objects import EventObjects
from tests.chaos.faulty_s3 import FaultyS3Proxy
from tests.integration.helpers import produce, sample_values, spec_on_disk
from tests.integration.workers import WorkerProcess, offsets_in_s3, wait_until_caught_up, worker_env

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1200)]

RECORDS = int(os.environ.get("CHAOS_RECORDS", "200000"))
PARTITIONS = 6
KILLS = 10
BROKEN_EVERY = 997
"""One record in this many is malformed and must end as a dead letter."""


def _messages(spec_values: list[tuple[bytes, bytes]]) -> list[tuple[bytes | None, bytes | None]]:
    messages: list[tuple[bytes | None, bytes | None]] = []
    for index, (key, value) in enumerate(spec_values):
        messages.append((key, b'{"event_id": "broken", ' if index % BROKEN_EVERY == 0 else value))
    return messages


def test_kill_nine_rebalances_and_s3_errors_lose_and_duplicate_nothing(
    dev_stack: DevStack, tmp_path: Path, unique_name: Callable[..., str]
) -> None:
    """Every produced record is exactly once in S3 and exactly once in the table."""
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(2**32))
    print(f"\nCHAOS_SEED={seed} CHAOS_RECORDS={RECORDS}")
    rng = random.Random(seed)
    settings = dev_stack.settings
    name = unique_name("chaos", sep="_")
    specs_dir = tmp_path / "specs"
    spec, store = spec_on_disk(
        settings,
        specs_dir,
        name,
        bucket="chaos-events",
        partitions=PARTITIONS,
        deployment={"memory_budget_mb": 256},
        max_records=4_000,
        row_group_records=1_500,
    )
    messages = _messages(sample_values(spec, RECORDS, seed=seed))

    assert settings.aws.endpoint_url is not None
    with FaultyS3Proxy(settings.aws.endpoint_url, seed=seed) as proxy:
        env = worker_env(settings, proxy.url)
        logs = tmp_path / "logs"
        logs.mkdir()
        runs = 0

        def start() -> WorkerProcess:
            nonlocal runs
            runs += 1
            return WorkerProcess(name, specs_dir, env, logs / f"worker-{runs:02d}.log")

        # Produce in the background, in slices spread over the kills, while workers die.
        chunks = [messages[i : i + 2_000] for i in range(0, len(messages), 2_000)]
        pause_s = 45.0 / len(chunks)

        def produce_slowly() -> None:
            for chunk in chunks:
                produce(settings, spec, chunk)
                time.sleep(pause_s)

        producer = threading.Thread(target=produce_slowly, daemon=True)
        producer.start()

        began = time.monotonic()
        worker = start()
        second: WorkerProcess | None = None
        for kill in range(KILLS):
            # Kill at a random instant of the worker's active life (recovery, rolls, uploads).
            worker.wait_until_assigned()
            time.sleep(rng.uniform(0.0, 4.0))
            if kill == 2:
                second = start()  # joins: rebalance
            if kill == 4:
                proxy.failure_rate = 0.5  # S3 throttles half the requests
            if kill == 6:
                proxy.failure_rate = 1.0  # S3 refuses everything for a while, then recovers
                outage = threading.Timer(8.0, lambda: setattr(proxy, "failure_rate", 0.0))
                outage.start()
            if kill == 7:
                assert second is not None
                second.signal(signal.SIGKILL)  # the second worker leaves, abruptly: rebalance
                second = None
            print(
                f"t={time.monotonic() - began:5.1f}s kill {kill}: s3 requests={proxy.forwarded} "
                f"faults={proxy.injected} failure_rate={proxy.failure_rate}"
            )
            code = worker.signal(signal.SIGKILL)
            assert code == -signal.SIGKILL
            worker = start()
        producer.join(timeout=600)
        assert not producer.is_alive()
        print(f"kills={KILLS} worker_runs={runs} s3_faults_injected={proxy.injected}")

        # Let the last worker catch up: every partition committed to its end.
        def still_running() -> None:
            assert worker.alive, (logs / f"worker-{runs:02d}.log").read_text()[-3000:]

        ends, committed = wait_until_caught_up(
            settings,
            spec,
            300,
            what="the last worker to commit every partition to its end",
            check=still_running,
        )
        assert committed == ends, f"not caught up: committed={committed} ends={ends}"
        assert worker.wait_until_assigned()
        assert worker.signal(signal.SIGTERM) == 0, "a graceful stop exits 0"
        if second is not None:
            second.signal(signal.SIGTERM)

    assert sum(ends.values()) == RECORDS
    produced = {(p, o) for p, end in ends.items() for o in range(end)}
    rows, dead, ranges = offsets_in_s3(store, spec)

    # S3, row by row: no duplicate, no gap, nothing extra; dead letters exactly the broken ones.
    duplicates = [item for item, count in Counter(rows + dead).items() if count > 1]
    assert not duplicates, f"duplicated offsets in S3: {duplicates[:10]}"
    assert set(rows) | set(dead) == produced
    assert len(dead) == len(range(0, RECORDS, BROKEN_EVERY))
    # No two files overlap: per partition, sorted ranges never touch each other.
    for partition in range(PARTITIONS):
        spans = sorted((first, last) for p, first, last in ranges if p == partition)
        for (_, last), (first, _) in itertools.pairwise(spans):
            assert last < first, f"overlapping files in partition {partition}: {spans}"
    recoveries = sum(log.read_text().count('"recovery": true') for log in logs.iterdir())
    print(f"files={len(ranges)} rows={len(rows)} dead_letters={len(dead)} recovered_rolls={recoveries}")

    # The warehouse, row by row: load every data file and compare.
    objects = EventObjects(spec, load_avro_schema(spec.schema_path), settings.snowflake)  # type: ignore[arg-type]
    data_keys = sorted(info.key for info in store.list_objects(spec.data_prefix))
    with Warehouse(settings.snowflake) as warehouse:
        for statement in objects.create_statements():
            warehouse.execute(statement)
        for start_index in range(0, len(data_keys), 50):
            results = load_files(warehouse, store, objects, data_keys[start_index : start_index + 50])
            assert all(r.done for r in results), [r for r in results if not r.done]
        loaded = warehouse.execute(f'SELECT "_PARTITION", "_OFFSET" FROM {objects.table}')
    assert len(loaded) == len(set(loaded)) == len(rows)
    assert set(loaded) == set(rows)
