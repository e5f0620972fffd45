"""Event specs: the examples load, and bad specs get messages naming file and field."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loader.config.identifiers import S3_PREFIX_CHARS, check_event_name, check_ident
from loader.config.settings import SnowflakeSettings
from loader.config.spec import RESERVED_TABLES, TABLE_OBJECT_SUFFIXES, load_spec, load_specs
from loader.config.yamlfile import MAX_CONFIG_BYTES
from loader.errors import ConfigError, SpecError
from loader.store.layout import FileRange, data_key, dead_letter_key, parse_key
from loader.warehouse.objects import PIPES_TABLE, EventObjects
from tests.unit.example_specs import EXAMPLES, write_example_spec

pytestmark = pytest.mark.unit


def test_examples_load_with_derived_names() -> None:
    """The shipped example specs load and derive group, prefixes and schema path."""
    specs = {s.name: s for s in load_specs(EXAMPLES)}
    assert set(specs) == {"store_updated", "order_created", "app_click"}
    order = specs["order_created"]
    assert order.consumer_group == "loader.order_created"
    assert order.data_prefix == "events/order_created/data/"
    assert order.schema_path is not None and order.schema_path.is_file()
    assert order.snowflake.table == "ORDER_CREATED"


def test_missing_field_names_file_and_field(tmp_path: Path) -> None:
    """A spec without its topic is refused with the file and the dotted field."""
    path = write_example_spec(tmp_path, "orders", kafka__topic=None)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert str(path) in str(caught.value)
    assert "kafka.topic: Field required" in str(caught.value)


def test_hostile_table_name_is_refused(tmp_path: Path) -> None:
    """A table name carrying SQL is refused before anything reaches Snowflake."""
    path = write_example_spec(tmp_path, "orders", snowflake__table='X"; DROP TABLE USERS; --')
    with pytest.raises(SpecError, match=r"snowflake.table: Snowflake name .* is not allowed"):
        load_spec(path)


def test_unknown_field_is_refused(tmp_path: Path) -> None:
    """A typo in a field name is an error, not silently ignored."""
    path = write_example_spec(tmp_path, "orders", rolling__max_recrods=10)
    with pytest.raises(SpecError, match=r"rolling.max_recrods: Extra inputs are not permitted"):
        load_spec(path)


def test_wrong_type_says_what_was_given(tmp_path: Path) -> None:
    """A value of the wrong type is reported with the value given."""
    path = write_example_spec(tmp_path, "orders", rolling__max_age_s="soon")
    with pytest.raises(SpecError, match=r"rolling.max_age_s: .*\(got 'soon'\)"):
        load_spec(path)


def test_invalid_yaml_is_reported(tmp_path: Path) -> None:
    """Broken YAML gets a message, not a parser traceback."""
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)


def test_missing_schema_file_is_reported(tmp_path: Path) -> None:
    """A schema path that does not exist is caught at load time."""
    path = write_example_spec(tmp_path, "orders", schema__path="nope.avsc")
    with pytest.raises(SpecError, match=r"schema.path: file .*nope.avsc does not exist"):
        load_spec(path)


def test_nested_prefixes_are_refused(tmp_path: Path) -> None:
    """Two events whose S3 prefixes nest would load each other's files: refused."""
    write_example_spec(tmp_path, "a", name="a_event", s3__prefix="events/a", snowflake__table="A")
    write_example_spec(tmp_path, "b", name="b_event", s3__prefix="events/a/b", snowflake__table="B")
    with pytest.raises(ConfigError, match="prefixes must not nest"):
        load_specs(tmp_path)


def test_duplicate_tables_are_refused(tmp_path: Path) -> None:
    """Two events loading into one table are refused."""
    write_example_spec(tmp_path, "a", name="a_event", s3__prefix="events/a")
    write_example_spec(tmp_path, "b", name="b_event", s3__prefix="events/b")
    with pytest.raises(ConfigError, match="same table"):
        load_specs(tmp_path)


def test_unknown_event_name_lists_known_ones() -> None:
    """Asking for an event without a spec lists the ones that exist."""
    with pytest.raises(ConfigError, match="known: app_click, order_created, store_updated"):
        load_specs(EXAMPLES, ["nope"])


