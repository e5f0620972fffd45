"""``loader plan EVENT``: everything one spec implies, before anything is created."""

from __future__ import annotations

import json

import click

from loader.cli.options import CliContext, json_option, pass_cli, specs_option

__all__ = ["plan"]


@click.command("plan")
@click.argument("event")
@specs_option
@json_option("text")
@pass_cli
def plan(cli: CliContext, event: str, as_json: bool) -> None:
    """Show EVENT's topic, S3 layout, table DDL, pipe and deployment; contacts nothing."""
    from loader.ops.plan import plan_event  # noqa: PLC0415 - heavy imports (Snowflake connector), only here

    event_plan = plan_event(cli.spec(event), cli.settings)
    click.echo(json.dumps(event_plan.to_json(), indent=2) if as_json else event_plan.render())
