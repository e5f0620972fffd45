"""Schema evolution rules (Confluent BACKWARD for Avro) and the `schemas check` command."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from loader.cli import cli
from loader.schema import parse_avro_schema
from loader.schema.compat import backward_problems

pytestmark = pytest.mark.unit

REPO = Path(__file__).parents[2]


def _schema(version: int, *fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": "T", "version": version, "fields": list(fields)}


BASE = [
    {"name": "id", "type": "string"},
    {"name": "amount", "type": "int"},
    {"name": "note", "type": ["null", "string"], "default": None},
]


def _problems(new_fields: list[dict[str, Any]], version: int = 2) -> list[str]:
    return backward_problems(
        parse_avro_schema(_schema(1, *BASE)), parse_avro_schema(_schema(version, *new_fields))
    )


def test_additive_optional_field_is_compatible() -> None:
    """A new field with a default reads old events."""
    assert _problems([*BASE, {"name": "tip", "type": ["null", "double"], "default": None}]) == []


def test_widening_and_removal_are_compatible() -> None:
    """int -> long and dropping a field are backward compatible."""
    assert _problems([{"name": "id", "type": "string"}, {"name": "amount", "type": "long"}]) == []


@pytest.mark.parametrize(
    ("new_fields", "expected"),
    [
        ([*BASE, {"name": "tip", "type": "double"}], "'tip' was added without a default"),
        (
            [{"name": "id", "type": "string"}, {"name": "amount", "type": "string"}, BASE[2]],
            "'amount' changed type from int to string",
        ),
        ([*BASE[:2], {"name": "note", "type": "string"}], "'note' is no longer nullable"),
    ],
)
def test_incompatible_changes_name_field_and_fix(new_fields: list[dict[str, Any]], expected: str) -> None:
    """Each incompatible change is reported with the field and what to do."""
    problems = _problems(new_fields)
    assert any(expected in p for p in problems), problems


def test_changed_schema_needs_a_new_version() -> None:
    """A changed schema must bump its version."""
    problems = _problems([*BASE, {"name": "tip", "type": ["null", "double"], "default": None}], version=1)
    assert any("version did not increase" in p for p in problems)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with the example specs and schemas committed on main."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    shutil.copytree(REPO / "pipelines", tmp_path / "pipelines")
    shutil.copytree(REPO / "schemas", tmp_path / "schemas")
    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base"],
    ):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True)
    return tmp_path


def _edit(repo: Path, change: dict[str, Any], version: int = 2) -> None:
    path = repo / "schemas" / "order_created.avsc"
    document = json.loads(path.read_text())
    document["fields"].append(change)
    document["version"] = version
    path.write_text(json.dumps(document))


def test_check_passes_an_additive_edit(repo: Path) -> None:
    """`loader schemas check` accepts a new optional field."""
    _edit(
        repo,
        {
            "name": "tip",
            "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}],
            "default": None,
        },
    )
    result = CliRunner().invoke(cli, ["schemas", "check", "--specs", str(repo / "pipelines")])
    assert result.exit_code == 0, result.output
    assert "1 changed since main" in result.output


def test_check_refuses_an_incompatible_edit(repo: Path) -> None:
    """`loader schemas check` exits non-zero with a precise message for a required new field."""
    _edit(repo, {"name": "tip", "type": "double"})
    result = CliRunner().invoke(cli, ["schemas", "check", "--specs", str(repo / "pipelines")])
    assert result.exit_code == 2
    assert "order_created.avsc: field 'tip' was added without a default" in result.output


def test_check_reports_an_unknown_ref(repo: Path) -> None:
    """A ref that does not exist is a clear error, not a traceback."""
    result = CliRunner().invoke(
        cli, ["schemas", "check", "--specs", str(repo / "pipelines"), "--against", "nope"]
    )
    assert result.exit_code == 2
    assert "unknown git ref 'nope'" in result.output
