"""The local stage's mirror: every destination resolved, none outside the stage folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from loader.warehouse.admission import mirror_path

pytestmark = pytest.mark.unit


def test_a_file_of_the_stage_is_mirrored_inside_it(tmp_path: Path) -> None:
    """A stage-relative path of a data file lands under the stage folder."""
    stage = tmp_path / "stage"
    assert mirror_path(stage, "dt=2025-11-27/t/p0000-1-2.parquet") == (
        stage.resolve() / "dt=2025-11-27/t/p0000-1-2.parquet"
    )


@pytest.mark.parametrize(
    "relative", ["../../pwned/escape.parquet", "a/../../escape.parquet", "/etc/passwd", "", ".", "a/.."]
)
def test_paths_outside_the_stage_are_refused(tmp_path: Path, relative: str) -> None:
    """Traversal, absolute paths and the stage folder itself are never a mirror destination."""
    assert mirror_path(tmp_path / "stage", relative) is None


def test_a_symlink_out_of_the_stage_is_refused(tmp_path: Path) -> None:
    """A destination that resolves outside through a symlink in the stage is refused too."""
    stage = tmp_path / "stage"
    stage.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (stage / "link").symlink_to(tmp_path / "elsewhere")
    assert mirror_path(stage, "link/escape.parquet") is None
