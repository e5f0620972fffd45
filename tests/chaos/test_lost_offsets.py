"""Exactly once after the consumer group lost its offsets (expired, the group deleted or reset).

Real Kafka, moto and fakesnow; the worker runs as a separate process (``loader worker run``)
and the group is deleted by another client, confluent-kafka's AdminClient, as an operator
would. Another test deletes it while a roll is recorded but not finished: the worker is
killed while one of its uploads is held by the S3 proxy, after or before it reached S3.
The last one resets the offsets to the start, as ``kafka-consumer-groups`` would.
"""

from __future__ import annotations

import itertools
import json
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException
from confluent_kafka import TopicPartition as ConfluentPartition
from confluent_kafka.admin import AdminClient

from loader.config.settings import Settings
from loader.config.spec import EventSpec
from loader.devstack import DevStack
from loader.store.layout import parse_key
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.load import load_files
from loader.warehouse.objects import EventObjects
from tests.chaos.faulty_s3 import FaultyS3Proxy
from tests.integration.helpers import Message, produce, sample_values, spec_on_disk
from tests.integration.workers import (
    WorkerProcess,
    end_and_committed,
    offsets_in_s3,
    wait_until_caught_up,
    worker_env,
)
from tests.waiting import eventually

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]

PARTITIONS = 3
BATCH = 1_500
BROKEN_EVERY = 9
"""One record in this many is malformed, so files have dead letters as well as data."""


def _messages(spec: EventSpec, start: int, count: int) -> list[Message]:
    values = sample_values(spec, count, seed=start + 1, start=start)
    return [
        (key, b'{"event_id": "broken", ' if (start + i) % BROKEN_EVERY == 0 else value)
        for i, (key, value) in enumerate(values)
    ]


def _delete_group(settings: Settings, spec: EventSpec) -> None:
    """Delete the worker's group with confluent-kafka's admin client, once it has no member
    (a killed worker's member stays until its session times out), and see its offsets gone."""
    assert settings.kafka.bootstrap_servers is not None
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    group = spec.consumer_group

    def deleted() -> bool:
        admin.delete_consumer_groups([group], request_timeout=10)[group].result()
        return True

    eventually(deleted, 120, what=f"group {group} deleted", ignoring=(KafkaException,), interval_s=1.0)
    assert end_and_committed(settings, spec)[1] == dict.fromkeys(range(PARTITIONS), -1)


def _reset_group_to_the_start(settings: Settings, spec: EventSpec) -> None:
    """What ``kafka-consumer-groups --reset-offsets --to-earliest --execute`` does: offset 0 for
    every partition, with empty metadata (confluent-kafka's admin client; the group is empty)."""
    assert settings.kafka.bootstrap_servers is not None
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    partitions = [ConfluentPartition(spec.kafka.topic, p, 0) for p in range(PARTITIONS)]
    request = ConsumerGroupTopicPartitions(spec.consumer_group, partitions)
    for future in admin.alter_consumer_group_offsets([request], request_timeout=30).values():
        future.result()
    assert end_and_committed(settings, spec)[1] == dict.fromkeys(range(PARTITIONS), 0)


def _caught_up(settings: Settings, spec: EventSpec, worker: WorkerProcess) -> dict[int, int]:
    """Wait until the worker committed every partition to its end; the end offsets."""

    def running() -> None:
        assert worker.alive, worker.log_tail()

    assert worker.wait_until_assigned(), worker.log_tail()
    ends, committed = wait_until_caught_up(
        settings, spec, 300, what="the worker to commit every partition to its end", check=running
    )
    assert committed == ends
    return ends


def _create_table(settings: Settings, spec: EventSpec) -> None:
    """The event's table, once: the local server forgets a table's load history on any CREATE
    TABLE of it, even one that creates nothing."""
    objects = EventObjects.for_spec(spec, settings.snowflake)
    with Warehouse(settings.snowflake) as warehouse:
        for statement in objects.create_statements():
            warehouse.execute(statement)


