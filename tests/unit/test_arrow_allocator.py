"""Every loader process allocates Arrow memory with the system allocator, unless told otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

PROBE = "import loader, pyarrow; print(pyarrow.default_memory_pool().backend_name)"


def _allocator(env: dict[str, str]) -> str:
    """The allocator a fresh interpreter ends up with after importing the loader first, as
    ``loader`` and ``python -m loader`` do."""
    clean = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_the_loader_makes_arrow_use_the_system_allocator() -> None:
    assert _allocator({}) == "system"


def test_an_operators_choice_of_allocator_wins() -> None:
    assert _allocator({"ARROW_DEFAULT_MEMORY_POOL": "mimalloc"}) == "mimalloc"
