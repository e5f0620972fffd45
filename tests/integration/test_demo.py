"""``loader demo`` as a new user runs it: its own services, rows equal events, nothing left behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[2]
SERVICE_PATTERN = "kafka.Kafka|moto_server|fakesnow -s|apicurio-registry-local"


def _service_pids() -> set[int]:
    found = subprocess.run(["pgrep", "-f", SERVICE_PATTERN], capture_output=True, text=True, check=False)
    return {int(pid) for pid in found.stdout.split()}


def test_demo_loads_every_event_and_stops_its_services(tmp_path: Path) -> None:
    """The demo starts its own stack, every table holds exactly the events produced (and `loader audit`
    says complete), and it stops it all."""
    before = _service_pids()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOADER_")}
    env |= {"LOADER_STATE_DIR": str(tmp_path / "state"), "LOADER_LOG_LEVEL": "WARNING", "COLUMNS": "160"}
    result = subprocess.run(
        [sys.executable, "-m", "loader", "demo", "--events", "400", "--specs", str(REPO / "pipelines")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=280,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for event in ("store_updated", "order_created", "app_click"):
        assert re.search(rf"{event}\s*│\s*400\s*│\s*\d+\s*│\s*400\s*│\s*yes\s*│\s*complete", output), output
    assert "started kafka" in output  # it really started its own services
    assert _service_pids() <= before
