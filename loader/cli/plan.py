"""``loader plan EVENT``: everything one spec implies, before anything is created."""

from __future__ import annotations

import json
from pathlib import Path

import click

from loader.cli.app import specs_option
from loader.config.settings import load_settings
from loader.config.spec import load_specs

__all__ = ["plan"]


@click.command("plan")
@click.argument("event")
@specs_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def plan(event: str, specs_dir: Path | None, as_json: bool) -> None:
    """Show EVENT's topic, S3 layout, table DDL, pipe and deployment; contacts nothing."""
    from loader.ops.plan import plan_event  # noqa: PLC0415 - heavy imports (Snowflake connector), only here

    settings = load_settings()
    [spec] = load_specs(specs_dir or settings.specs_dir, [event])
    event_plan = plan_event(spec, settings)
    click.echo(json.dumps(event_plan.to_json(), indent=2) if as_json else event_plan.render())
