"""``loader dead-letters``: what was rejected, by event type, partition and reason."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from loader.cli.options import CliContext, json_option, pass_cli, specs_option
from loader.ops.dead_letters import summarize_dead_letters
from loader.store.s3 import S3Store

__all__ = ["dead_letters"]


@click.command("dead-letters")
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
def dead_letters(cli: CliContext, events: tuple[str, ...], samples: int, as_json: bool) -> None:
    """List and summarise the dead letters of EVENTS (default: all)."""
    summaries = [
        summarize_dead_letters(s, S3Store(cli.settings.aws, s.s3.bucket), samples=samples)
        for s in cli.specs(events)
    ]
    if as_json:
        click.echo(json.dumps([s.to_json() for s in summaries], indent=2))
        return
    console = Console()
    overview = Table(title="dead letters")
    for column in ("event type", "files", "records", "top reason"):
        overview.add_column(column)
    for summary in summaries:
        top = summary.by_reason.most_common(1)
        overview.add_row(
            summary.event,
            str(summary.files),
            str(summary.records),
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
