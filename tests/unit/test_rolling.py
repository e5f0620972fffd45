"""The rolling policy's rules, one by one (the routing that applies them: test_partition)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from loader.config.settings import AwsSettings, KafkaSettings, Settings, SnowflakeSettings
from loader.config.spec import EventSpec, load_specs
from loader.ops.plan import plan_event
from loader.store.layout import FileRange, period_ms
from loader.worker.partition import pending_for
from loader.worker.rolling import (
    ARROW_TO_PARQUET_RATIO,
    MAX_LATENESS_MS,
    accepted_timestamps,
    expired,
    over_size,
    roll_for_memory,
    split_at_boundaries,
)
from tests.unit.fakes import FakeRecord

pytestmark = pytest.mark.unit

BASE = {s.name: s for s in load_specs(Path(__file__).parents[2] / "pipelines")}["order_created"]
HOUR = 3_600_000


def _spec(**rolling: object) -> EventSpec:
    return BASE.model_copy(update={"rolling": BASE.rolling.model_copy(update=rolling)})


def test_an_open_file_takes_a_day_of_late_records_and_nothing_past_its_period() -> None:
    """An hour's file takes timestamps from a day before its hour to the end of the hour."""
    earliest, latest = accepted_timestamps(30, HOUR)
    assert (earliest, latest) == (30 * HOUR - MAX_LATENESS_MS, 31 * HOUR)
    assert earliest == 6 * HOUR


def test_a_file_is_over_size_once_disk_plus_compressed_buffers_reach_the_limit() -> None:
    """Bytes on disk count as they are; Arrow buffers count at the zstd ratio."""
    spec = _spec(max_file_bytes=10_000)
    assert not over_size(spec, 9_999, ARROW_TO_PARQUET_RATIO - 1)
    assert over_size(spec, 9_999, ARROW_TO_PARQUET_RATIO)
    assert over_size(spec, 0, 10_000 * ARROW_TO_PARQUET_RATIO)
    assert not over_size(spec, 0, 10_000 * ARROW_TO_PARQUET_RATIO - 1)


def test_a_file_expires_max_age_s_after_its_first_record() -> None:
    """Age counts from opening, on the worker's clock; with no open file nothing expires."""
    spec = _spec(max_age_s=300.0)
    assert not expired(spec, 1_000.0, 1_299.9)
    assert expired(spec, 1_000.0, 1_300.0)
    assert not expired(spec, None, 10**9)


@dataclass
class _Partition:
    memory_bytes: int
    spool: object | None = "open"


def test_memory_pressure_rolls_the_biggest_open_file_only_over_the_budget() -> None:
    """Within the budget nothing rolls; over it, the partition holding the most memory does."""
    small, big = _Partition(100), _Partition(300)
    assert roll_for_memory([small, big], budget_bytes=400) is None
    assert roll_for_memory([small, big], budget_bytes=399) is big
    assert roll_for_memory([], budget_bytes=0) is None


def test_memory_pressure_leaves_a_biggest_partition_without_an_open_file() -> None:
    """Memory held by a partition with no open file (a recovery's) rolls nothing early."""
    assert roll_for_memory([_Partition(100), _Partition(300, spool=None)], budget_bytes=10) is None


@pytest.mark.parametrize("time_partition", ["hour", "day"])
def test_plans_example_key_is_the_key_the_worker_gives_a_file_opened_then(time_partition: str) -> None:
    """``loader plan`` and the worker compute a record's time partition with the same function:
    a full file whose first record is produced at the plan's instant gets the plan's keys."""
    small = _spec(max_records=1_000)
    spec = small.model_copy(update={"s3": small.s3.model_copy(update={"time_partition": time_partition})})
    now = datetime(2026, 11, 27, 8, 59, 59, 999_000, tzinfo=UTC)
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        aws=AwsSettings(region="us-east-1"),
        snowflake=SnowflakeSettings(account="acct", user="u"),
    )
    plan = plan_event(spec, settings, now=now)
    timestamp = int(now.timestamp() * 1000)
    records = [
        FakeRecord(spec.kafka.topic, 0, i, timestamp, None, b"{}") for i in range(spec.rolling.max_records)
    ]
    [(segment, period, ends_file)] = split_at_boundaries(spec, 0, None, records)
    assert ends_file
    assert period == timestamp // period_ms(spec)
    covered = FileRange(spec.kafka.topic, 0, segment[0].offset, segment[-1].offset, period)
    pending = pending_for(spec, covered, 1)
    assert (pending.key, pending.dlq) == (plan.s3.example_data_key, plan.s3.example_dead_letter_key)
