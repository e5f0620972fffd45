"""``loader new-event NAME``: scaffold a spec and a schema for a new event type."""

from __future__ import annotations

import click

__all__ = ["new_event"]


@click.command("new-event")
def new_event() -> None:
    """Not implemented yet."""
    raise click.UsageError("not implemented yet")
