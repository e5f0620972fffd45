"""A partition's position from its files in S3, when Kafka lost the loader's checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from loader.checkpoint.recovery import FromS3, position_in_s3, positions_in_s3, resume
from loader.config.spec import load_specs
from loader.store.layout import FileRange, data_key, dead_letter_key
from loader.store.s3 import ObjectInfo
from loader.worker.partition import pending_for

pytestmark = pytest.mark.unit

SPEC = {s.name: s for s in load_specs(Path(__file__).parents[2] / "pipelines")}["order_created"]
TOPIC = SPEC.kafka.topic
PERIOD = 490_000
END = 10_000
RG = 700


def _range(first: int, last: int, partition: int = 2, period: int = PERIOD) -> FileRange:
    return FileRange(TOPIC, partition, first, last, period)


def _data(first: int, last: int, partition: int = 2, period: int = PERIOD) -> str:
    return data_key(SPEC, _range(first, last, partition, period))


def _dead(first: int, last: int, partition: int = 2, period: int = PERIOD) -> str:
    return dead_letter_key(SPEC, _range(first, last, partition, period))


@dataclass
class FakeStore:
    """A bucket's keys; records which prefixes were listed."""

    keys: list[str]
    listed: list[str] = field(default_factory=list)

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        self.listed.append(prefix)
        for key in sorted(self.keys):
            if key.startswith(prefix):
                yield ObjectInfo(key, 1, "etag")


def _position(keys: list[str], end: int = END) -> FromS3 | None:
    return position_in_s3(SPEC, 2, keys, end, RG)


def test_the_next_offset_follows_the_last_offset_any_file_covers() -> None:
    """Files in several folders (the newest folder holds the oldest offsets): resume after the last offset."""
    keys = [
        _data(0, 99, period=PERIOD + 5),
        _data(100, 199),
        _dead(100, 199),
        _data(200, 349, period=PERIOD + 1),
    ]
    found = _position(keys)
    assert found == FromS3(350, 349, None, _data(200, 349, period=PERIOD + 1))


def test_a_newest_range_with_only_dead_letters_is_rebuilt_as_a_pending_roll() -> None:
    """Dead letters in S3 without their data file (the upload stopped between them): that range is
    re-read and finished, with the keys the spec gives it, before reading on."""
    found = _position([_data(0, 99), _dead(0, 99), _dead(100, 149, period=PERIOD + 1)])
    assert found is not None
    assert found.next_offset == 100
    assert found.covered_to == 149
    assert found.pending == pending_for(SPEC, _range(100, 149, period=PERIOD + 1), RG)
    assert found.newest == _dead(100, 149, period=PERIOD + 1)


def test_a_newest_range_with_its_data_file_is_complete_with_or_without_dead_letters() -> None:
    """Data goes to S3 after the dead letters: a data file means the range is done."""
    for keys in ([_data(0, 99), _data(100, 149)], [_data(0, 99), _dead(100, 149), _data(100, 149)]):
        found = _position(keys)
        assert found is not None
        assert (found.next_offset, found.pending) == (150, None)


def test_no_file_of_the_partition_is_no_position() -> None:
    """Other partitions' files say nothing about this one."""
    assert _position([]) is None
    assert _position([_data(0, 99, partition=1), _data(0, 99, partition=3)]) is None


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (_data(0, 99).replace("p0002-", "p00002-"), "not a name this spec writes"),
        (_data(0, 99).replace(SPEC.s3.prefix, "events/someone_else"), "not a name this spec writes"),
        (_data(0, 99).replace("/hour=16", ""), "not a name this spec writes"),
        (_data(900, 100), "not a name this spec writes"),
        (_data(0, 99).replace(f"/{TOPIC}/", "/other.topic/"), "not a file name of this partition"),
        (_data(0, 99).replace(".parquet", ".parquet.tmp"), "not a file name of this partition"),
        (_data(5_000, 99_999_999), "offsets the partition does not have"),
        (_dead(9_000, END), "offsets the partition does not have"),
    ],
)
def test_a_name_this_spec_does_not_write_is_no_position(key: str, reason: str) -> None:
    """Another writer's name, or one claiming offsets past the partition's end, does not move the
    position (the file before it does), and is reported with why."""
    found = _position([_data(0, 99), key])
    assert found is not None
    assert (found.next_offset, found.pending) == (100, None)
    assert len(found.ignored) == 1
    assert reason in found.ignored[0]


def test_only_foreign_names_are_no_position() -> None:
    """Keys in the partition's places that this spec would not write leave the partition unknown."""
    assert _position([_data(0, 99).replace("p0002-", "p00002-")]) is None


def test_one_listing_of_data_and_dead_letters_answers_every_partition() -> None:
    """Both prefixes are listed once, whatever the number of partitions asked about."""
    store = FakeStore([_data(0, 9, partition=0), _dead(0, 9, partition=1), _data(0, 4, partition=1)])
    found = positions_in_s3(store, SPEC, {0: END, 1: END, 2: END}, RG)  # type: ignore[arg-type]
    assert store.listed == [SPEC.data_prefix, SPEC.dead_letter_prefix]
    assert found[0] is not None and (found[0].next_offset, found[0].pending) == (10, None)
    assert found[1] is not None and found[1].pending == pending_for(SPEC, _range(0, 9, partition=1), RG)
    assert found[2] is None


COMPLETE = FromS3(500, 499, None, "k")
PENDING = pending_for(SPEC, _range(400, 499), RG)
INCOMPLETE = FromS3(400, 499, PENDING, "k")


@pytest.mark.parametrize(
    ("committed", "found", "expected"),
    [
        (None, None, (None, None, "reset")),
        (None, COMPLETE, (500, None, "s3")),
        (None, INCOMPLETE, (400, PENDING, "s3")),
        (0, COMPLETE, (500, None, "s3")),  # an operator's reset to the start would duplicate
        (450, INCOMPLETE, (400, PENDING, "s3")),  # inside the range that may lack its data
        (499, COMPLETE, (500, None, "s3")),
        (500, COMPLETE, (500, None, "committed")),  # a worker from before the position marker
        (500, INCOMPLETE, (500, None, "committed")),  # ... after a file of dead letters only
        (7_000, COMPLETE, (7_000, None, "committed")),  # skipped forward on purpose
        (42, None, (42, None, "committed")),
    ],
)
def test_a_committed_offset_not_written_by_the_loader_never_goes_behind_s3(
    committed: int | None, found: FromS3 | None, expected: tuple[object, ...]
) -> None:
    """S3 wins over an offset behind it (reading again would duplicate); an offset at or past
    what S3 holds is taken; with neither, the reset position."""
    decided = resume(committed, found)
    assert (decided.next_offset, decided.pending, decided.source) == expected
    assert decided.reason
