"""``loader replay``: reload an event's files from S3 into a table, or re-publish them to Kafka."""

from __future__ import annotations

import click

__all__ = ["replay"]


@click.group("replay")
def replay() -> None:
    """Not implemented yet."""
    raise click.UsageError("not implemented yet")
