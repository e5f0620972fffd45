"""Re-driving dead letters: names, what is written once, partial re-drives, dry runs."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto import mock_aws

from loader.checkpoint.recovery import position_in_s3
from loader.config.settings import AwsSettings, SnowflakeSettings
from loader.config.spec import EventSpec
from loader.encode.dead_letter import dead_letter_table
from loader.encode.decode import BatchDecoder, Rejected
from loader.encode.parquet import write_parquet
from loader.ops.dead_letters import summarize_dead_letters
from loader.ops.freshness import newest_data_files
from loader.replay.redrive import REDRIVEN_AT_TYPE, FileRedrive, load_redriven, redrive_files
from loader.schema.avro import parse_avro_schema
from loader.store.layout import (
    FileRange,
    data_key,
    dead_letter_key,
    dead_letter_of,
    parse_data_key,
    parse_key,
    redriven_key,
)
from loader.store.s3 import ObjectInfo, S3Store
from loader.warehouse.objects import EventObjects
from tests.unit.fakes import FakeRecord, FakeWarehouse

pytestmark = pytest.mark.unit

TOPIC = "t.things"
PERIOD = 490_000  # an hour in 2025
STAMP = PERIOD * 3_600_000 + 5
SPEC = EventSpec.model_validate(
    {
        "name": "things",
        "kafka": {"topic": TOPIC, "partitions": 2},
        "schema": {"path": "things.avsc"},
        "s3": {"bucket": "b-redrive", "prefix": "events/things"},
        "snowflake": {"database": "D", "schema": "S", "table": "THINGS"},
    }
)
AT = datetime(2026, 12, 1, 18, 0, tzinfo=UTC)


def _decoder(*optional: str) -> BatchDecoder:
    """Fields id, size (int) and color: all required, except ``optional`` (nullable, default null)."""
    fields = [
        {
            "name": name,
            "type": ["null", kind] if name in optional else kind,
            **({"default": None} if name in optional else {}),
        }
        for name, kind in (("id", "string"), ("size", "int"), ("color", "string"))
    ]
    return BatchDecoder(
        parse_avro_schema({"type": "record", "name": "Thing", "version": 1 + len(optional), "fields": fields})
    )


def _record(offset: int, partition: int = 0, **payload: Any) -> FakeRecord:
    value = {
        "event_id": f"e{offset}",
        "created_at": "2025-11-27T08:00:00Z",
        "payload": {"id": f"i{offset}", **payload},
    }
    headers = [("trace", f"tr{offset}".encode()), ("bin", b"\xff\x00")]
    return FakeRecord(
        TOPIC, partition, offset, STAMP + offset, f"k{offset}".encode(), json.dumps(value).encode(), headers
    )


# Offsets 10..19 of partition 0: 10 and 13 lack size (v2 fixes), 11 and 14 lack color (v3 fixes),
# 12 is no JSON at all; 15..19 were rows, 16 also a dead letter (a range the worker re-read).
BAD = [
    _record(10, color="red"),
    _record(11, size=1),
    FakeRecord(TOPIC, 0, 12, STAMP, None, b"not json", ()),
    _record(13, color="blue"),
    _record(14),
    _record(16, color="green"),
]
GOOD = [_record(o, size=o, color="grey") for o in range(15, 20)]


def _range(first: int, last: int, partition: int = 0) -> FileRange:
    return FileRange(TOPIC, partition, first, last, PERIOD)


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    write_parquet(table, sink, 100)
    return sink.getvalue()


@pytest.fixture
def store() -> Iterator[S3Store]:
    """The event's bucket (moto, in process), with partition 0's range 10..19: its dead letters and data."""
    with mock_aws():
        s3 = S3Store(AwsSettings(region="us-east-1"), SPEC.s3.bucket)
        s3.create_bucket()
        reasons = [Rejected(r, "rejected under v1") for r in BAD]
        s3.put_new(_parquet(dead_letter_table(reasons)), dead_letter_key(SPEC, _range(10, 19)))
        s3.put_new(_parquet(_decoder().decode(GOOD).table), data_key(SPEC, _range(10, 19)))
        yield s3


def _objects(store: S3Store) -> dict[str, bytes]:
    return {info.key: store.get_bytes(info.key) for info in store.list_objects("")}


def _run(store: S3Store, decoder: BatchDecoder, *, dry_run: bool = False) -> FileRedrive:
    [result] = redrive_files(store, SPEC, decoder, since=None, until=None, redriven_at=AT, dry_run=dry_run)
    return result


def test_a_redriven_key_names_its_dead_letter_file_and_its_offsets() -> None:
    """The name is the range's data key plus an id of the offsets: the same offsets (any order)
    give the same name, others another; it reads back to its dead-letter file."""
    dead = dead_letter_key(SPEC, _range(10, 19))
    key = redriven_key(dead, [13, 10])
    assert key == redriven_key(dead, [10, 13, 13])
    assert key != redriven_key(dead, [10])
    assert key.startswith(data_key(SPEC, _range(10, 19)).removesuffix(".parquet") + ".redriven-")
    assert dead_letter_of(key) == dead
    assert dead_letter_of(data_key(SPEC, _range(10, 19))) is None
    parsed = parse_data_key(SPEC, key)  # a data file the loader admits
    assert parsed is not None and parsed.redriven is not None
    assert (parsed.partition, parsed.first_offset, parsed.last_offset) == (0, 10, 19)
    assert parse_key(key.replace("/data/", "/dead-letter/")) is None  # re-drive ids only on data files
    with pytest.raises(ValueError, match=r"must be in 10\.\.19"):
        redriven_key(dead, [9])
    with pytest.raises(ValueError, match="not a dead-letter key"):
        redriven_key(data_key(SPEC, _range(10, 19)), [10])


def test_a_redriven_file_is_no_position_of_its_partition() -> None:
    """A dead-letter-only newest range stays a pending roll, re-driven file or not (its data may be
    missing); nor is the re-driven file reported as a foreign name."""
    dead = dead_letter_key(SPEC, _range(20, 29))
    keys = [data_key(SPEC, _range(10, 19)), dead, redriven_key(dead, [21])]
    found = position_in_s3(SPEC, 0, keys, 1000, 100)
    assert found is not None and found.pending is not None
    assert (found.next_offset, found.pending.key, found.ignored) == (20, data_key(SPEC, _range(20, 29)), ())


def test_a_redrive_writes_each_record_that_now_decodes_once(store: S3Store) -> None:
    """v1 writes nothing; v2 writes the records it fixes, with their metadata and _REDRIVEN_AT (not
    one the data file holds); v2 again writes nothing; v3 writes only what it fixes on top, under
    another name; the dead-letter file never changes."""
    dead = dead_letter_key(SPEC, _range(10, 19))
    archived = store.get_bytes(dead)
    assert _run(store, _decoder()).written is None

    first = _run(store, _decoder("size"))
    assert (first.records, first.new, first.in_data, first.redriven_before) == (6, 2, 1, 0)
    assert first.still_bad.total() == 3 and first.written is not None
    table = pq.read_table(io.BytesIO(store.get_bytes(first.written)))
    assert table.column("_OFFSET").to_pylist() == [10, 13]
    assert table.column("_KEY").to_pylist() == [b"k10", b"k13"]
    assert table.column("_PARTITION").to_pylist() == [0, 0]
    assert table.column("_KAFKA_TIMESTAMP").to_pylist()[0] == datetime.fromtimestamp((STAMP + 10) / 1000, UTC)
    assert json.loads(table.column("_HEADERS")[0].as_py())[0] == {"key": "trace", "value": "tr10"}
    assert table.schema.field("_REDRIVEN_AT").type == REDRIVEN_AT_TYPE
    assert set(table.column("_REDRIVEN_AT").to_pylist()) == {AT}
    before = _objects(store)

    again = _run(store, _decoder("size"))
    assert (again.new, again.redriven_before, again.written) == (0, 2, None)
    assert again.redriven_keys == [first.written]
    assert _objects(store) == before

    more = _run(store, _decoder("size", "color"))
    assert (more.new, more.redriven_before, more.in_data) == (2, 2, 1)
    assert more.written is not None and more.written != first.written
    assert pq.read_table(io.BytesIO(store.get_bytes(more.written))).column("_OFFSET").to_pylist() == [11, 14]
    assert more.redriven_keys == [first.written, more.written]
    assert dict(more.still_bad) == {"not a JSON object": 1}
    assert store.get_bytes(dead) == archived


def test_a_dry_run_reports_what_decodes_and_writes_nothing(store: S3Store) -> None:
    """A dry run counts new, held and still-bad records, names the file it would write, and
    changes no object."""
    before = _objects(store)
    dry = _run(store, _decoder("size"), dry_run=True)
    assert (dry.new, dry.in_data, dry.still_bad.total()) == (2, 1, 3)
    assert dry.written == redriven_key(dead_letter_key(SPEC, _range(10, 19)), [10, 13])
    assert _objects(store) == before


def test_a_range_without_data_waits_until_its_partition_moves_on(store: S3Store) -> None:
    """Dead letters whose range has no data file and no later file may be a roll in progress:
    skipped; once a later file of the partition exists, re-driven."""
    dead = dead_letter_key(SPEC, _range(20, 29, partition=1))
    store.put_new(_parquet(dead_letter_table([Rejected(_record(20, 1, color="c"), "v1")])), dead)
    results = {
        r.key: r for r in redrive_files(store, SPEC, _decoder("size"), since=None, until=None, redriven_at=AT)
    }
    assert results[dead].skipped is not None and results[dead].written is None
    store.put_new(
        _parquet(_decoder().decode([_record(30, 1, size=1, color="c")]).table),
        data_key(SPEC, _range(30, 30, 1)),
    )
    results = {
        r.key: r for r in redrive_files(store, SPEC, _decoder("size"), since=None, until=None, redriven_at=AT)
    }
    assert results[dead].skipped is None and results[dead].new == 1


def test_the_dead_letter_summary_counts_redriven_records_apart(store: S3Store) -> None:
    """`loader dead-letters` lists what is left: re-driven records are no longer dead letters."""
    assert (summarize_dead_letters(SPEC, store).records, summarize_dead_letters(SPEC, store).redriven) == (
        6,
        0,
    )
    _run(store, _decoder("size"))
    summary = summarize_dead_letters(SPEC, store)
    assert (summary.records, summary.redriven) == (4, 2)
    assert {s["offset"] for s in summary.samples} == {11, 12, 14, 16}


def test_put_new_never_replaces_an_object(store: S3Store) -> None:
    """The conditional write creates a missing object and refuses an existing one."""
    assert store.put_new(b"one", "x/k")
    assert not store.put_new(b"two", "x/k")
    assert store.get_bytes("x/k") == b"one"


def test_freshness_reads_the_worker_file_not_a_redriven_one() -> None:
    """A re-driven file ends where its range's data file does, but holds old records: the newest
    file of a partition is the worker's, whatever the listing order."""
    data = data_key(SPEC, _range(10, 19))
    redriven = redriven_key(dead_letter_key(SPEC, _range(10, 19)), [10])
    files = [ObjectInfo(redriven, 1, "e"), ObjectInfo(data, 1, "e")]
    assert newest_data_files(files)[(TOPIC, 0)][0] == data


