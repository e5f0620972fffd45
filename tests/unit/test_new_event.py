"""`loader new-event`: a scaffold that loads as it is, explains every field, and never clobbers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from pydantic import BaseModel

from loader.cli import cli
from loader.config.spec import (
    DeploymentSpec,
    EventSpec,
    KafkaMatch,
    KafkaSpec,
    RollingSpec,
    S3Spec,
    SchemaRef,
    SnowflakeSpec,
    load_specs,
)
from loader.errors import ConfigError
from loader.ops.new_event import scaffold
from loader.schema.resolve import schema_for

pytestmark = pytest.mark.unit

REPO = Path(__file__).parents[2]


def _new(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli,
        ["new-event", *args, "--specs", str(tmp_path / "pipelines"), "--schemas", str(tmp_path / "schemas")],
    )
    return result.exit_code, result.output


def test_scaffold_loads_and_resolves_its_schema_without_edits(tmp_path: Path) -> None:
    """The spec loads with load_specs and its schema with schema_for, with the options given."""
    code, output = _new(
        tmp_path,
        "payment_captured",
        "--topic",
        "payments.captured",
        "--partitions",
        "3",
        "--bucket",
        "pay-bucket",
    )
    assert code == 0, output
    [spec] = load_specs(tmp_path / "pipelines")
    assert (spec.name, spec.kafka.topic, spec.kafka.partitions) == (
        "payment_captured",
        "payments.captured",
        3,
    )
    assert (spec.s3.bucket, spec.s3.prefix) == ("pay-bucket", "events/payment_captured")
    assert spec.snowflake.table == "PAYMENT_CAPTURED"
    assert spec.schema_path == (tmp_path / "schemas" / "payment_captured.avsc").resolve()
    schema = schema_for(spec)
    fields = {f.name: f for f in schema.fields}
    assert list(fields) == ["id", "note", "created_at"]
    assert not fields["id"].nullable and fields["id"].type.kind == "string"
    assert fields["note"].nullable and fields["note"].has_default
    assert not fields["created_at"].nullable and fields["created_at"].type.kind == "timestamp"
    assert schema.version == 1


def test_scaffold_takes_the_models_defaults(tmp_path: Path) -> None:
    """Without options, every optional setting is the spec model's default and the topic is the name."""
    made = scaffold("order_refunded", specs_dir=tmp_path / "specs", schemas_dir=tmp_path / "schemas")
    [spec] = load_specs(tmp_path / "specs")
    assert made.spec_path == tmp_path / "specs" / "order_refunded.yaml"
    assert spec.kafka.topic == "order_refunded"
    assert spec.consumer_group == "loader.order_refunded"
    assert spec.kafka.partitions == KafkaSpec.model_fields["partitions"].default
    assert spec.rolling == RollingSpec()
    assert spec.deployment == DeploymentSpec()
    assert spec.s3.time_partition == S3Spec.model_fields["time_partition"].default
    assert spec.snowflake.on_error == SnowflakeSpec.model_fields["on_error"].default


def test_scaffold_fits_beside_the_example_specs(tmp_path: Path) -> None:
    """A scaffold in a folder of existing specs clashes with none of them (table, prefix, name)."""
    shutil.copytree(REPO / "pipelines", tmp_path / "pipelines")
    shutil.copytree(REPO / "schemas", tmp_path / "schemas")
    code, output = _new(tmp_path, "courier_assigned")
    assert code == 0, output
    examples = load_specs(REPO / "pipelines")
    names = {s.name for s in load_specs(tmp_path / "pipelines")}
    assert names == {s.name for s in examples} | {"courier_assigned"}
    check = CliRunner().invoke(
        cli, ["schemas", "check", "--against", "", "--specs", str(tmp_path / "pipelines")]
    )
    assert check.exit_code == 0, check.output
    typed = sum(s.schema_path is not None for s in examples)
    assert f"{typed + 1} schemas valid" in check.output


def test_every_spec_field_is_written_with_a_comment(tmp_path: Path) -> None:
    """Every field of the spec models appears in the file, and every line with a key explains it."""
    made = scaffold("field_tour", specs_dir=tmp_path, schemas_dir=tmp_path)
    text = made.spec_path.read_text()
    models: list[type[BaseModel]] = [
        EventSpec,
        KafkaSpec,
        KafkaMatch,
        SchemaRef,
        S3Spec,
        RollingSpec,
        SnowflakeSpec,
        DeploymentSpec,
    ]
    for model in models:
        for name, info in model.model_fields.items():
            if name in ("source_path", "siblings"):  # set by the loader, not written
                continue
            assert f"{info.alias or name}:" in text, f"{model.__name__}.{name} is not in the scaffold"
    for line in text.splitlines():
        if not line.lstrip().startswith("#") and ":" in line:
            assert " # " in line or line.rstrip().endswith(":"), f"no comment on {line!r}"


