"""``loader replay``: reload an event's files from S3 into a table, or re-publish them to Kafka."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from loader.cli.options import CliContext, pass_cli, range_options, specs_option
from loader.cli.ranges import check_range
from loader.config.identifiers import check_ident, check_topic
from loader.config.spec import EventSpec
from loader.errors import ConfigError, RunError

if TYPE_CHECKING:
    from loader.replay.reload import ReloadPlan
    from loader.store.s3 import S3Store
    from loader.warehouse.connection import Warehouse
    from loader.warehouse.objects import EventObjects

__all__ = ["replay"]

DRY_RUN = "Say what would happen; change nothing."


def _checked(
    check: Callable[[str], str],
) -> Callable[[click.Context, click.Parameter, str | None], str | None]:
    """An option callback that refuses a name ``check`` refuses, with the rule it breaks."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is not None:
            try:
                check(value)
            except ValueError as exc:
                raise click.BadParameter(str(exc), ctx, param) from None
        return value

    return callback


def _progress(what: str) -> Progress:
    """A progress bar on stderr (standard output stays for the summary)."""
    return Progress(
        TextColumn(f"[bold]{what}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )


def _one_spec(cli: CliContext, event: str, since: datetime | None, until: datetime | None) -> EventSpec:
    """EVENT's spec, once the range is known to select whole partitions of its files."""
    spec = cli.spec(event)
    check_range(since, until, [spec])
    return spec


def _mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


@click.group()
def replay() -> None:
    """Replay an event's archived files from S3: into a table, or back onto Kafka."""


@replay.command("load")
@click.argument("event")
@specs_option
@range_options("to replay", dry_run=DRY_RUN)
@click.option(
    "--into",
    "into",
    default=None,
    callback=_checked(lambda name: check_ident(name, "table name")),
    help="Load into this table (created like the event's) instead.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Reload files the table has loaded before (their rows repeat); refused into the event's "
    "table under auto-ingest.",
)
@click.option("--yes", is_flag=True, help="Do not ask before a forced reload that repeats rows.")
@pass_cli
def load(  # click passes options by name
    cli: CliContext,
    *,
    event: str,
    since: datetime | None,
    until: datetime | None,
    into: str | None,
    force: bool,
    yes: bool,
    dry_run: bool,
) -> None:
    """Reload EVENT's files of a time range into its table, or into another table with --into.

    Files the target table has loaded before are skipped (a reload into the event's
    own table loads only what is missing); --force reloads them too. Under auto-ingest
    the event's own table belongs to its Snowpipe: the files go to the pipe instead
    (older gaps are printed with the statement to run), and --force is refused."""
    from loader.replay.reload import plan_reload, run_reload  # noqa: PLC0415 - heavy imports, only here
    from loader.store.s3 import S3Store  # noqa: PLC0415
    from loader.warehouse.connection import Warehouse  # noqa: PLC0415
    from loader.warehouse.objects import EventObjects  # noqa: PLC0415

    spec = _one_spec(cli, event, since, until)
    settings = cli.settings
    objects = EventObjects.for_spec(spec, settings.snowflake)
    store = S3Store(settings.aws, spec.s3.bucket)
    with Warehouse(settings.snowflake) as warehouse:
        plan = plan_reload(warehouse, store, objects, since=since, until=until, into=into, force=force)
        target = objects.table_named(plan.table)
        created = "" if plan.table_exists else " (a new table, created like the event's)"
        click.echo(f"{spec.name} → {target}{created}")
        if plan.history_note:
            click.echo(f"  note: {plan.history_note}")
        if plan.handoff is not None:
            _hand_to_pipe(warehouse, store, objects, plan, dry_run=dry_run)
            return
        click.echo(
            f"  {len(plan.files)} files in range, "
            f"{len(plan.already_loaded)} already loaded into {plan.table}; "
            f"{'would load' if dry_run else 'loading'} {len(plan.to_load)} ({_mib(plan.bytes_to_load)})"
        )
        if plan.duplicated:
            click.echo(
                f"warning: --force reloads {plan.duplicated} files whose rows {plan.table} already holds: "
                "those rows will appear twice",
                err=True,
            )
        if dry_run or not plan.to_load:
            return
        if plan.duplicated and not yes:
            if not sys.stdin.isatty():
                raise ConfigError("a forced reload repeats rows: pass --yes to confirm it")
            click.confirm(f"Repeat the rows of {plan.duplicated} files in {plan.table}?", abort=True)
        with _progress(f"loading {spec.name}") as progress:
            task = progress.add_task("load", total=len(plan.to_load))
            report = run_reload(warehouse, store, objects, plan, lambda files: progress.advance(task, files))
    click.echo(
        f"loaded {len(report.loaded)} files ({report.rows:,} rows) into {plan.table}, "
        f"{len(report.skipped)} skipped as loaded before, {len(report.failed)} failed"
    )
    if report.failed:
        raise RunError(f"{len(report.failed)} file(s) failed to load: see the log for the reasons")


def _hand_to_pipe(
    warehouse: Warehouse, store: S3Store, objects: EventObjects, plan: ReloadPlan, *, dry_run: bool
) -> None:
    """Auto-ingest into the event's table: the pipe gets what it can reach, an operator the rest."""
    from loader.replay.reload import run_reload  # noqa: PLC0415 - heavy imports, only here

    assert plan.handoff is not None
    click.echo(
        f"  {len(plan.files)} files in range, {len(plan.already_loaded)} already loaded into {plan.table};"
        f" auto-ingest: no COPY into the pipe's table, {'would hand' if dry_run else 'handing'}"
        f" {len(plan.handoff.handed)} to {objects.pipe_name}"
    )
    for refresh in plan.handoff.refreshes:
        click.echo(f"  {refresh.statement};")
    for step in plan.handoff.manual:
        for line in step.lines():
            click.echo(f"  {line}")
    if not dry_run:
        report = run_reload(warehouse, store, objects, plan)
        click.echo(
            f"handed {len(report.handed_to_pipe)} files to {objects.pipe_name} (it skips those it loaded)"
        )
    left = sum(len(step.files) for step in plan.handoff.manual)
    if left:
        raise RunError(f"{left} file(s) are left to an operator: see above")


@replay.command("publish")
@click.argument("event")
@specs_option
@range_options("to replay", dry_run=DRY_RUN)
@click.option(
    "--topic", required=True, callback=_checked(check_topic), help="The topic to publish to (it must exist)."
)
@click.option(
    "--keep-partitions",
    is_flag=True,
    help="Send each record to the partition it was read from (default: partition by key).",
)
@click.option(
    "--create-topic", is_flag=True, help="Create TOPIC, with the event topic's partition count, if missing."
)
@click.option("--force", is_flag=True, help="Allow publishing into the event's own topic (rows load twice).")
@pass_cli
def publish(  # click passes options by name
    cli: CliContext,
    *,
    event: str,
    since: datetime | None,
    until: datetime | None,
    topic: str,
    keep_partitions: bool,
    create_topic: bool,
    force: bool,
    dry_run: bool,
) -> None:
    """Re-publish EVENT's archived records of a time range to TOPIC, with their original
    keys, headers and timestamps."""
    from loader.replay.publish import plan_publish, topic_partitions  # noqa: PLC0415 - heavy imports
    from loader.replay.publish import publish as run_publish  # noqa: PLC0415
    from loader.schema.resolve import schema_for  # noqa: PLC0415
    from loader.store.s3 import S3Store  # noqa: PLC0415

    spec = _one_spec(cli, event, since, until)
    settings = cli.settings
    store = S3Store(settings.aws, spec.s3.bucket)
    plan = plan_publish(store, spec, topic=topic, since=since, until=until, force=force)
    click.echo(
        f"{spec.name} → topic {topic}: {len(plan.files)} files ({_mib(plan.bytes)}), {plan.records:,} records"
        + (" (dry run: nothing sent)" if dry_run else "")
    )
    if topic == spec.kafka.topic:
        click.echo(f"warning: {topic} is {spec.name}'s own topic: these records will load again", err=True)
    if dry_run or not plan.files:
        return
    schema = schema_for(spec)
    partitions = asyncio.run(topic_partitions(spec, settings.kafka, topic, create=create_topic))

    async def send(progress: Progress, task: Any) -> int:
        return await run_publish(
            plan,
            store,
            spec,
            schema,
            settings.kafka,
            partitions=partitions,
            keep_partitions=keep_partitions,
            on_file=lambda records: progress.advance(task),
        )

    with _progress(f"publishing {spec.name}") as progress:
        task = progress.add_task("publish", total=len(plan.files))
        sent = asyncio.run(send(progress, task))
    click.echo(f"published {sent:,} records from {len(plan.files)} files to {topic}")
