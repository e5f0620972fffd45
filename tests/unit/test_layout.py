"""S3 keys: derived from the data only, sortable, and readable back."""

from __future__ import annotations

from pathlib import Path

import pytest

from loader.config.spec import load_specs
from loader.store.layout import FileRange, data_key, dead_letter_key, parse_data_key, parse_key, period_of

pytestmark = pytest.mark.unit

SPEC = {s.name: s for s in load_specs(Path(__file__).parents[2] / "pipelines")}["order_created"]
T = 1_764_230_400_000 + 123  # 2025-11-27 08:00:00.123 UTC


def test_key_names_event_time_topic_partition_offsets() -> None:
    """A data key holds the prefix, the hour of its first record, topic, partition and offsets."""
    key = data_key(SPEC, FileRange("orders.order_created", 3, 1000, 1999, period_of(SPEC, T)))
    assert key == (
        "events/order_created/data/dt=2025-11-27/hour=08/orders.order_created/"
        "p0003-00000000000000001000-00000000000000001999.parquet"
    )
    parsed = parse_key(key)
    assert parsed is not None
    assert (parsed.kind, parsed.topic, parsed.partition, parsed.first_offset, parsed.last_offset) == (
        "data",
        "orders.order_created",
        3,
        1000,
        1999,
    )
    assert parsed.time_partition.hour == 8


def test_dead_letter_key_mirrors_data_key() -> None:
    """Dead letters of a range live outside the data prefix, under the same name."""
    period = period_of(SPEC, T)
    key = dead_letter_key(SPEC, FileRange("t", 0, 5, 9, period))
    assert key.startswith("events/order_created/dead-letter/")
    assert not key.startswith(SPEC.data_prefix)
    assert key.split("/")[-1] == data_key(SPEC, FileRange("t", 0, 5, 9, period)).split("/")[-1]


def test_keys_sort_by_offset() -> None:
    """Zero-padded offsets make lexical order the offset order within a partition."""
    period = period_of(SPEC, T)
    keys = [data_key(SPEC, FileRange("t", 1, first, first + 9, period)) for first in (5, 50, 500, 5000)]
    assert sorted(keys) == keys


def test_day_partitioning() -> None:
    """A spec partitioned by day has no hour folder."""
    daily = SPEC.model_copy(update={"s3": SPEC.s3.model_copy(update={"time_partition": "day"})})
    key = data_key(daily, FileRange("t", 0, 1, 2, period_of(daily, T)))
    assert "/dt=2025-11-27/t/" in key
    assert parse_key(key) is not None


def test_foreign_keys_are_not_parsed() -> None:
    """Keys the loader did not write are recognised as such."""
    assert parse_key("events/order_created/data/random.parquet") is None


GOOD = (
    "events/order_created/data/dt=2025-11-27/hour=08/orders.order_created/p0003-"
    + "0" * 20
    + "-"
    + "0" * 19
    + "9.parquet"
)


@pytest.mark.parametrize(
    "key",
    [
        "events/order_created/data/../../pwned/dt=2025-11-27/hour=08/t/p0003-"
        + "0" * 20
        + "-"
        + "0" * 20
        + ".parquet",
        "events/order_created/data/dt=2025-11-27/hour=08/../p0003-" + "0" * 20 + "-" + "0" * 20 + ".parquet",
        "events/order_created/data/dt=2025-11-27/hour=08/./p0003-" + "0" * 20 + "-" + "0" * 20 + ".parquet",
        "events/order_created/data/dt=2025-11-27/hour=08//p0003-" + "0" * 20 + "-" + "0" * 20 + ".parquet",
        "events//order_created/data/dt=2025-11-27/hour=08/t/p0003-" + "0" * 20 + "-" + "0" * 20 + ".parquet",
        "events/order_created/data/dt=2025-11-27/hour=08/a\\b/p0003-"
        + "0" * 20
        + "-"
        + "0" * 20
        + ".parquet",
        "events/order_created/data/dt=2025-11-27/hour=08/a\nb/p0003-"
        + "0" * 20
        + "-"
        + "0" * 20
        + ".parquet",
        GOOD + "\n",
        "/" + GOOD,
        "../" + GOOD,
        GOOD.replace("hour=08", "hour=24"),
        GOOD.replace("2025-11-27", "2025-02-30"),
        GOOD.replace("p0003", "p\u0663\u0660\u0660\u0663"),  # Arabic-Indic digits are not ASCII digits
    ],
)
def test_a_key_is_a_name_never_a_path(key: str) -> None:
    """Any key that is not exactly the form the workers write (traversal, '//', backslash,
    control character, impossible time) is not read as a data file."""
    assert parse_key(key) is None
    assert parse_data_key(SPEC, key) is None


def test_a_data_key_belongs_to_its_spec_only() -> None:
    """A well-formed key is a data file of the spec whose prefix and time partitioning it has."""
    assert parse_key(GOOD) is not None
    assert parse_data_key(SPEC, GOOD) is not None
    other = SPEC.model_copy(update={"s3": SPEC.s3.model_copy(update={"prefix": "events/other"})})
    daily = SPEC.model_copy(update={"s3": SPEC.s3.model_copy(update={"time_partition": "day"})})
    assert parse_data_key(other, GOOD) is None
    assert parse_data_key(daily, GOOD) is None
    assert parse_data_key(SPEC, GOOD.replace("/data/", "/dead-letter/")) is None
