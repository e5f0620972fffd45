"""``loader schemas …``: checks for CI, registration at deploy time."""

from __future__ import annotations

import click
from pydantic import ValidationError

from loader.cli.options import CliContext, pass_cli, specs_option
from loader.config.problems import validation_problems
from loader.config.settings import SchemaRegistrySettings
from loader.errors import ConfigError
from loader.schema.check import check_schemas
from loader.schema.registry import register_schema
from loader.schema.registry_client import RegistryClient

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
@pass_cli
def check(cli: CliContext, against: str) -> None:
    """Validate every spec and schema; refuse backward-incompatible schema changes."""
    report = check_schemas(cli.specs_folder, against or None)
    for problem in report.problems:
        click.echo(f"error: {problem}", err=True)
    if report.problems:
        raise ConfigError(f"{len(report.problems)} schema problem(s): see above")
    changed = f", {len(report.changed)} changed since {against}" if against else ""
    click.echo(f"ok: {len(report.checked)} schemas valid{changed}, all backward compatible")


@schemas.command("register")
@click.argument("events", nargs=-1)
@specs_option
@click.option(
    "--url",
    default=None,
    help="Confluent-compatible schema registry (default: LOADER_SCHEMA_REGISTRY__URL).",
)
@click.option(
    "--user",
    default=None,
    help="Basic-auth user (default: LOADER_SCHEMA_REGISTRY__USERNAME); the password comes "
    "from LOADER_SCHEMA_REGISTRY__PASSWORD, never from the command line.",
)
@pass_cli
def register(cli: CliContext, events: tuple[str, ...], url: str | None, user: str | None) -> None:
    """Register the schemas of EVENTS (default: all typed ones) at deploy time, never at run time."""
    specs = cli.specs(events)
    configured = cli.settings.schema_registry
    given = {name: value for name, value in (("url", url), ("username", user)) if value}
    try:
        registry = SchemaRegistrySettings.model_validate(configured.model_dump() | given)
    except ValidationError as exc:
        problems = "; ".join(validation_problems(exc, show_input=False))
        raise ConfigError(f"invalid schema registry settings: {problems}") from None
    with RegistryClient.from_settings(registry) as client:
        for spec in specs:
            if spec.schema_path is None:
                click.echo(f"{spec.name}: raw event type, nothing to register")
                continue
            registration = register_schema(spec, client)
            click.echo(f"{spec.name}: registered as {registration.subject}, id {registration.schema_id}")
