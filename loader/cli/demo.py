"""``loader demo``."""

from __future__ import annotations

import click

from loader.cli.options import CliContext, pass_cli, specs_option

__all__ = ["demo"]


@click.command()
@specs_option
@click.option(
    "--events",
    "events_per_type",
    type=click.IntRange(1, 1_000_000),
    default=3000,
    show_default=True,
    help="Events to produce for each event type.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(10),
    default=240.0,
    show_default=True,
    help="Seconds to wait for every event to reach its table.",
)
@pass_cli
def demo(cli: CliContext, events_per_type: int, timeout_s: float) -> None:
    """Run the whole pipeline end to end on local services and print a summary."""
    from loader.devstack.demo import run_demo  # noqa: PLC0415 - heavy (all services' clients); only the demo needs it

    run_demo(cli.specs_folder, events_per_type=events_per_type, timeout_s=timeout_s)
