"""``--since``/``--until``: the time range of the commands that work on an event's files.

Files are selected by their time partition (the ``dt=``/``hour=`` folder of
their first record), never by the records inside, and a file is loaded or
published whole. A moment inside a partition could only be honoured by
silently dropping or adding part of an hour (or day), so it is refused, with
the two boundaries to choose from. A range that ends before it begins is
refused too, rather than reported as empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import click

from loader.config.spec import EventSpec
from loader.errors import excerpt

__all__ = ["MOMENT", "check_range"]


class _Moment(click.ParamType):
    """An ISO-8601 date or time, UTC unless it says otherwise."""

    name = "moment"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{excerpt(value)} is not an ISO-8601 date or time (e.g. 2026-11-27T08)", param, ctx)
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


MOMENT = _Moment()


def _show(moment: datetime, partition: str) -> str:
    return f"{moment:%Y-%m-%d}" if partition == "day" else f"{moment:%Y-%m-%dT%H:00}"


def _off_boundary(option: str, moment: datetime, spec: EventSpec) -> str | None:
    """Why ``moment`` is not a boundary of ``spec``'s time partitions, or None if it is one."""
    partition = spec.s3.time_partition
    start = moment.replace(minute=0, second=0, microsecond=0)
    if partition == "day":
        start = start.replace(hour=0)
    if start == moment:
        return None
    step = timedelta(days=1) if partition == "day" else timedelta(hours=1)
    folder = f"dt={start:%Y-%m-%d}" + (f"/hour={start:%H}" if partition == "hour" else "")
    return (
        f"{option} {moment.isoformat()} is inside the {folder} partition of {spec.name}, whose files "
        f"cover whole {partition}s: use {_show(start, partition)} or {_show(start + step, partition)}"
    )


def check_range(since: datetime | None, until: datetime | None, specs: Sequence[EventSpec]) -> None:
    """Refuse (click usage error) a range that ends before it begins, or that cuts a partition of
    one of ``specs``."""
    if since is not None and until is not None and since >= until:
        raise click.UsageError(
            f"--since {since.isoformat()} is not before --until {until.isoformat()}: the range "
            "[since, until) holds nothing; give the earlier moment as --since",
            click.get_current_context(silent=True),
        )
    for spec in specs:
        for option, moment in (("--since", since), ("--until", until)):
            problem = moment and _off_boundary(option, moment, spec)
            if problem:
                raise click.UsageError(problem, click.get_current_context(silent=True))
