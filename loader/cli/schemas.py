"""``loader schemas …``: checks for CI (and, later, registration at deploy time)."""

from __future__ import annotations

from pathlib import Path

import click

from loader.cli.app import specs_option
from loader.config.settings import load_settings
from loader.errors import ConfigError
from loader.schema.check import check_schemas

__all__ = ["schemas"]


@click.group()
def schemas() -> None:
    """Event schemas: validation and compatibility."""


@schemas.command("check")
@specs_option
@click.option(
    "--against",
    default="main",
    show_default=True,
    help="Git ref holding the previous schema versions; '' to only validate.",
)
def check(specs_dir: Path | None, against: str) -> None:
    """Validate every spec and schema; refuse backward-incompatible schema changes."""
    report = check_schemas(specs_dir or load_settings().specs_dir, against or None)
    for problem in report.problems:
        click.echo(f"error: {problem}", err=True)
    if report.problems:
        raise ConfigError(f"{len(report.problems)} schema problem(s): see above")
    changed = f", {len(report.changed)} changed since {against}" if against else ""
    click.echo(f"ok: {len(report.checked)} schemas valid{changed}, all backward compatible")
