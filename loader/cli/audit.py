"""``loader audit [EVENT…]``: prove that each event's files and table hold every committed record."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import TYPE_CHECKING

import click

from loader.cli.options import CliContext, json_option, pass_cli, range_options, specs_option
from loader.cli.ranges import check_range
from loader.errors import RunError

if TYPE_CHECKING:
    from loader.ops.audit import AuditReport, Problem

__all__ = ["audit"]


@click.command()
@click.argument("events", nargs=-1)
@specs_option
@range_options("to audit", dry_run=None)
@click.option(
    "--settle",
    "settle_s",
    type=click.FloatRange(min=0),
    default=900.0,
    show_default=True,
    help="Seconds a file must be in S3 before its rows are expected in the table (its load may be "
    "under way).",
)
@click.option(
    "--pushgateway",
    envvar="LOADER_AUDIT__PUSHGATEWAY_URL",
    default=None,
    help="Push loader_audit_problems and loader_audit_last_run_timestamp_seconds per event to this "
    "Prometheus Pushgateway ($LOADER_AUDIT__PUSHGATEWAY_URL).",
)
@json_option("text")
@pass_cli
def audit(  # click passes options by name
    cli: CliContext,
    *,
    events: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    settle_s: float,
    pushgateway: str | None,
    as_json: bool,
) -> None:
    """Check that EVENTS' (default: all) files in S3 cover every offset of each partition from the
    first file to the committed offset with no gap or overlap, that each file's rows plus dead
    letters equal its offsets, and that the table holds each file's rows exactly once. Each gap or
    mismatch is named with its files, offsets and the command that repairs it; the exit status
    is 1 when anything is wrong."""
    from loader.metrics import push_audit  # noqa: PLC0415 - heavy imports, only here
    from loader.ops.audit import audit as run_audit  # noqa: PLC0415
    from loader.ops.status import consumer_lag  # noqa: PLC0415
    from loader.store.s3 import S3Store  # noqa: PLC0415
    from loader.warehouse.connection import Warehouse  # noqa: PLC0415
    from loader.warehouse.objects import EventObjects  # noqa: PLC0415

    specs = cli.specs(events)
    settings = cli.settings
    check_range(since, until, specs)
    reports = []
    with Warehouse(settings.snowflake) as warehouse:
        for spec in specs:
            committed = None
            if until is None:  # the committed offset bounds only an audit that runs to the present
                lags = asyncio.run(consumer_lag(spec, settings.kafka))
                committed = {lag.partition: lag.committed for lag in lags}
            report = run_audit(
                spec,
                S3Store(settings.aws, spec.s3.bucket),
                warehouse,
                EventObjects.for_spec(spec, settings.snowflake),
                committed,
                since=since,
                until=until,
                settle_s=settle_s,
            )
            reports.append(report)
            if pushgateway:
                push_audit(pushgateway, spec.name, len(report.problems))
            if not as_json:
                _print_report(report)
    if as_json:
        complete = all(r.complete for r in reports)
        click.echo(json.dumps({"complete": complete, "events": [r.to_json() for r in reports]}, indent=2))
    wrong = [r.event for r in reports if not r.complete]
    if wrong:
        raise RunError(f"audit found problems in {', '.join(wrong)}" + ("" if as_json else ": see above"))


def _lines(problem: Problem, label: str) -> list[str]:
    """A problem as text: what and where, each file (repr: keys are untrusted), the repair."""
    lines = [
        f"  {label}{problem.kind}: partition {problem.partition}, offsets "
        f"{problem.first_offset}..{problem.last_offset}: {problem.detail}"
    ]
    lines += [f"    file {key!r}" for key in problem.files]
    if problem.repair:
        lines.append(f"    repair: {problem.repair}")
    return lines


def _print_report(report: AuditReport) -> None:
    verdict = "complete" if report.complete else f"{len(report.problems)} problem(s)"
    click.echo(
        f"{report.event}: {verdict}: {report.files} files, {report.ranges} ranges in "
        f"{len(report.partitions)} partitions, {report.rows:,} rows, {report.dead_letters:,} dead letters"
        + (f", {report.skipped:,} other event types' records" if report.skipped else "")
        + f"; {report.table_checked} ranges checked in the table"
    )
    for partition, (first, last) in sorted(report.partitions.items()):
        committed = report.committed.get(partition)
        click.echo(
            f"  partition {partition}: offsets {first}..{last}"
            + ("" if committed is None else f", committed {committed}")
        )
    for problem in report.problems:
        click.echo("\n".join(_lines(problem, "")))
    for note in report.notes:
        click.echo("\n".join(_lines(note, "note: ")))
