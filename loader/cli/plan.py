"""``loader plan EVENT``: everything one spec implies, before anything is created."""

from __future__ import annotations

import click

__all__ = ["plan"]


@click.command("plan")
def plan() -> None:
    """Not implemented yet."""
    raise click.UsageError("not implemented yet")
