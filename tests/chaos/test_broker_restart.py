"""Exactly once across broker restarts: the worker rides out Kafka going away and coming back."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka.errors import KafkaError

from loader.devstack import DevStack
from tests.integration.helpers import produce, sample_values, spec_on_disk
from tests.integration.workers import WorkerProcess, offsets_in_s3, wait_until_caught_up, worker_env
from tests.waiting import eventually

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]

RECORDS = 40_000


def test_broker_restarts_lose_and_duplicate_nothing(
    dev_stack: DevStack, tmp_path: Path, unique_name: Callable[..., str]
) -> None:
    """Two broker restarts mid-stream: every offset is exactly once in S3 and the worker exits cleanly."""
    if dev_stack.service("kafka") is None:
        pytest.skip("Kafka is configured externally; this test restarts the broker it started")
    settings = dev_stack.settings
    name = unique_name("restart", sep="_")
    specs = tmp_path / "specs"
    spec, store = spec_on_disk(
        settings, specs, name, bucket="restart-events", partitions=4, max_records=2_500
    )
    assert settings.aws.endpoint_url is not None
    values = sample_values(spec, RECORDS)
    chunks = [values[i : i + 1_000] for i in range(0, RECORDS, 1_000)]

    def produce_through_restarts() -> None:
        for chunk in chunks:
            # The broker is restarting: retry the chunk (a retried chunk may duplicate: fine here).
            eventually(
                lambda chunk=chunk: produce(settings, spec, chunk) > 0,
                120,
                what="a chunk produced while the broker restarts",
                interval_s=1.0,
                ignoring=(KafkaError,),
            )
            time.sleep(0.5)

    worker = WorkerProcess(
        name, specs, worker_env(settings, settings.aws.endpoint_url), tmp_path / "worker.log"
    )
    producer = threading.Thread(target=produce_through_restarts, daemon=True)
    producer.start()
    for _ in range(2):
        time.sleep(6.0)
        dev_stack.restart_kafka()
        assert worker.alive, worker.log_path.read_text()[-3000:]
    producer.join(timeout=300)
    assert not producer.is_alive()

    ends, committed = wait_until_caught_up(settings, spec, 120, what="every partition committed to its end")
    assert ends == committed, f"not caught up: {committed} != {ends}"
    assert worker.signal(signal.SIGTERM) == 0

    rows, dead, _ranges = offsets_in_s3(store, spec)
    assert not [k for k, n in Counter(rows + dead).items() if n > 1]
    assert set(rows) | set(dead) == {(p, o) for p, end in ends.items() for o in range(end)}
    assert sum(ends.values()) >= RECORDS