def _load(settings: Settings, spec: EventSpec, store: S3Store) -> None:
    """Load every data file in S3 into the table, as the loader does (a path loaded before is skipped)."""
    objects = EventObjects.for_spec(spec, settings.snowflake)
    keys = sorted(info.key for info in store.list_objects(spec.data_prefix))
    with Warehouse(settings.snowflake) as warehouse:
        for start in range(0, len(keys), 50):
            results = load_files(warehouse, store, objects, keys[start : start + 50])
            assert all(r.done for r in results), [r for r in results if not r.done]


def _assert_exactly_once(
    settings: Settings, spec: EventSpec, store: S3Store, ends: dict[int, int], records: int
) -> None:
    """All ``records`` produced are in S3 once each (a row or a dead letter), no two files
    overlap, and the table holds each row once."""
    produced = {(p, o) for p, end in ends.items() for o in range(end)}
    assert len(produced) == records
    rows, dead, ranges = offsets_in_s3(store, spec)
    duplicates = [item for item, count in Counter(rows + dead).items() if count > 1]
    assert not duplicates, f"{len(duplicates)} offsets twice in S3, e.g. {sorted(duplicates)[:5]}"
    assert set(rows) | set(dead) == produced
    for partition in range(PARTITIONS):
        spans = sorted((first, last) for p, first, last in ranges if p == partition)
        for (_, last), (first, _) in itertools.pairwise(spans):
            assert last < first, f"overlapping files in partition {partition}: {spans}"
    objects = EventObjects.for_spec(spec, settings.snowflake)
    with Warehouse(settings.snowflake) as warehouse:
        loaded = warehouse.execute(f'SELECT "_PARTITION", "_OFFSET" FROM {objects.table}')
    assert len(loaded) == len(set(loaded)) == len(rows), (len(loaded), len(set(loaded)), len(rows))
    assert set(loaded) == set(rows)


def _recovered_from_s3(log: Path) -> dict[int, dict[str, object]]:
    """The worker's ``partition_position_recovered`` warnings, by partition."""
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return {e["partition"]: e for e in events if e.get("event") == "partition_position_recovered"}


@pytest.mark.parametrize(
    ("lose_offsets", "reason"),
    [(_delete_group, "no committed offset"), (_reset_group_to_the_start, "not the loader's")],
    ids=["group-deleted", "reset-to-the-start-by-an-operator"],
)
def test_lost_offsets_resume_from_s3_and_duplicate_nothing(
    dev_stack: DevStack,
    tmp_path: Path,
    unique_name: Callable[..., str],
    lose_offsets: Callable[[Settings, EventSpec], None],
    reason: str,
) -> None:
    """Worker stopped, its group deleted (or its offsets reset to the start by another client, no
    loader marker), more records, worker restarted: each partition resumes where its files in S3
    end, and every record is once in S3 and once in the table."""
    settings = dev_stack.settings
    name = unique_name("lost_offsets", sep="_")
    specs_dir = tmp_path / "specs"
    spec, store = spec_on_disk(
        settings, specs_dir, name, bucket="lost-offsets", partitions=PARTITIONS, max_records=200
    )
    assert settings.aws.endpoint_url is not None
    env = worker_env(settings, settings.aws.endpoint_url)
    _create_table(settings, spec)

    first = WorkerProcess(name, specs_dir, env, tmp_path / "worker-1.log")
    produce(settings, spec, _messages(spec, 0, BATCH))
    _caught_up(settings, spec, first)
    assert first.signal(signal.SIGTERM) == 0
    _load(settings, spec, store)
    ranges = offsets_in_s3(store, spec)[2]
    assert len(ranges) >= 2 * PARTITIONS, "several files committed"
    last_in_s3 = {p: max(last for q, _, last in ranges if q == p) for p in range(PARTITIONS)}

    lose_offsets(settings, spec)
    produce(settings, spec, _messages(spec, BATCH, BATCH))
    second = WorkerProcess(name, specs_dir, env, tmp_path / "worker-2.log")
    ends = _caught_up(settings, spec, second)
    assert second.signal(signal.SIGTERM) == 0
    _load(settings, spec, store)

    _assert_exactly_once(settings, spec, store, ends, 2 * BATCH)
    recovered = _recovered_from_s3(second.log_path)
    assert {p: (e["source"], e["position"]) for p, e in recovered.items()} == {
        p: ("s3", last + 1) for p, last in last_in_s3.items()
    }
    assert all(reason in str(e["reason"]) for e in recovered.values())