def _alias_bomb(levels: int) -> str:
    """A spec whose name is ``levels`` nested lists of 9 aliases each: 9**levels strings once expanded."""
    lines = ["a0: &a0 [" + ", ".join(['"xxxxxxxxxxxxxxxx"'] * 9) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join([*lines, f"name: *a{levels - 1}", ""])


def test_a_yaml_alias_bomb_is_refused_at_once_with_a_short_message(tmp_path: Path) -> None:
    """A 1 KB spec of nested aliases is refused within a second, with a short message naming aliases."""
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb(9))
    assert len(path.read_bytes()) <= 1100
    started = time.monotonic()
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert time.monotonic() - started < 1
    assert "YAML aliases (*name) are not allowed" in str(caught.value)
    assert len(str(caught.value)) < 500


def test_an_oversized_spec_file_is_refused_unread(tmp_path: Path) -> None:
    """A spec file above 1 MiB is refused before it is parsed."""
    path = tmp_path / "huge.yaml"
    path.write_text("description: " + "x" * (MAX_CONFIG_BYTES + 1) + "\n")
    with pytest.raises(SpecError, match="larger than 1024 KiB"):
        load_spec(path)


def test_a_huge_value_is_quoted_clipped(tmp_path: Path) -> None:
    """An error quotes at most a short excerpt of the value given, however large."""
    path = write_example_spec(
        tmp_path, "orders", kafka__topic="t" * 100_000, rolling__max_age_s=["soon"] * 10_000
    )
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert "kafka.topic: topic 'tttt" in message and "characters left out" in message
    assert "rolling.max_age_s" in message
    assert len(message) < 1500


def test_a_flood_of_problems_is_counted_not_listed(tmp_path: Path) -> None:
    """A spec with a thousand unknown fields lists the first 20 problems and counts the rest."""
    path = write_example_spec(tmp_path, "orders", **{f"field_{i}": i for i in range(1000)})
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert "… and 980 more" in str(caught.value)
    assert len(str(caught.value).splitlines()) == 22


def test_a_table_name_too_long_for_its_stage_pipe_and_format_is_refused(tmp_path: Path) -> None:
    """A 250-255 character table name is refused at load, naming snowflake.table and the derived names."""
    for length in (248, 250, 255):
        path = write_example_spec(tmp_path, "orders", snowflake__table="T" * length)
        with pytest.raises(
            SpecError, match=r"snowflake.table: table name .* at most 247 are allowed.*_PARQUET"
        ):
            load_spec(path)


def test_the_longest_table_name_derives_valid_snowflake_names(tmp_path: Path) -> None:
    """A 247 character table loads, and its file format, stage and pipe names are valid identifiers."""
    spec = load_spec(write_example_spec(tmp_path, "orders", snowflake__table="T" * 247))
    objects = EventObjects.for_spec(spec, SnowflakeSettings())
    derived = [objects.file_format_name, objects.stage_name, objects.pipe_name]
    assert sorted(name.removeprefix("T" * 247) for name in derived) == sorted(TABLE_OBJECT_SUFFIXES)
    for name in derived:
        assert check_ident(name) == name
    assert PIPES_TABLE in RESERVED_TABLES


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("name", "store$updated", "lower snake case"),
        ("name", "Store_Updated", "lower snake case"),
        ("name", "store_updated_", "ending with a letter or digit"),
        ("name", "_store", "beginning with a letter"),
        ("name", "s" * 64, "at most 63 characters"),
        ("kafka__topic", ".", "not '.' or '..'"),
        ("kafka__topic", "..", "not '.' or '..'"),
        ("kafka__topic", "orders/created", "letters, digits, '.', '_' and '-'"),
        ("kafka__topic", "t" * 250, "1 to 249"),
        ("kafka__cluster", "eu west", "Kafka cluster"),
        ("s3__bucket", "192.168.1.1", "must not be formatted as an IP address"),
        ("s3__bucket", "a..b", "must not hold two adjacent periods"),
        ("s3__bucket", "ab", "must be 3 to 63 characters long"),
        ("s3__bucket", "b" * 64, "must be 3 to 63 characters long"),
        ("s3__bucket", "Delivery-Events", "lower-case letters"),
        ("s3__bucket", "-events", "begin and end with a letter or digit"),
        ("s3__bucket", "xn--events", "must not begin with 'xn--'"),
        ("s3__bucket", "sthree-events", "must not begin with 'sthree-'"),
        ("s3__bucket", "events-s3alias", "must not end with '-s3alias'"),
        ("s3__bucket", "events--ol-s3", "must not end with '--ol-s3'"),
        ("s3__bucket", "events.mrap", "must not end with '.mrap'"),
        ("s3__prefix", "/events/orders", "no leading '/'"),
        ("s3__prefix", "events//orders", "'/'-separated parts"),
        ("s3__prefix", "events/../orders", "no '..'"),
        ("s3__prefix", "events/a..b", "no '..'"),
        ("s3__prefix", "events\\orders", "'/'-separated parts"),
        ("s3__prefix", "events/orders\n", "'/'-separated parts"),
        ("s3__prefix", "events/\x00orders", "'/'-separated parts"),
        ("s3__prefix", "events/o*", "'/'-separated parts"),
        ("s3__prefix", "e" * 513, "longer than 512 characters"),
        ("snowflake__database", "ANALYTICS;", "letters, digits and underscores"),
        ("snowflake__table", "loader_pipes", "holds the loader's pipe definitions"),
    ],
)
def test_names_breaking_their_systems_rules_are_refused(
    tmp_path: Path, field: str, value: str, rule: str
) -> None:
    """Each name a spec gives is refused, naming the field and the rule, if its system would refuse it."""
    path = write_example_spec(tmp_path, "orders", **{field: value})
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert f"  - {field.replace('__', '.')}: " in str(caught.value)
    assert rule in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "a"),
        ("name", "o" * 61 + "_2"),
        ("name", "store__updated"),
        ("kafka__topic", "t" * 249),
        ("kafka__topic", "..orders"),
        ("s3__bucket", "a.b-c"),
        ("s3__bucket", "b" * 63),
        ("s3__prefix", "events/env=prod/orders/"),
        ("s3__prefix", "p" * 512),
    ],
)
def test_names_at_the_edge_of_the_rules_load(tmp_path: Path, field: str, value: str) -> None:
    """Names that only just follow the rules are accepted (a trailing '/' of a prefix is dropped)."""
    loaded: Any = load_spec(write_example_spec(tmp_path, "orders", **{field: value})).model_dump(
        mode="json", by_alias=True
    )
    for part in field.split("__"):
        loaded = loaded[part]
    assert loaded == value.removesuffix("/")


