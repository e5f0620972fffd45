"""The CLI: bad input gets a message saying what is wrong, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from loader.cli import cli

pytestmark = pytest.mark.unit


def test_bad_spec_is_a_message_with_exit_code_2(tmp_path: Path) -> None:
    """A broken spec prints the file and field, exits 2, and shows no traceback."""
    (tmp_path / "bad.yaml").write_text("name: orders\nkafka: {topic: 'orders'}\n")
    result = CliRunner().invoke(cli, ["worker", "run", "orders", "--specs", str(tmp_path)])
    assert result.exit_code == 2
    assert "bad.yaml: invalid event spec" in result.output
    assert "s3: Field required" in result.output
    assert "Traceback" not in result.output


def test_missing_specs_folder_says_how_to_fix(tmp_path: Path) -> None:
    """A specs folder that does not exist names the setting to change."""
    result = CliRunner().invoke(cli, ["pipes", "run", "--specs", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "LOADER_SPECS_DIR" in result.output


def test_unknown_event_lists_known_ones() -> None:
    """Asking for an event without a spec lists the ones there are."""
    specs = Path(__file__).parents[2] / "pipelines"
    result = CliRunner().invoke(cli, ["worker", "run", "nope", "--specs", str(specs)])
    assert result.exit_code == 2
    assert "known: app_click, order_created, store_updated" in result.output


def test_bad_option_value_is_explained() -> None:
    """click's own validation explains a bad option value."""
    result = CliRunner().invoke(cli, ["demo", "--events", "0"])
    assert result.exit_code == 2
    assert "--events" in result.output and "Traceback" not in result.output
