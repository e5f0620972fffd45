"""``loader status``: lag arithmetic, formatting, and sources that fail without taking the others down."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fakesnow
import pyarrow as pa
import pytest
from click.testing import CliRunner
from moto import mock_aws
from rich.console import Console

import loader.ops.status as ops_status
from loader.cli import cli
from loader.cli.status import duration, status_table
from loader.config.settings import AwsSettings, KafkaSettings, Settings, SnowflakeSettings
from loader.config.spec import EventSpec
from loader.encode.parquet import write_parquet
from loader.ops.status import EventStatus, PartitionLag, gather_status, partition_lags
from loader.store.layout import FileRange, data_key, dead_letter_key
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.objects import EventObjects
from tests.integration.helpers import make_spec

pytestmark = [
    pytest.mark.unit,
    pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result:UserWarning"),
]

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_lag_counts_from_the_commit_or_from_the_earliest_offset() -> None:
    """Committed partitions lag by end - commit; uncommitted or expired ones from the earliest offset."""
    lags = partition_lags(
        end={0: 100, 1: 50, 2: 80, 3: 10},
        beginning={0: 0, 1: 5, 2: 60, 3: 10},
        committed={0: 90, 1: None, 2: 20, 3: None},
    )
    assert [(p.partition, p.lag) for p in lags] == [(0, 10), (1, 45), (2, 20), (3, 0)]
    assert lags[1].committed is None


def test_durations_read_like_a_person_writes_them() -> None:
    """Seconds, minutes, hours and days are shown with the two largest units."""
    assert [duration(s) for s in (None, 4.4, 65, 3_725, 3 * 86_400 + 4 * 3_600 + 59, -30)] == [
        "-",
        "4s",
        "1m 05s",
        "1h 02m",
        "3d 4h",
        "-30s",
    ]


def test_the_table_marks_only_the_failed_source_unavailable() -> None:
    """With the warehouse down, its columns say unavailable while Kafka and S3 values show."""
    statuses = [
        EventStatus(
            event="orders",
            lag=7,
            lag_by_partition=[PartitionLag(0, 7, None, 7)],
            last_file="events/orders/data/dt=2026-11-27/hour=11/t/p0000-00000000000000000000-00000000000000000006.parquet",
            last_file_time=NOW - timedelta(seconds=90),
            files_in_s3=3,
            dead_letters=2,
            freshness_s3_s=95.0,
            unavailable={"warehouse": "cannot connect to Snowflake"},
        )
    ]
    console = Console(record=True, width=250, file=io.StringIO())
    console.print(status_table(statuses, NOW))
    text = console.export_text()
    row = next(line for line in text.splitlines() if "orders" in line)
    cells = [c.strip() for c in row.split("│")[1:-1]]
    assert cells == [
        "orders",
        "7",
        "p0000-00000000000000000000-00000000000000000006.parquet (1m 30s ago)",
        "3",
        "unavailable",
        "unavailable",
        "2",
        "unavailable",
        "1m 35s",
    ]


def test_json_names_every_field_and_the_reasons() -> None:
    """The JSON form carries lag per partition and the unavailable sources with their reasons."""
    status = EventStatus(
        event="orders",
        lag=3,
        lag_by_partition=[PartitionLag(0, 5, 4, 1), PartitionLag(1, 2, None, 2)],
        last_file_time=NOW,
        unavailable={"kafka": "no answer"},
    )
    document = status.to_json()
    assert document["lag_by_partition"] == {"0": 1, "1": 2}
    assert document["last_file_time"] == "2026-11-27T12:00:00+00:00"
    assert document["unavailable"] == {"kafka": "no answer"}
    assert set(document) == {
        "event",
        "topic",
        "takes",
        "shared_with",
        "lag",
        "lag_by_partition",
        "last_file",
        "last_file_time",
        "files_in_s3",
        "files_not_loaded",
        "files_unknown",
        "last_load_time",
        "load_history",
        "load_history_note",
        "dead_letters",
        "freshness_table_s",
        "freshness_s3_s",
        "unavailable",
    }


def test_unknown_event_is_a_clear_error() -> None:
    """Asking for an event without a spec lists the known ones and exits 2, no traceback."""
    specs = Path(__file__).parents[2] / "pipelines"
    result = CliRunner().invoke(cli, ["status", "nope", "--specs", str(specs)])
    assert result.exit_code == 2
    assert "known: app_click, order_created, store_updated" in result.output
    assert "Traceback" not in result.output


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


def _write(store: S3Store, key: str, created: datetime, rows: int) -> None:
    table = pa.table(
        {
            "_CREATED_AT": pa.array([created] * rows, pa.timestamp("us", tz="UTC")),
            "_PARTITION": pa.array([0] * rows, pa.int32()),
            "_OFFSET": pa.array(range(rows), pa.int64()),
            "_REASON": pa.array(["bad"] * rows),
            "_VALUE": pa.array([b"x"] * rows),
        }
    )
    sink = io.BytesIO()
    write_parquet(table, sink, 100)
    sink.seek(0)
    store.upload_fileobj(sink, key)


@pytest.mark.usefixtures("aws")
def test_an_unreachable_broker_leaves_s3_and_warehouse_columns_filled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kafka down: both events show Kafka unavailable (asked once), S3 and warehouse still report."""
    specs = [make_spec("st_one", bucket="status-bucket"), make_spec("st_two", bucket="status-bucket")]
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        aws=AwsSettings(region="us-east-1"),
        snowflake=SnowflakeSettings(account="acct", user="u", password="fakesnow"),
    )
    store = S3Store(settings.aws, "status-bucket")
    store.create_bucket()
    bucket = int(NOW.timestamp()) // 3600
    created = NOW - timedelta(seconds=42)
    _write(store, data_key(specs[0], FileRange("t.st_one", 0, 0, 9, bucket)), created, 10)
    _write(store, dead_letter_key(specs[0], FileRange("t.st_one", 0, 10, 12, bucket)), created, 3)
    asked: list[str] = []
    real_lag = ops_status.consumer_lag

    async def counting_lag(spec: EventSpec, kafka: KafkaSettings) -> Any:
        asked.append(spec.name)
        return await real_lag(spec, kafka)

    monkeypatch.setattr(ops_status, "consumer_lag", counting_lag)

    with fakesnow.patch():
        with Warehouse(settings.snowflake) as warehouse:
            objects = EventObjects.for_spec(specs[0], settings.snowflake)
            for statement in (objects.create_database(), objects.create_schema(), objects.create_table()):
                warehouse.execute(statement)
        one, two = gather_status(specs, settings, now=NOW)

    assert asked == ["st_one"]  # the second event did not wait for the same broker again
    assert "127.0.0.1" in one.unavailable["kafka"]
    assert two.unavailable["kafka"] == one.unavailable["kafka"]
    assert one.lag is None
    assert one.files_in_s3 == 1
    assert one.last_file is not None
    assert one.last_file.endswith("p0000-00000000000000000000-00000000000000000009.parquet")
    assert one.dead_letters == 3
    assert one.freshness_s3_s == 42.0
    assert one.files_not_loaded == 1
    assert one.last_load_time is None
    assert one.freshness_table_s is None  # the table exists but is empty
    assert "warehouse" not in one.unavailable
    assert "s3" not in one.unavailable
    assert two.files_in_s3 == 0
    # st_two's table was never created: nothing loaded and nothing fresh, but no failure either.
    assert (two.files_not_loaded, two.freshness_table_s, set(two.unavailable)) == (0, None, {"kafka"})


def test_an_unreachable_s3_is_reported_quickly() -> None:
    """S3 down: its columns say so within seconds (a worker's retries would take far longer)."""
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        aws=AwsSettings.model_validate(
            {
                "region": "us-east-1",
                "endpoint_url": "http://127.0.0.1:1",
                "access_key_id": "testing",
                "secret_access_key": "testing",
            }
        ),
        snowflake=SnowflakeSettings(account="acct", user="u", password="fakesnow"),
    )
    specs = [make_spec("st_one", bucket="status-bucket"), make_spec("st_two", bucket="status-bucket")]
    started = time.monotonic()
    with fakesnow.patch():
        one, two = gather_status(specs, settings, now=NOW)
    assert time.monotonic() - started < 6  # 8 tries per request took 11 s here
    for status in (one, two):
        assert "127.0.0.1:1" in status.unavailable["s3"]
        assert status.files_in_s3 is None and status.freshness_s3_s is None