def test_the_longest_prefix_and_topic_make_keys_s3_accepts(tmp_path: Path) -> None:
    """With the longest prefix and topic allowed, data and dead-letter keys stay within S3's 1024 bytes."""
    spec = load_spec(
        write_example_spec(tmp_path, "orders", s3__prefix="p" * S3_PREFIX_CHARS, kafka__topic="t" * 249)
    )
    covered = FileRange(
        topic=spec.kafka.topic, partition=9_999, first_offset=2**63 - 2, last_offset=2**63 - 1, period=2**20
    )
    for key in (data_key(spec, covered), dead_letter_key(spec, covered)):
        assert parse_key(key) is not None
        assert len(key.encode()) <= 1024


@given(st.text(alphabet="aZ0_-$. é", max_size=70) | st.from_regex(r"[a-z][a-z0-9_]{0,70}", fullmatch=True))
@settings(max_examples=300, deadline=None)
def test_every_accepted_event_name_is_a_kubernetes_name_in_the_chart(name: str) -> None:
    """An accepted event name, with '-' for '_' as the Helm chart writes it, is a DNS-1123/1035 label."""
    try:
        check_event_name(name)
    except ValueError:
        return
    label = name.replace("_", "-")
    assert len(label) <= 63
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", label)


def test_a_deeply_nested_spec_is_refused_with_a_message(tmp_path: Path) -> None:
    """Nesting deep enough to exhaust the YAML parser's stack is a spec error, not a RecursionError."""
    path = tmp_path / "deep.yaml"
    path.write_text("name: " + "[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(SpecError, match="nested too deeply"):
        load_spec(path)


@pytest.mark.parametrize("text", ["red \x1b[31malert", "bell\x07", "c1 \x9b31m"])
def test_free_text_with_control_characters_is_refused(tmp_path: Path, text: str) -> None:
    """description and owner are printed by `loader plan`: control characters would drive the terminal."""
    with pytest.raises(SpecError, match="description: control characters are not allowed"):
        load_spec(write_example_spec(tmp_path, "ctl", description=text))
    assert (
        load_spec(write_example_spec(tmp_path, "ok", description="two\nlines\tand tabs")).description.count(
            "\n"
        )
        == 1
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rolling__max_age_s", float("inf")),
        ("rolling__max_age_s", float("nan")),
        ("rolling__max_age_s", 30 * 86_400),
        ("deployment__memory_budget_mb", 2**40),
    ],
)
def test_limits_without_meaning_are_refused(tmp_path: Path, field: str, value: float) -> None:
    """An infinite, NaN or month-long age (a partition that never flushes) and a budget no machine
    has are refused at load, naming the field."""
    with pytest.raises(SpecError, match=field.replace("__", ".")):
        load_spec(write_example_spec(tmp_path, "limits", **{field: value}))
