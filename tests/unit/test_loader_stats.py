"""The SQS loader's stats stay bounded however long it runs."""

from __future__ import annotations

import pytest

from loader.warehouse.sqs_loader import RECENT_FILES, LoaderStats

pytestmark = pytest.mark.unit


def test_stats_keep_only_the_latest_files() -> None:
    """A flood of refused objects (or months of loads) keeps the newest RECENT_FILES keys, not all."""
    stats = LoaderStats()
    for i in range(RECENT_FILES + 500):
        stats.record_not_loaded(f"k{i}", "REFUSED: bad")
        stats.loaded_keys.append(f"k{i}")
    stats.record_not_loaded("k600", "LOAD_FAILED: again")  # a repeat counts as the newest
    assert len(stats.not_loaded) == len(stats.loaded_keys) == RECENT_FILES
    assert "k0" not in stats.not_loaded
    assert list(stats.not_loaded)[-1] == "k600"
    assert stats.loaded_keys[-1] == f"k{RECENT_FILES + 499}"
