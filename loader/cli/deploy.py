"""``loader deploy render``: Helm values (or manifests) for one worker Deployment per event type."""

from __future__ import annotations

import click

__all__ = ["deploy"]


@click.group("deploy")
def deploy() -> None:
    """Not implemented yet."""
    raise click.UsageError("not implemented yet")
