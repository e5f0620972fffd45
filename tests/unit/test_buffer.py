"""Rolling policy: files end at record counts and forward time-partition moves."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from loader.config.spec import load_specs
from loader.worker.buffer import PartitionBuffer, split_at_boundaries
from tests.unit.fakes import FakeRecord

pytestmark = pytest.mark.unit

BASE = {s.name: s for s in load_specs(Path(__file__).parents[2] / "pipelines")}["order_created"]
HOUR = 3_600_000


def _spec(max_records: int = 1000):
    return BASE.model_copy(update={"rolling": BASE.rolling.model_copy(update={"max_records": max_records})})


def _records(timestamps: list[int], start: int = 0) -> list[FakeRecord]:
    return [FakeRecord("t", 0, start + i, ts, None, b"{}") for i, ts in enumerate(timestamps)]


def _shape(segments):
    return [([r.offset for r in seg], bucket, ends) for seg, bucket, ends in segments]


def test_one_open_segment_when_nothing_ends() -> None:
    """Records of one hour under the count limit stay in the open file."""
    records = _records([10 * HOUR + i for i in range(5)])
    assert _shape(split_at_boundaries(_spec(), PartitionBuffer("t", 0), records)) == [
        ([0, 1, 2, 3, 4], 10, False)
    ]


def test_cut_at_max_records() -> None:
    """A file ends exactly at max_records, counting what the buffer already holds."""
    buffer = PartitionBuffer("t", 0)
    buffer.add(_records([10 * HOUR] * 2), pa.table({}), [], bucket=10, now=0.0)
    records = _records([10 * HOUR] * 7, start=2)
    assert _shape(split_at_boundaries(_spec(max_records=4), buffer, records)) == [
        ([2, 3], 10, True),
        ([4, 5, 6, 7], 10, True),
        ([8], 10, False),
    ]


def test_cut_when_hour_moves_forward_but_not_back() -> None:
    """A later hour starts a new file; a late record stays in the open one."""
    records = _records([10 * HOUR, 10 * HOUR + 5, 11 * HOUR, 10 * HOUR + 9, 11 * HOUR + 1, 12 * HOUR])
    assert _shape(split_at_boundaries(_spec(), PartitionBuffer("t", 0), records)) == [
        ([0, 1], 10, True),
        ([2, 3, 4], 11, True),
        ([5], 12, False),
    ]


def test_open_buffer_ends_when_first_new_record_is_later() -> None:
    """If the batch starts in a later hour, the buffered file ends before it."""
    buffer = PartitionBuffer("t", 0)
    buffer.add(_records([10 * HOUR]), pa.table({}), [], bucket=10, now=0.0)
    records = _records([11 * HOUR, 11 * HOUR], start=1)
    assert _shape(split_at_boundaries(_spec(), buffer, records)) == [([], 10, True), ([1, 2], 11, False)]


def test_expiry_uses_age_since_first_record() -> None:
    """A buffer expires max_age_s after its first record arrived, not its last."""
    spec = _spec()
    buffer = PartitionBuffer("t", 0)
    buffer.add(_records([0]), pa.table({}), [], bucket=0, now=100.0)
    buffer.add(_records([1], start=1), pa.table({}), [], bucket=0, now=350.0)
    assert not buffer.expired(spec, 100.0 + spec.rolling.max_age_s - 1)
    assert buffer.expired(spec, 100.0 + spec.rolling.max_age_s)
