"""The audit's range logic: gaps, overlaps and the committed tail between a partition's files."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from loader.ops.audit import FileSet, Problem, coverage

pytestmark = pytest.mark.unit

MOMENT = datetime(2026, 11, 27, 8, tzinfo=UTC)


def _files(*ranges: tuple[int, int]) -> list[FileSet]:
    return [FileSet(0, first, last, MOMENT, data=f"k{first}-{last}") for first, last in ranges]


def _found(problems: list[Problem]) -> list[tuple[str, int, int]]:
    return [(p.kind, p.first_offset, p.last_offset) for p in problems]


def test_contiguous_ranges_up_to_the_committed_offset_are_complete() -> None:
    """Ranges that follow each other (given in any order) and reach committed - 1: no problem."""
    assert coverage(0, _files((100, 199), (0, 99), (200, 249)), 250, check_tail=True) == []


def test_a_missing_range_is_a_gap_between_its_neighbours() -> None:
    """A hole between two files is one gap with its exact offsets and both neighbours' keys."""
    [gap] = coverage(0, _files((0, 99), (150, 199)), 200, check_tail=True)
    assert _found([gap]) == [("gap", 100, 149)]
    assert gap.files == ("k0-99", "k150-199")


def test_overlapping_ranges_are_named_with_the_shared_offsets() -> None:
    """A range claiming offsets of another (also one inside it) is an overlap of exactly those offsets."""
    problems = coverage(0, _files((0, 99), (90, 149), (100, 120), (150, 199)), 200, check_tail=True)
    assert _found(problems) == [("overlap", 90, 99), ("overlap", 100, 120)]


def test_offsets_committed_beyond_the_last_file_are_reported() -> None:
    """A committed offset past the files' reach leaves offsets in no file."""
    assert _found(coverage(0, _files((0, 99)), 150, check_tail=True)) == [("not_committed", 100, 149)]
    assert coverage(0, _files((0, 99)), 150, check_tail=False) == []


def test_files_past_the_committed_offset_are_no_gap() -> None:
    """A roll in flight (files beyond the committed offset) is not a coverage problem."""
    assert coverage(0, _files((0, 99), (100, 199)), 100, check_tail=True) == []


def test_the_same_range_twice_is_an_overlap() -> None:
    """Two keys naming the very same range (e.g. another time folder) overlap entirely."""
    assert _found(coverage(0, _files((0, 99), (0, 99)), 100, check_tail=True)) == [("overlap", 0, 99)]
