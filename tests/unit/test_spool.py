"""SpoolFile: one open file written to local disk a row group at a time."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from loader.config.spec import load_specs
from loader.devstack.samples import SampleEvents
from loader.encode.decode import BatchDecoder, DecodedBatch, Rejected
from loader.schema import load_avro_schema
from loader.store.layout import FileRange
from loader.worker.spool import SpoolFile
from tests.unit.fakes import FakeRecord

pytestmark = pytest.mark.unit

SPEC = {s.name: s for s in load_specs(Path(__file__).parents[2] / "pipelines")}["order_created"]
assert SPEC.schema_path is not None
SCHEMA = load_avro_schema(SPEC.schema_path)
DECODER = BatchDecoder(SCHEMA)
HOUR = 3_600_000
FIRST = 100


def _events(count: int, start: int = FIRST) -> list[FakeRecord]:
    samples = SampleEvents("order_created", SCHEMA, seed=5)
    return [FakeRecord("t", 2, i, 10 * HOUR + i, *samples.encoded(i)) for i in range(start, start + count)]


def _spool(tmp_path: Path, row_group_records: int = 4, first_offset: int = FIRST) -> SpoolFile:
    return SpoolFile(
        topic="t",
        partition=2,
        first_offset=first_offset,
        period=10,
        schema=DECODER.file_schema,
        row_group_records=row_group_records,
        spool_dir=tmp_path,
    )


def _fill(spool: SpoolFile, records: list[FakeRecord], batch_sizes: list[int]) -> None:
    assert sum(batch_sizes) == len(records)
    start = 0
    for size in batch_sizes:
        batch = records[start : start + size]
        spool.append(batch, DECODER.decode(batch))
        start += size


def _row_groups(path: Path) -> list[int]:
    meta = pq.ParquetFile(path).metadata
    return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]


@pytest.mark.parametrize("batch_sizes", [[18], [3, 5, 1, 9], [5, 5, 8], [6, 7, 5], [1] * 18])
def test_row_groups_are_cut_every_n_rows_from_the_file_start_however_records_are_batched(
    tmp_path: Path, batch_sizes: list[int]
) -> None:
    """18 rows with N=4 give row groups 4,4,4,4,2 and the same bytes for every batching."""
    records = _events(18)
    one_batch = _spool(tmp_path)
    _fill(one_batch, records, [18])
    batched = _spool(tmp_path)
    _fill(batched, records, batch_sizes)
    expected, closed = one_batch.close(), batched.close()
    assert closed.data_path is not None
    assert expected.data_path is not None
    assert _row_groups(closed.data_path) == [4, 4, 4, 4, 2]
    assert closed.data_path.read_bytes() == expected.data_path.read_bytes()


def test_memory_holds_only_the_row_group_being_filled(tmp_path: Path) -> None:
    """Rows stay in memory until N are there; then full row groups go to disk and leave memory."""
    (tmp_path / "s").mkdir()
    spool = _spool(tmp_path / "s", row_group_records=4)
    records = _events(9)
    _fill(spool, records[:3], [3])
    assert spool.file_bytes == 0
    assert spool.memory_bytes > 0
    assert not list((tmp_path / "s").rglob("*.parquet"))
    three_rows = spool.memory_bytes
    _fill(spool, records[3:9], [6])  # 9 rows: two row groups on disk, one row in memory
    assert spool.file_bytes > 0
    assert 0 < spool.memory_bytes < three_rows
    closed = spool.close()
    assert spool.memory_bytes == 0
    assert closed.data_path is not None
    assert _row_groups(closed.data_path) == [4, 4, 1]


def test_close_hands_over_the_rows_in_offset_order_with_the_range_and_counts(tmp_path: Path) -> None:
    """The closed file covers first..last, holds every row once in order, and its sizes are real."""
    records = _events(10)
    spool = _spool(tmp_path)
    _fill(spool, records, [6, 4])
    assert spool.raw_bytes == sum(len(r.value or b"") for r in records)
    closed = spool.close()
    assert closed.covered == FileRange("t", 2, FIRST, FIRST + 9, 10)
    assert (closed.rows, closed.records, closed.dead_letters) == (10, 10, 0)
    assert closed.dead_letter_path is None
    assert closed.data_path is not None
    assert closed.data_bytes == closed.data_path.stat().st_size > 0
    table = pq.read_table(closed.data_path)
    assert table.column("_OFFSET").to_pylist() == list(range(FIRST, FIRST + 10))
    assert table.column("_KEY").to_pylist() == [r.key for r in records]


def test_dead_letters_go_to_their_own_file_in_offset_order(tmp_path: Path) -> None:
    """Rejected records are written to dead-letter.parquet, sorted by offset whatever order they came in."""
    good = _events(3)
    bad = [FakeRecord("t", 2, FIRST + 3 + i, 10 * HOUR, None, b"not json %d" % i) for i in range(3)]
    spool = _spool(tmp_path)
    spool.append(good, DECODER.decode(good))
    reversed_rejects = [Rejected(r, f"reason {r.offset}") for r in reversed(bad)]
    spool.append(bad, DecodedBatch(DECODER.file_schema.empty_table(), reversed_rejects))
    assert spool.memory_bytes > 0
    closed = spool.close()
    assert (closed.rows, closed.dead_letters, closed.records) == (3, 3, 6)
    assert closed.covered.last_offset == FIRST + 5
    assert closed.dead_letter_path is not None
    assert closed.dead_letter_path.name == "dead-letter.parquet"
    dead = pq.read_table(closed.dead_letter_path)
    assert dead.column("_OFFSET").to_pylist() == [FIRST + 3, FIRST + 4, FIRST + 5]
    assert dead.column("_REASON").to_pylist() == [f"reason {FIRST + i}" for i in (3, 4, 5)]
    assert dead.column("_VALUE").to_pylist() == [r.value for r in bad]


def test_a_file_of_only_dead_letters_has_no_data_file(tmp_path: Path) -> None:
    """When no record becomes a row there is no data file, only dead letters."""
    bad = [FakeRecord("t", 2, FIRST + i, 10 * HOUR, None, b"[]") for i in range(2)]
    spool = _spool(tmp_path)
    spool.append(bad, DECODER.decode(bad))
    closed = spool.close()
    assert closed.data_path is None
    assert closed.data_bytes == 0
    assert closed.rows == 0
    assert closed.dead_letters == 2
    assert closed.dead_letter_path is not None
    assert closed.dead_letter_path.exists()


def test_an_empty_append_changes_nothing(tmp_path: Path) -> None:
    """No records: still empty, and the last offset stays just before the first."""
    spool = _spool(tmp_path)
    spool.append([], DECODER.decode([]))
    assert spool.empty
    assert spool.last_offset == FIRST - 1
    assert spool.memory_bytes == 0


def test_discard_deletes_what_was_written_and_the_folder(tmp_path: Path) -> None:
    """A discarded spool leaves nothing in the spool folder, even after row groups went to disk."""
    spool = _spool(tmp_path, row_group_records=2)
    _fill(spool, _events(5), [5])
    assert spool.file_bytes > 0
    assert list(tmp_path.iterdir())
    spool.discard()
    assert spool.memory_bytes == 0
    assert not list(tmp_path.iterdir())


def test_a_closed_file_discards_its_data_dead_letters_and_folder(tmp_path: Path) -> None:
    """ClosedFile.discard removes both local files and the folder they were in."""
    records = [*_events(2), FakeRecord("t", 2, FIRST + 2, 10 * HOUR, None, b"nope")]
    spool = _spool(tmp_path)
    spool.append(records, DECODER.decode(records))
    closed = spool.close()
    assert closed.data_path is not None
    assert closed.dead_letter_path is not None
    assert closed.data_path.exists()
    assert closed.dead_letter_path.exists()
    closed.discard()
    assert not list(tmp_path.iterdir())
