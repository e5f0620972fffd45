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

__all__ = ["pipes"]


@click.group()
def pipes() -> None:
    """Snowflake tables, stages and pipes, and the SQS-triggered loader."""


@pipes.command("create")
@click.argument("events", nargs=-1)
@specs_option
def create(events: tuple[str, ...], specs_dir: Path | None) -> None:
    """Create the missing table, file format and stage of EVENTS (default: all)."""
    # Imported here: the Snowflake connector is heavy, and workers never need it.
    from loader.schema.resolve import schema_for  # noqa: PLC0415
    from loader.warehouse.connection import Warehouse  # noqa: PLC0415
    from loader.warehouse.objects import EventObjects  # noqa: PLC0415

    settings = load_settings()
    specs = load_specs(specs_dir or settings.specs_dir, list(events) or None)
    with Warehouse(settings.snowflake) as warehouse:
        for spec in specs:
            for statement in EventObjects(spec, schema_for(spec), settings.snowflake).create_statements():
                warehouse.execute(statement)
            click.echo(f"{spec.name}: ready")


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
