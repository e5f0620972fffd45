"""Event specs: the examples load, and bad specs get messages naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from loader.config.spec import load_spec, load_specs
from loader.errors import ConfigError, SpecError

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).parents[2] / "pipelines"


def _write(tmp_path: Path, file_stem: str, **changes: object) -> Path:
    data = yaml.safe_load((EXAMPLES / "order_created.yaml").read_text())
    data["schema"]["path"] = str((EXAMPLES.parent / "schemas" / "order_created.avsc").resolve())
    for dotted, value in changes.items():
        target = data
        *parents, leaf = dotted.split("__")
        for parent in parents:
            target = target[parent]
        if value is None:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    path = tmp_path / f"{file_stem}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


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
    path = _write(tmp_path, "orders", kafka__topic=None)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert str(path) in str(caught.value)
    assert "kafka.topic: Field required" in str(caught.value)


def test_hostile_table_name_is_refused(tmp_path: Path) -> None:
    """A table name carrying SQL is refused before anything reaches Snowflake."""
    path = _write(tmp_path, "orders", snowflake__table='X"; DROP TABLE USERS; --')
    with pytest.raises(SpecError, match=r"snowflake.table: Snowflake name .* is not allowed"):
        load_spec(path)


def test_unknown_field_is_refused(tmp_path: Path) -> None:
    """A typo in a field name is an error, not silently ignored."""
    path = _write(tmp_path, "orders", rolling__max_recrods=10)
    with pytest.raises(SpecError, match=r"rolling.max_recrods: Extra inputs are not permitted"):
        load_spec(path)


def test_wrong_type_says_what_was_given(tmp_path: Path) -> None:
    """A value of the wrong type is reported with the value given."""
    path = _write(tmp_path, "orders", rolling__max_age_s="soon")
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
    path = _write(tmp_path, "orders", schema__path="nope.avsc")
    with pytest.raises(SpecError, match=r"schema.path: file .*nope.avsc does not exist"):
        load_spec(path)


def test_nested_prefixes_are_refused(tmp_path: Path) -> None:
    """Two events whose S3 prefixes nest would load each other's files: refused."""
    _write(tmp_path, "a", name="a_event", s3__prefix="events/a", snowflake__table="A")
    _write(tmp_path, "b", name="b_event", s3__prefix="events/a/b", snowflake__table="B")
    with pytest.raises(ConfigError, match="prefixes must not nest"):
        load_specs(tmp_path)


def test_duplicate_tables_are_refused(tmp_path: Path) -> None:
    """Two events loading into one table are refused."""
    _write(tmp_path, "a", name="a_event", s3__prefix="events/a")
    _write(tmp_path, "b", name="b_event", s3__prefix="events/b")
    with pytest.raises(ConfigError, match="same table"):
        load_specs(tmp_path)


def test_unknown_event_name_lists_known_ones() -> None:
    """Asking for an event without a spec lists the ones that exist."""
    with pytest.raises(ConfigError, match="known: app_click, order_created, store_updated"):
        load_specs(EXAMPLES, ["nope"])