def _file_name(path: str) -> str:
    return unquote(urlsplit(path).path).rsplit("/", 1)[-1]


@pytest.mark.parametrize(
    "forwarded", [True, False], ids=["data-in-s3-uncommitted", "dead-letters-only-in-s3"]
)
def test_a_group_deleted_while_a_roll_is_pending_finishes_that_roll_exactly_once(
    dev_stack: DevStack, tmp_path: Path, unique_name: Callable[..., str], forwarded: bool
) -> None:
    """kill -9 while a file's data upload is held (after it reached S3, or before, with its dead
    letters already there), the group deleted, more records, restart: the roll is finished as it
    was recorded, and every record is once in S3 and once in the table."""
    settings = dev_stack.settings
    name = unique_name("pending_lost", sep="_")
    specs_dir = tmp_path / "specs"
    spec, store = spec_on_disk(
        settings, specs_dir, name, bucket="lost-offsets", partitions=PARTITIONS, max_records=200
    )
    assert settings.aws.endpoint_url is not None
    _create_table(settings, spec)
    dead_letters_uploaded: set[str] = set()

    def data_after_its_dead_letters(method: str, path: str) -> bool:
        """The data upload of a file whose dead letters went to S3 first."""
        if method != "PUT":
            return False
        if "/dead-letter/" in path:
            dead_letters_uploaded.add(_file_name(path))
            return False
        return "/data/" in path and _file_name(path) in dead_letters_uploaded

    with FaultyS3Proxy(settings.aws.endpoint_url, seed=0) as proxy:
        env = worker_env(settings, proxy.url)
        first = WorkerProcess(name, specs_dir, env, tmp_path / "worker-1.log")
        produce(settings, spec, _messages(spec, 0, BATCH))
        _caught_up(settings, spec, first)
        _load(settings, spec, store)

        proxy.hold(data_after_its_dead_letters, forwarded=forwarded)
        produce(settings, spec, _messages(spec, BATCH, BATCH))
        eventually(proxy.held.is_set, 120, what="a data upload held by the proxy", detail=first.log_tail)
        assert first.signal(signal.SIGKILL) == -signal.SIGKILL
        assert proxy.held_path is not None
        data = unquote(urlsplit(proxy.held_path).path).removeprefix(f"/{spec.s3.bucket}/")
        held = parse_key(data)
        assert held is not None, proxy.held_path
        dead = data.replace("/data/", "/dead-letter/", 1)
        # The roll was recorded at its first offset, its dead letters are in S3, its data only
        # if the upload was held after S3 had it.
        assert end_and_committed(settings, spec)[1][held.partition] == held.first_offset
        assert store.exists(dead)
        assert store.exists(data) is forwarded
        _load(settings, spec, store)  # a file in S3 may be loaded before it is committed

        _delete_group(settings, spec)
        produce(settings, spec, _messages(spec, 2 * BATCH, BATCH))
        second = WorkerProcess(name, specs_dir, env, tmp_path / "worker-2.log")
        ends = _caught_up(settings, spec, second)
        assert second.signal(signal.SIGTERM) == 0
    _load(settings, spec, store)

    _assert_exactly_once(settings, spec, store, ends, 3 * BATCH)
    assert store.exists(data)
    recovered = _recovered_from_s3(second.log_path)[held.partition]
    if forwarded:
        assert (recovered["source"], recovered["position"]) == ("s3", held.last_offset + 1)
    else:
        assert (recovered["source"], recovered["position"]) == ("s3", held.first_offset)
        assert recovered["pending_last_offset"] == held.last_offset