def _warehouse(loaded: list[str]) -> FakeWarehouse:
    """Snowflake as the loading path sees it; its history lists the paths ``loaded`` (a COPY's)."""
    now = datetime.now(UTC)

    def answer(sql: str) -> list[tuple[Any, ...]]:
        if sql == "SELECT CURRENT_TIMESTAMP()":
            return [(now,)]
        if "INFORMATION_SCHEMA.COPY_HISTORY" in sql:
            return [(path, "Loaded", now, None, None) for path in loaded]
        if sql.startswith("COPY INTO"):
            names = re.findall(r"'([^']+\.parquet)'", sql)
            return [(name, "LOADED", 2, 2, 1, 0, None) for name in names]
        return []

    return FakeWarehouse(answer)


@pytest.mark.parametrize("mode", ["copy", "auto-ingest"])
def test_redriven_files_load_like_reconcile_loads_them(store: S3Store, mode: str) -> None:
    """Copy mode COPYs exactly the re-driven files not loaded yet, none once loaded; auto-ingest
    never COPYs into the pipe's table: it hands them to the pipe."""
    schema = _decoder("size").schema
    objects = EventObjects(SPEC, schema, SnowflakeSettings(load_mode=mode))  # type: ignore[arg-type]
    written = _run(store, _decoder("size")).written
    assert written is not None
    warehouse = _warehouse([])
    outcome = load_redriven(warehouse, store, objects, [written], since=None, until=None)
    copies = [sql for sql in warehouse.executed if sql.startswith("COPY INTO")]
    refreshes = [sql for sql in warehouse.executed if sql.startswith("ALTER PIPE")]
    if mode == "copy":
        assert outcome.loaded == [written] and outcome.rows == 2 and refreshes == []
        assert len(copies) == 1 and f"FILES = ('{objects.relative_path(written)}')" in copies[0]
        again = _warehouse([objects.relative_path(written)])
        outcome = load_redriven(again, store, objects, [written], since=None, until=None)
        assert (outcome.loaded, outcome.skipped) == ([], [written])
        assert not any(sql.startswith("COPY INTO") for sql in again.executed)
    else:
        assert copies == [] and len(refreshes) == 1 and outcome.handed_to_pipe == [written]


def test_put_new_carries_the_requested_encryption(store: S3Store) -> None:
    """A re-driven file is written with the server-side encryption the settings ask for."""
    encrypted = S3Store(AwsSettings(region="us-east-1", sse="AES256"), SPEC.s3.bucket)
    assert encrypted.put_new(b"x", "x/encrypted")
    head = encrypted._client.head_object(Bucket=SPEC.s3.bucket, Key="x/encrypted")
    assert head["ServerSideEncryption"] == "AES256"


def test_the_range_selects_dead_letter_files_by_their_time_partition(store: S3Store) -> None:
    """[since, until) takes the dead-letter files whose hour folder is in it, and only those."""
    hour = datetime.fromtimestamp(PERIOD * 3600, UTC)

    def keys(since: datetime | None, until: datetime | None) -> list[str]:
        found = redrive_files(
            store, SPEC, _decoder("size"), since=since, until=until, redriven_at=AT, dry_run=True
        )
        return [r.key for r in found]

    assert keys(hour, hour + timedelta(hours=1)) == [dead_letter_key(SPEC, _range(10, 19))]
    assert keys(hour + timedelta(hours=1), None) == keys(None, hour) == []
