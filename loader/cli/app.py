"""The root ``loader`` group and the translation of errors into messages and exit codes."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from loader.errors import ConfigError, LoaderError, clip
from loader.logs import configure_logging

__all__ = ["cli", "main"]


USAGE_ERROR_CHARS = 500
"""The most of a usage error's message shown; click's own messages quote the value given."""


@contextmanager
def _clipped_usage_errors() -> Iterator[None]:
    """Clip click's error messages: they quote the argument given, which may be 128 KiB."""
    try:
        yield
    except click.ClickException as exc:
        exc.message = clip(exc.message, USAGE_ERROR_CHARS)
        raise


def _error_text(exc: LoaderError) -> str:
    """The message of ``exc`` with each line clipped: the last guard against echoing huge input."""
    return "\n".join(clip(line) for line in str(exc).splitlines())


class _LoaderGroup(click.Group):
    """A click group that turns LoaderError into a message and an exit code, not a traceback."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        with _clipped_usage_errors():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with _clipped_usage_errors():
                return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"error: {_error_text(exc)}", err=True)
            ctx.exit(2)
        except LoaderError as exc:
            click.echo(f"error: {_error_text(exc)}", err=True)
            ctx.exit(1)


@click.group(cls=_LoaderGroup)
@click.version_option(package_name="event-loader")
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default=None,
    help="DEBUG, INFO (default), WARNING or ERROR.",
)
@click.option(
    "--log-format",
    type=click.Choice(["json", "console"]),
    default=None,
    help="Log format (default: console in a terminal, JSON otherwise).",
)
def cli(log_level: str | None, log_format: str | None) -> None:
    """Load Kafka event streams into Snowflake through S3, exactly once."""
    configure_logging(log_level, log_format)


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(standalone_mode=True))
