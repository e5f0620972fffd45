"""Prometheus's promtool, which the rule and dashboard tests run (built and cached by .ci/run)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

PROMTOOL_CACHE = Path.home() / ".cache" / "event-loader" / "bin" / "promtool"


def promtool() -> str:
    """promtool from the PATH or .ci/run's cache; fails under CI without it, else skips."""
    found = shutil.which("promtool") or (str(PROMTOOL_CACHE) if PROMTOOL_CACHE.exists() else None)
    if found is None:
        reason = "promtool is not built: run .ci/run (it builds it into ~/.cache/event-loader/bin)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found
