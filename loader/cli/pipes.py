"""``loader pipes …``: the warehouse side (objects and the SQS-triggered loader)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import click

from loader.cli.app import specs_option
from loader.config.settings import load_settings
from loader.config.spec import load_specs
from loader.errors import ConfigError

__all__ = ["pipes"]


@click.group()
def pipes() -> None:
    """Snowflake tables, stages and pipes, and the SQS-triggered loader."""


def _plans(events: tuple[str, ...], specs_dir: Path | None, *, apply: bool) -> None:
    # Imported here: the Snowflake connector is heavy, and workers never need it.
    from loader.warehouse.connection import Warehouse  # noqa: PLC0415
    from loader.warehouse.manager import PipeManager  # noqa: PLC0415

    settings = load_settings()
    specs = load_specs(specs_dir or settings.specs_dir, list(events) or None)
    refused = 0
    with Warehouse(settings.snowflake) as warehouse:
        manager = PipeManager(warehouse, settings)
        for spec in specs:
            plan = manager.plan(spec)
            click.echo(plan.render())
            refused += bool(plan.refusals)
            if apply and not plan.refusals:
                manager.apply(spec)
                click.echo(f"-- {spec.name}: applied")
    if refused:
        raise ConfigError(f"{refused} event type(s) have changes that would break their tables: see above")


@pipes.command("plan")
@click.argument("events", nargs=-1)
@specs_option
def plan(events: tuple[str, ...], specs_dir: Path | None) -> None:
    """Print the statements that would bring the warehouse in line with the specs (changes nothing)."""
    _plans(events, specs_dir, apply=False)


@pipes.command("apply")
@click.argument("events", nargs=-1)
@specs_option
def apply(events: tuple[str, ...], specs_dir: Path | None) -> None:
    """Create or evolve tables, file formats, stages and pipes of EVENTS (default: all); idempotent."""
    _plans(events, specs_dir, apply=True)


@pipes.command("run")
@click.argument("events", nargs=-1)
@specs_option
@click.option(
    "--queue-url",
    default=None,
    help="SQS queue of the bucket notifications (default: $LOADER_AWS__NOTIFICATIONS_QUEUE_URL).",
)
def run(events: tuple[str, ...], specs_dir: Path | None, queue_url: str | None) -> None:
    """Load every file the bucket notifications name into its table, until SIGTERM."""
    from loader.warehouse.runner import SqsLoader  # noqa: PLC0415 - heavy, see above

    settings = load_settings()
    specs = load_specs(specs_dir or settings.specs_dir, list(events) or None)
    loader = SqsLoader(settings, specs, queue_url=queue_url)
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        loader.run(stop)
    finally:
        loader.close()
