"""``loader status``: one table over all event types: lag, files, loads, dead letters, freshness."""

from __future__ import annotations

import click

__all__ = ["status"]


@click.command("status")
def status() -> None:
    """Not implemented yet."""
    raise click.UsageError("not implemented yet")
