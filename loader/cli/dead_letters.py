"""``loader dead-letters``: what was rejected, by event type, partition and reason; and
``loader dead-letters redrive``: load the dead letters that decode after a fix."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from loader.cli.options import CliContext, json_option, pass_cli, range_options, specs_option
from loader.cli.ranges import check_range
from loader.errors import ConfigError, RunError

if TYPE_CHECKING:
    from loader.replay.redrive import FileRedrive, RedriveLoad

__all__ = ["dead_letters"]


class _ListsByDefault(click.Group):
    """A group whose arguments, unless they start with one of its commands, are ``list``'s:
    ``loader dead-letters [EVENT…]`` keeps listing, ``loader dead-letters redrive EVENT`` re-drives."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] != "--help"):
            args = ["list", *args]
        return super().parse_args(ctx, args)


@click.group("dead-letters", cls=_ListsByDefault)
def dead_letters() -> None:
    """List the dead letters of event types (the default: `loader dead-letters [EVENT…]`), or
    re-drive them after a schema or producer fix."""


@dead_letters.command("list")
@click.argument("events", nargs=-1)
@specs_option
@click.option(
    "--samples",
    type=click.IntRange(0, 100),
    default=5,
    show_default=True,
    help="Rejected records to show per event type.",
)
@json_option("tables")
@pass_cli
def list_dead_letters(cli: CliContext, events: tuple[str, ...], samples: int, as_json: bool) -> None:
    """List and summarise the dead letters of EVENTS (default: all); records re-driven since
    are counted apart, no longer as dead letters."""
    from loader.ops.dead_letters import summarize_dead_letters  # noqa: PLC0415 - heavy imports, only here
    from loader.store.s3 import S3Store  # noqa: PLC0415

    summaries = [
        summarize_dead_letters(s, S3Store(cli.settings.aws, s.s3.bucket), samples=samples)
        for s in cli.specs(events)
    ]
    if as_json:
        click.echo(json.dumps([s.to_json() for s in summaries], indent=2))
        return
    console = Console()
    overview = Table(title="dead letters")
    for column in ("event type", "files", "records", "re-driven", "top reason"):
        overview.add_column(column)
    for summary in summaries:
        top = summary.by_reason.most_common(1)
        overview.add_row(
            summary.event,
            str(summary.files),
            str(summary.records),
            str(summary.redriven),
            f"{top[0][1]} x {top[0][0]}" if top else "-",
        )
    console.print(overview)
    for summary in summaries:
        if not summary.samples:
            continue
        detail = Table(title=f"{summary.event}: sample rejects", title_justify="left")
        for column in ("partition", "offset", "reason", "value"):
            detail.add_column(column, overflow="fold")
        for sample in summary.samples:
            detail.add_row(
                str(sample["partition"]), str(sample["offset"]), str(sample["reason"]), str(sample["value"])
            )
        console.print(detail)


@dead_letters.command("redrive")
@click.argument("event")
@specs_option
@range_options(
    "whose dead letters to re-drive",
    dry_run="Say which records now decode, which stay bad and why, and the files it would write; "
    "change nothing.",
)
@pass_cli
def redrive(  # click passes options by name
    cli: CliContext, *, event: str, since: datetime | None, until: datetime | None, dry_run: bool
) -> None:
    """Decode EVENT's dead letters again with its current schema and load those that now decode.

    Each such record becomes a row with its original metadata (_PARTITION, _OFFSET, …) and
    _REDRIVEN_AT, in a new data file named after its dead-letter file. Records re-driven before
    are never written or loaded again; records still bad stay dead letters (their reason under
    the current schema is printed). Dead-letter files are never changed. Run `loader pipes apply`
    after changing the schema, first."""
    from loader.encode import decoder_for  # noqa: PLC0415 - heavy imports, only here
    from loader.replay.redrive import load_redriven, redrive_files, warehouse_behind  # noqa: PLC0415
    from loader.schema.registry_client import registry_for  # noqa: PLC0415
    from loader.store.s3 import S3Store  # noqa: PLC0415
    from loader.warehouse.connection import Warehouse  # noqa: PLC0415
    from loader.warehouse.objects import EventObjects  # noqa: PLC0415

    spec = cli.spec(event)
    check_range(since, until, [spec])
    settings = cli.settings
    objects = EventObjects.for_spec(spec, settings.snowflake)
    store = S3Store(settings.aws, spec.s3.bucket)
    decoder = decoder_for(spec, registry_for(spec, settings.schema_registry))
    with Warehouse(settings.snowflake) as warehouse:
        behind = warehouse_behind(warehouse, settings, spec)
        if behind is not None and not dry_run:
            raise ConfigError(behind)
        results = redrive_files(
            store, spec, decoder, since=since, until=until, redriven_at=datetime.now(UTC), dry_run=dry_run
        )
        _print_redrive(spec.name, results, dry_run=dry_run)
        if dry_run:
            if behind is not None:
                click.echo(f"note: {behind}")
            return
        keys = [key for result in results for key in result.redriven_keys]
        outcome = load_redriven(warehouse, store, objects, keys, since=since, until=until)
    _print_load(objects.spec.snowflake.table.upper(), objects.pipe_name, outcome)
    if outcome.failed:
        raise RunError(f"{len(outcome.failed)} re-driven file(s) failed to load: see above")
    if outcome.manual:
        raise RunError(
            f"{sum(len(s.files) for s in outcome.manual)} file(s) are left to an operator: see above"
        )


def _print_redrive(event: str, results: list[FileRedrive], *, dry_run: bool) -> None:
    """What the dead letters hold now: per file what is written, then totals and reasons."""
    still_bad: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for result in results:
        still_bad.update(result.still_bad)
        totals.update(
            records=result.records, new=result.new, before=result.redriven_before, in_data=result.in_data
        )
        if result.skipped:
            click.echo(f"  skipped {result.key}: {result.skipped}")
        elif result.written:
            click.echo(f"  {'would write' if dry_run else 'wrote'} {result.written} ({result.new:,} rows)")
    decoding = totals["new"] + totals["before"] + totals["in_data"]
    click.echo(
        f"{event}: {len(results)} dead-letter files, {totals['records']:,} records; {decoding:,} now decode"
        f" ({totals['new']:,} new, {totals['before']:,} re-driven before,"
        f" {totals['in_data']:,} already in data files), {still_bad.total():,} still bad"
        + (" (dry run: nothing written)" if dry_run else "")
    )
    for reason, count in still_bad.most_common():
        click.echo(f"  still bad: {count:,} x {reason}")


def _print_load(table: str, pipe: str, outcome: RedriveLoad) -> None:
    lines: list[str] = []
    if outcome.handed_to_pipe or outcome.refreshes or outcome.manual:
        lines.append(f"auto-ingest: handed {len(outcome.handed_to_pipe)} files to {pipe}")
        lines += [f"  {statement};" for statement in outcome.refreshes]
        lines += [f"  {line}" for step in outcome.manual for line in step.lines()]
    else:
        lines.append(
            f"loaded {len(outcome.loaded)} files ({outcome.rows:,} rows) into {table}, "
            f"{len(outcome.skipped)} skipped as loaded before, {len(outcome.failed)} failed"
        )
    lines += [f"  failed {key}: {reason}" for key, reason in outcome.failed.items()]
    for line in lines:
        click.echo(line)