def test_raw_scaffold_has_no_schema(tmp_path: Path) -> None:
    """--raw writes only the spec; the table gets the single PAYLOAD variant column."""
    code, output = _new(tmp_path, "web_click", "--raw")
    assert code == 0, output
    assert not (tmp_path / "schemas").exists()
    [spec] = load_specs(tmp_path / "pipelines")
    assert spec.schema_ref.mode == "raw"
    assert [(f.column, f.type.kind) for f in schema_for(spec).fields] == [("PAYLOAD", "variant")]


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    """An existing spec is left untouched unless --force is given."""
    assert _new(tmp_path, "store_closed")[0] == 0
    spec_path = tmp_path / "pipelines" / "store_closed.yaml"
    spec_path.write_text(spec_path.read_text().replace('description: ""', "description: edited by hand"))
    code, output = _new(tmp_path, "store_closed")
    assert code == 2
    assert "already exist" in output and "--force" in output and "Traceback" not in output
    assert "edited by hand" in spec_path.read_text()
    code, output = _new(tmp_path, "store_closed", "--force")
    assert code == 0, output
    assert "edited by hand" not in spec_path.read_text()


@pytest.mark.parametrize(
    "name",
    ["PaymentCaptured", "payment-captured", "1st_event", "_hidden", "a b", "store$updated", "tip_", "x" * 64],
)
def test_bad_name_is_a_clear_message(tmp_path: Path, name: str) -> None:
    """A name that is not lower snake case is refused with the rule and an example, exit code 2."""
    code, output = _new(tmp_path, name)
    assert code == 2
    assert "lower snake case" in output and "payment_captured" in output
    assert "Traceback" not in output
    assert not (tmp_path / "pipelines").exists()


def test_a_scaffold_that_would_not_load_leaves_nothing_behind(tmp_path: Path) -> None:
    """A bad option value is reported from the spec's validation, and no file is left behind."""
    code, output = _new(tmp_path, "bad_bucket", "--bucket", "Not_A_Bucket")
    assert code == 2
    assert "s3.bucket" in output and "nothing was written" in output
    assert list((tmp_path / "pipelines").iterdir()) == []
    assert list((tmp_path / "schemas").iterdir()) == []


def test_a_clash_with_another_spec_restores_the_overwritten_files(tmp_path: Path) -> None:
    """--force over a spec whose name another file also uses fails and puts the old files back."""
    scaffold("twice", specs_dir=tmp_path, schemas_dir=tmp_path)
    old = (tmp_path / "twice.yaml").read_text()
    (tmp_path / "copy_of_twice.yaml").write_text(old.replace("prefix: events/twice", "prefix: events/other"))
    (tmp_path / "twice.yaml").write_text(old.replace("table: TWICE", "table: TWICE_OLD"))
    with pytest.raises(ConfigError, match="same event name twice"):
        scaffold("twice", specs_dir=tmp_path, schemas_dir=tmp_path, force=True)
    assert "table: TWICE_OLD" in (tmp_path / "twice.yaml").read_text()


def test_next_steps_name_the_commands(tmp_path: Path) -> None:
    """The command prints the files it wrote and the next commands, with the specs folder given."""
    code, output = _new(tmp_path, "tip_added")
    assert code == 0, output
    specs = f"--specs {tmp_path / 'pipelines'}"
    for line in (
        f"wrote {tmp_path / 'pipelines' / 'tip_added.yaml'}",
        f"wrote {tmp_path / 'schemas' / 'tip_added.avsc'}",
        f"`loader plan tip_added {specs}`",
        f"`loader pipes apply tip_added {specs}`",
        f"`loader worker run tip_added {specs}`",
    ):
        assert line in output
    written = yaml.safe_load((tmp_path / "pipelines" / "tip_added.yaml").read_text())
    assert written["schema"] == {"path": "../schemas/tip_added.avsc"}


def test_the_longest_name_scaffolds_a_spec_that_loads(tmp_path: Path) -> None:
    """A 63-character name (the most a spec takes) scaffolds a spec and schema that load as written."""
    name = "a" * 30 + "__" + "b" * 31
    code, output = _new(tmp_path, name)
    assert code == 0, output
    [spec] = load_specs(tmp_path / "pipelines", [name])
    assert spec.snowflake.table == name.upper()
    assert schema_for(spec).fields


@pytest.mark.parametrize(
    ("option", "value", "rule"),
    [
        ("--topic", "..", "not '.' or '..'"),
        ("--topic", "*a", "not a valid Kafka topic name"),
        ("--topic", "[", "not a valid Kafka topic name"),
        ("--bucket", "a..b", "must not hold two adjacent periods"),
        ("--bucket", "192.168.1.1", "must not be formatted as an IP address"),
    ],
)
def test_new_event_refuses_what_a_spec_refuses(tmp_path: Path, option: str, value: str, rule: str) -> None:
    """A topic or bucket a spec would refuse is refused with its rule, and no file is left behind."""
    code, output = _new(tmp_path, "tip_added", option, value)
    assert code == 2, output
    assert rule in output and "nothing was written" in output
    assert "Traceback" not in output
    assert list((tmp_path / "pipelines").iterdir()) == []
