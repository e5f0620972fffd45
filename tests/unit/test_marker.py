"""Checkpoint markers read from commit metadata, which any client of the group can write."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from loader.checkpoint.marker import PendingFile, Position, decode_marker
from loader.config.spec import load_specs
from loader.store.layout import FileRange
from loader.worker.partition import pending_for

pytestmark = pytest.mark.unit

SPEC = {s.name: s for s in load_specs(Path(__file__).parents[2] / "pipelines")}["order_created"]
OURS = pending_for(SPEC, FileRange("orders", 3, 1000, 1999, 490_000), 500)


def test_a_marker_this_code_writes_reads_back_and_matches() -> None:
    """encode → decode gives the same roll, and it is consistent with where it was committed."""
    decoded = decode_marker(OURS.encode())
    assert decoded == OURS
    assert decoded.mismatch(SPEC, "orders", 3, 1000) is None


def test_the_loaders_position_marker_reads_back() -> None:
    """The final commit's marker decodes to the position it records; empty metadata is nothing."""
    assert Position(2000).encode() == '{"v":1,"next":2000}'
    assert decode_marker(Position(2000).encode()) == Position(2000)
    assert decode_marker("") is None


WRITTEN_BEFORE_THE_RENAME = (
    '{"v":1,"first":1000,"last":1999,"bucket":490000,"rg":500,'
    '"key":"events/order_created/data/dt=2025-11-24/hour=16/orders/p0003-00000000000000001000-00000000000000001999.parquet",'
    '"dlq":"events/order_created/dead-letter/dt=2025-11-24/hour=16/orders/p0003-00000000000000001000-00000000000000001999.parquet"}'
)
"""A marker exactly as workers commit it, with the period under its wire name ``bucket``."""


def test_a_marker_committed_by_a_running_worker_still_decodes_to_the_same_roll() -> None:
    """The wire format did not change with the field's name: ``bucket`` is read as the period,
    and this code writes the very same string (so recovery finishes rolls recorded before)."""
    decoded = decode_marker(WRITTEN_BEFORE_THE_RENAME)
    assert decoded == OURS
    assert decoded.period == 490_000
    assert OURS.encode() == WRITTEN_BEFORE_THE_RENAME


@pytest.mark.parametrize(
    "metadata",
    [
        '{"v":1}',
        '{"v":1,"next":"2000"}',
        '{"v":1,"next":2000,"first":0}',
        '{"v":1,"first":"0","last":1,"bucket":1,"rg":1,"key":"k","dlq":"d"}',
        '{"v":1,"first":0,"last":1,"bucket":1,"rg":1,"key":null,"dlq":"d"}',
        '{"v":1,"first":0.5,"last":1,"bucket":1,"rg":1,"key":"k","dlq":"d"}',
        '{"v":2,"first":0,"last":1,"bucket":1,"rg":1,"key":"k","dlq":"d"}',
        "[1, 2]",
        "not json",
        "[" * 100_000,
        json.dumps({"v": 1, "first": 0}) + "x" * 1_000_000,
    ],
)
def test_metadata_that_is_no_marker_is_a_value_error_with_a_short_message(metadata: str) -> None:
    """Missing fields, wrong types, other versions, deep nesting: ValueError (the committer then
    counts the offset with nothing pending), never KeyError or TypeError, and clipped."""
    with pytest.raises(ValueError, match="not a loader checkpoint marker") as raised:
        decode_marker(metadata)
    assert len(str(raised.value)) < 300


@pytest.mark.parametrize(
    ("marker", "committed", "reason"),
    [
        (OURS, 999, "committed at 999"),
        (replace(OURS, last=10), 1000, "make no file"),
        (replace(OURS, rg=0), 1000, "make no file"),
        (replace(OURS, period=10**15), 1000, "no date"),
        (replace(OURS, key="events/order_created/data/../../elsewhere.parquet"), 1000, "is not the one"),
        (replace(OURS, dlq=OURS.key), 1000, "is not the one"),
    ],
)
def test_a_marker_that_is_not_this_workers_roll_is_named_a_mismatch(
    marker: PendingFile, committed: int, reason: str
) -> None:
    """Recovery never follows a marker whose offsets, time partition or keys this worker would
    not have written: it would upload to a key someone else chose."""
    problem = marker.mismatch(SPEC, "orders", 3, committed)
    assert problem is not None
    assert reason in problem
