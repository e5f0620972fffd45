"""``loader reconcile EVENT``: load the files in S3 that never reached the warehouse."""

from __future__ import annotations

from datetime import datetime

import click

from loader.cli.options import CliContext, pass_cli, range_options, specs_option
from loader.cli.ranges import check_range
from loader.errors import RunError

__all__ = ["reconcile"]


@click.command()
@click.argument("events", nargs=-1)
@specs_option
@range_options("to check", dry_run="Report what is missing, load nothing.")
@pass_cli
def reconcile(
    cli: CliContext,
    events: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    dry_run: bool,
) -> None:
    """Compare EVENTS' files in S3 with the warehouse's load history and load what is missing."""
    from loader.ops.reconcile import reconcile as run_reconcile  # noqa: PLC0415 - heavy imports, only here
    from loader.store.s3 import S3Store  # noqa: PLC0415
    from loader.warehouse.connection import Warehouse  # noqa: PLC0415
    from loader.warehouse.objects import EventObjects  # noqa: PLC0415

    specs = cli.specs(events)
    settings = cli.settings
    check_range(since, until, specs)
    failures = 0
    with Warehouse(settings.snowflake) as warehouse:
        for spec in specs:
            objects = EventObjects.for_spec(spec, settings.snowflake)
            report = run_reconcile(
                warehouse,
                S3Store(settings.aws, spec.s3.bucket),
                objects,
                since=since,
                until=until,
                dry_run=dry_run,
            )
            action = "would load" if dry_run else "loaded"
            click.echo(
                f"{spec.name}: {report.files_in_s3} files in S3, {report.already_loaded} already loaded, "
                f"{len(report.missing)} missing, {action} {len(report.missing if dry_run else report.loaded)}"
                + (f", {len(report.failed)} failed" if report.failed else "")
            )
            for key in report.missing if dry_run else report.loaded:
                click.echo(f"  {key}")
            for key in report.failed:
                # repr: a key is untrusted and may hold control characters.
                click.echo(f"  not loaded: {key!r}: {report.reasons[key]}")
            failures += len(report.failed)
    if failures:
        raise RunError(f"{failures} file(s) could not be loaded: see the reasons above")
