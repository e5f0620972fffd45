"""``loader status``: one table over all event types: lag, files, loads, dead letters, freshness."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from loader.cli.options import CliContext, json_option, pass_cli, specs_option

if TYPE_CHECKING:
    from rich.table import Table

    from loader.ops.status import EventStatus

__all__ = ["duration", "status", "status_table"]

UNAVAILABLE = "unavailable"


def duration(seconds: float | None) -> str:
    """A duration the way a person reads it: ``42s``, ``5m 03s``, ``2h 10m``, ``3d 4h``."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    sign, whole = ("-", -whole) if whole < 0 else ("", whole)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d {hours}h"
    if hours:
        return f"{sign}{hours}h {minutes:02d}m"
    if minutes:
        return f"{sign}{minutes}m {secs:02d}s"
    return f"{sign}{secs}s"


def _cell(value: object, source: str, status: EventStatus) -> str:
    if source in status.unavailable:
        return UNAVAILABLE
    return "-" if value is None else str(value)


def _age(moment: datetime | str | None, now: datetime) -> str | None:
    if moment is None:
        return None
    try:
        when = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    except ValueError:
        return str(moment)  # a time the warehouse wrote in its own format: shown as it is
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return f"{duration((now - when).total_seconds())} ago"


def status_table(statuses: Sequence[EventStatus], now: datetime) -> Table:
    """One row per event type; a source that could not be asked shows as unavailable."""
    from rich.table import Table  # noqa: PLC0415 - rich is only needed for the terminal

    table = Table(title="event pipelines")
    for column in (
        "event type",
        "lag",
        "last file written",
        "in S3",
        "not loaded",
        "last load",
        "dead letters",
        "fresh (table)",
        "fresh (S3)",
    ):
        table.add_column(column, overflow="fold")
    for s in statuses:
        last_file = None
        if s.last_file is not None:
            last_file = f"{s.last_file.rsplit('/', 1)[-1]} ({_age(s.last_file_time, now) or 'time unknown'})"
        table.add_row(
            s.event,
            _cell(s.lag, "kafka", s),
            _cell(last_file, "s3", s),
            _cell(s.files_in_s3, "s3", s),
            _cell(s.files_not_loaded, "warehouse", s),
            _cell(_age(s.last_load_time, now), "warehouse", s),
            _cell(s.dead_letters, "s3", s),
            _cell(None if s.freshness_table_s is None else duration(s.freshness_table_s), "warehouse", s),
            _cell(None if s.freshness_s3_s is None else duration(s.freshness_s3_s), "s3", s),
        )
    return table


@click.command("status")
@click.argument("events", nargs=-1)
@specs_option
@json_option("a table")
@pass_cli
def status(cli: CliContext, events: tuple[str, ...], as_json: bool) -> None:
    """Per event type (default: all): consumer lag, last file written, files not loaded yet,
    last load, dead letters and freshness of the table and of S3."""
    from rich.console import Console  # noqa: PLC0415 - heavy imports, only here

    from loader.ops.status import gather_status  # noqa: PLC0415

    specs = cli.specs(events)
    now = datetime.now(UTC)
    statuses = gather_status(specs, cli.settings, now=now)
    if as_json:
        click.echo(json.dumps([s.to_json() for s in statuses], indent=2))
        return
    console = Console()
    console.print(status_table(statuses, now))
    for s in statuses:
        if s.shared_with:
            console.print(
                f"{s.event}: topic {s.topic} is shared; {s.event} takes {s.takes}; "
                f"the others: {'; '.join(s.shared_with)}",
                markup=False,
                highlight=False,
            )
        for source, reason in s.unavailable.items():
            console.print(f"{s.event}: {source} {UNAVAILABLE}: {reason}", markup=False, highlight=False)
        if s.files_unknown:
            console.print(
                f"{s.event}: {s.files_unknown} files not in the load history, which cannot tell whether"
                " they loaded (see `loader reconcile`)",
                markup=False,
                highlight=False,
            )
        if s.load_history_note:
            console.print(f"{s.event}: note: {s.load_history_note}", markup=False, highlight=False)
