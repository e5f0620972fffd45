"""Partition routing: where files end, and recovery of a recorded roll."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from loader.checkpoint.committer import Generation
from loader.config.spec import EventSpec, load_specs
from loader.devstack.samples import SampleEvents
from loader.encode.decode import BatchDecoder
from loader.schema import load_avro_schema
from loader.worker.partition import PartitionState, Roll, pending_for
from loader.worker.rolling import split_at_boundaries
from tests.unit.fakes import FakeRecord

pytestmark = pytest.mark.unit

BASE = {s.name: s for s in load_specs(Path(__file__).parents[2] / "pipelines")}["order_created"]
assert BASE.schema_path is not None
SCHEMA = load_avro_schema(BASE.schema_path)
HOUR = 3_600_000
TP = TopicPartition("t", 0)


def _spec(**rolling: object) -> EventSpec:
    return BASE.model_copy(update={"rolling": BASE.rolling.model_copy(update=rolling)})


def _records(timestamps: list[int], start: int = 0) -> list[FakeRecord]:
    return [FakeRecord("t", 0, start + i, ts, None, b"{}") for i, ts in enumerate(timestamps)]


def _shape(segments):
    return [([r.offset for r in seg], period, ends) for seg, period, ends in segments]


def _events(count: int, start: int = 0) -> list[FakeRecord]:
    samples = SampleEvents("order_created", SCHEMA, seed=3)
    return [FakeRecord("t", 0, i, 10 * HOUR + i, *samples.encoded(i)) for i in range(start, start + count)]


def _state(spec: EventSpec, tmp_path: Path, **kwargs: object) -> PartitionState:
    defaults: dict[str, object] = {
        "next_offset": None,
        "pending": None,
        "row_group_records": lambda: 7,
        "generation": Generation(3, "member-1"),
    }
    return PartitionState(TP, spec, BatchDecoder(SCHEMA), spool_dir=tmp_path, **(defaults | kwargs))  # type: ignore[arg-type]


def _digest(roll: Roll) -> str:
    assert roll.closed.data_path is not None
    return hashlib.sha256(roll.closed.data_path.read_bytes()).hexdigest()


def test_one_open_segment_when_nothing_ends() -> None:
    """Records of one hour under the count limit stay in the open file."""
    records = _records([10 * HOUR + i for i in range(5)])
    assert _shape(split_at_boundaries(_spec(), 0, None, records)) == [([0, 1, 2, 3, 4], 10, False)]


def test_cut_at_max_records() -> None:
    """A file ends exactly at max_records, counting what the open file already holds."""
    records = _records([10 * HOUR] * 7, start=2)
    assert _shape(split_at_boundaries(_spec(max_records=4), 2, 10, records)) == [
        ([2, 3], 10, True),
        ([4, 5, 6, 7], 10, True),
        ([8], 10, False),
    ]


def test_cut_when_hour_moves_forward_but_not_back() -> None:
    """A later hour starts a new file; a late record stays in the open one."""
    records = _records([10 * HOUR, 10 * HOUR + 5, 11 * HOUR, 10 * HOUR + 9, 11 * HOUR + 1, 12 * HOUR])
    assert _shape(split_at_boundaries(_spec(), 0, None, records)) == [
        ([0, 1], 10, True),
        ([2, 3, 4], 11, True),
        ([5], 12, False),
    ]


def test_open_file_ends_when_first_new_record_is_later() -> None:
    """If the batch starts in a later hour, the open file ends before it."""
    records = _records([11 * HOUR, 11 * HOUR], start=1)
    assert _shape(split_at_boundaries(_spec(), 1, 10, records)) == [([], 10, True), ([1, 2], 11, False)]


def test_recovery_rebuilds_the_recorded_file_byte_for_byte(tmp_path: Path) -> None:
    """A pending roll is rebuilt with the same range, row groups and bytes, then routing goes on."""
    spec = _spec(max_records=1_000_000)
    events = _events(40)
    original = _state(spec, tmp_path)
    original.ingest(events[:13], now=0.0)
    original.ingest(events[13:25], now=1.0)
    rolls: list[Roll] = []
    original.close_into(rolls)
    [first] = rolls
    assert (first.closed.covered.first_offset, first.closed.covered.last_offset) == (0, 24)

    recovering = _state(spec, tmp_path, next_offset=0, pending=first.pending, row_group_records=lambda: 999)
    recovered = recovering.ingest(events[:5], now=5.0) + recovering.ingest(events[5:], now=6.0)
    [again] = recovered
    assert again.recovery
    assert again.pending == first.pending
    assert again.closed.covered == first.closed.covered
    assert _digest(again) == _digest(first)
    assert recovering.spool is not None
    assert (recovering.spool.first_offset, recovering.spool.records) == (25, 15)


def test_already_processed_offsets_are_dropped(tmp_path: Path) -> None:
    """Records before the partition's next offset (a refetch) are not processed twice."""
    state = _state(_spec(), tmp_path, next_offset=10)
    state.ingest(_events(15), now=0.0)
    assert state.spool is not None
    assert (state.spool.first_offset, state.spool.records) == (10, 5)


def test_marker_records_range_keys_and_row_groups(tmp_path: Path) -> None:
    """The roll's checkpoint names its range, both keys and its row-group size."""
    state = _state(_spec(), tmp_path)
    state.ingest(_events(3), now=0.0)
    rolls: list[Roll] = []
    state.close_into(rolls)
    [roll] = rolls
    assert roll.pending == pending_for(_spec(), roll.closed.covered, 7)
    assert roll.pending.key.endswith("p0000-00000000000000000000-00000000000000000002.parquet")
    assert "/dead-letter/" in roll.pending.dlq
