"""The root ``loader`` group and the translation of errors into messages and exit codes."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from loader.errors import ConfigError, LoaderError
from loader.logs import configure_logging

__all__ = ["MOMENT", "cli", "main", "specs_option"]


class _LoaderGroup(click.Group):
    """A click group that turns LoaderError into a message and an exit code, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except LoaderError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=_LoaderGroup)
@click.version_option(package_name="event-loader")
@click.option("--log-level", default=None, help="DEBUG, INFO (default), WARNING or ERROR.")
@click.option(
    "--log-format",
    type=click.Choice(["json", "console"]),
    default=None,
    help="Log format (default: console in a terminal, JSON otherwise).",
)
def cli(log_level: str | None, log_format: str | None) -> None:
    """Load Kafka event streams into Snowflake through S3, exactly once."""
    configure_logging(log_level, log_format)


specs_option = click.option(
    "--specs",
    "specs_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of event specs (default: $LOADER_SPECS_DIR or ./pipelines).",
)


class _Moment(click.ParamType):
    """An ISO-8601 date or time, UTC unless it says otherwise."""

    name = "moment"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an ISO-8601 date or time (e.g. 2026-11-27T08)", param, ctx)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


MOMENT = _Moment()


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(standalone_mode=True))
