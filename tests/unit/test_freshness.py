"""Freshness: the newest ``_CREATED_AT`` in a table (in-process fakesnow) and in S3 footers (moto)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import fakesnow
import pyarrow as pa
import pytest
from moto import mock_aws

from loader.config.settings import AwsSettings, SnowflakeSettings
from loader.config.spec import EventSpec
from loader.encode.parquet import write_parquet
from loader.errors import StorageError
from loader.ops.freshness import newest_created_at_in_s3
from loader.store.layout import FileRange, data_key, dead_letter_key
from loader.store.listing import data_files
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.freshness import newest_created_at_in_table
from loader.warehouse.objects import EventObjects
from tests.integration.helpers import make_spec

pytestmark = [
    pytest.mark.unit,
    # fakesnow (in-process) warns about an extra copy of result rows; harmless here.
    pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result:UserWarning"),
]

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


@pytest.fixture
def spec() -> EventSpec:
    return make_spec("fresh_events", bucket="fresh-bucket")


@pytest.fixture
def store(spec: EventSpec) -> Iterator[S3Store]:
    with mock_aws():
        s3 = S3Store(AwsSettings(region="us-east-1"), spec.s3.bucket)
        s3.create_bucket()
        yield s3


def _put(store: S3Store, key: str, created: list[datetime], *, row_group: int = 1000, wide: int = 0) -> None:
    columns: dict[str, pa.Array] = {
        "_CREATED_AT": pa.array(created, pa.timestamp("us", tz="UTC")),
        "_OFFSET": pa.array(range(len(created)), pa.int64()),
    }
    for i in range(wide):
        columns[f"c{i:03d}"] = pa.array([f"v{i}"] * len(created))
    sink = io.BytesIO()
    write_parquet(pa.table(columns), sink, row_group)
    sink.seek(0)
    store.upload_fileobj(sink, key)


def _key(spec: EventSpec, partition: int, first: int, last: int, kind: str = "data") -> str:
    covered = FileRange(spec.kafka.topic, partition, first, last, int(T0.timestamp()) // 3600)
    return (data_key if kind == "data" else dead_letter_key)(spec, covered)


def test_s3_freshness_is_the_newest_created_at_of_each_partitions_last_file(
    store: S3Store, spec: EventSpec
) -> None:
    """The newest value over the partitions' last files is found; dead letters are not data."""
    _put(store, _key(spec, 0, 0, 9), [T0 + timedelta(seconds=i) for i in range(10)])
    _put(store, _key(spec, 0, 10, 19), [T0 + timedelta(seconds=10 + i) for i in range(10)], row_group=3)
    _put(store, _key(spec, 1, 0, 4), [T0 + timedelta(seconds=i * 7) for i in range(5)])
    _put(store, _key(spec, 1, 5, 5, kind="dead-letter"), [T0 + timedelta(days=1)])

    assert newest_created_at_in_s3(store, data_files(store, spec, None, None)) == T0 + timedelta(seconds=28)


def test_s3_freshness_reads_a_footer_larger_than_the_first_ranged_get(
    store: S3Store, spec: EventSpec
) -> None:
    """A file whose footer exceeds the first 64 KiB read still yields its maximum."""
    created = [T0 + timedelta(minutes=i) for i in range(300)]
    _put(store, _key(spec, 0, 0, 299), created, row_group=2, wide=20)
    tail = store.get_tail(_key(spec, 0, 0, 299), 8)
    assert int.from_bytes(tail[:4], "little") > 64 * 1024  # the case under test really happens

    assert newest_created_at_in_s3(store, data_files(store, spec, None, None)) == created[-1]


def test_s3_freshness_is_none_without_data_files(store: S3Store, spec: EventSpec) -> None:
    """No data file yet: nothing to be fresh about."""
    assert newest_created_at_in_s3(store, data_files(store, spec, None, None)) is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not parquet at all", "is not a Parquet file"),
        (b"PAR1" + b"garbage!" + (8).to_bytes(4, "little") + b"PAR1", "unreadable Parquet footer"),
    ],
    ids=["no-magic", "corrupt-footer"],
)
def test_a_data_key_that_is_not_parquet_is_a_clear_error(
    store: S3Store, spec: EventSpec, body: bytes, message: str
) -> None:
    """A foreign or damaged object under a data key is reported with its key, not a pyarrow traceback."""
    key = _key(spec, 0, 0, 0)
    store.upload_fileobj(io.BytesIO(body), key)
    with pytest.raises(StorageError, match=message) as caught:
        newest_created_at_in_s3(store, data_files(store, spec, None, None))
    assert key in str(caught.value)


def test_table_freshness_is_none_until_rows_arrive_then_the_utc_maximum(spec: EventSpec) -> None:
    """Missing table and empty table give None; rows give the newest value as aware UTC."""
    with fakesnow.patch(), Warehouse(SnowflakeSettings(account="acct", user="u", password="p")) as warehouse:
        objects = EventObjects.for_spec(spec, warehouse.settings)
        assert newest_created_at_in_table(warehouse, objects) is None  # no database, schema or table
        warehouse.execute(objects.create_database())
        warehouse.execute(objects.create_schema())
        warehouse.execute(f'CREATE TABLE {objects.table} ("_CREATED_AT" TIMESTAMP_TZ)')
        assert newest_created_at_in_table(warehouse, objects) is None  # empty
        plus_two = timezone(timedelta(hours=2))
        for moment in (
            datetime(2026, 11, 27, 10, 0, tzinfo=plus_two),
            datetime(2026, 11, 27, 7, 30, tzinfo=UTC),
        ):
            warehouse.execute(f"INSERT INTO {objects.table} VALUES ('{moment.isoformat()}')")
        newest = newest_created_at_in_table(warehouse, objects)
    assert newest == datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
    assert newest is not None
    assert newest.utcoffset() == timedelta(0)
