"""``loader reconcile EVENT``: load (or hand to the pipe) the files in S3 that never reached the warehouse."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import click

from loader.cli.options import CliContext, pass_cli, range_options, specs_option
from loader.cli.ranges import check_range
from loader.errors import RunError

if TYPE_CHECKING:
    from loader.ops.reconcile import ReconcileReport

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
    """Compare EVENTS' files in S3 with the warehouse's load history and load what is missing
    (copy mode), or hand it to the Snowpipe (auto-ingest; older gaps are printed with the
    statement to run and what it risks)."""
    from loader.ops.reconcile import reconcile as run_reconcile  # noqa: PLC0415 - heavy imports, only here
    from loader.store.s3 import S3Store  # noqa: PLC0415
    from loader.warehouse.connection import Warehouse  # noqa: PLC0415
    from loader.warehouse.objects import EventObjects  # noqa: PLC0415

    specs = cli.specs(events)
    settings = cli.settings
    check_range(since, until, specs)
    failures = manual = 0
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
            _print_report(report, dry_run=dry_run)
            failures += len(report.failed)
            manual += sum(len(step.files) for step in report.manual)
    problems = [
        text
        for count, text in (
            (failures, f"{failures} file(s) could not be loaded"),
            (manual, f"{manual} file(s) are left to an operator"),
        )
        if count
    ]
    if problems:
        raise RunError(" and ".join(problems) + ": see above")


def _print_report(report: ReconcileReport, *, dry_run: bool) -> None:
    """The counts, the history's note, then each file or statement, and what is left to an
    operator (keys shown with repr: a key is untrusted and may hold control characters)."""
    pending = report.missing + report.unknown
    if report.mode == "auto-ingest":
        action = f"{'would hand' if dry_run else 'handed'} {len(report.handed_to_pipe)} to the pipe"
        listed = report.refreshes
    else:
        action = f"{'would load' if dry_run else 'loaded'} {len(pending if dry_run else report.loaded)}"
        listed = pending if dry_run else report.loaded
    click.echo(
        f"{report.event}: {report.files_in_s3} files in S3, {report.already_loaded} already loaded, "
        f"{len(report.missing)} missing, {len(report.unknown)} unknown to {report.history}; {action}"
        + (f", {len(report.failed)} failed" if report.failed else "")
    )
    if report.history_note:
        click.echo(f"  note: {report.history_note}")
    for item in listed:
        click.echo(f"  {item}")
    for key in report.failed:
        click.echo(f"  not loaded: {key!r}: {report.reasons[key]}")
    for step in report.manual:
        for line in step.lines():
            click.echo(f"  {line}")
