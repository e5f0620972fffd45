"""``loader pipes …``: the warehouse side (objects and the SQS-triggered loader)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from types import FrameType

import click
import structlog

from loader.cli.options import CliContext, bind_options, json_option, pass_cli, specs_option
from loader.errors import ConfigError, LoaderError

__all__ = ["pipes"]

log = structlog.get_logger("loader.pipes")

EXIT_ABANDONED = 3
"""``pipes run``'s exit status when a stop abandoned a batch the warehouse did not finish."""


@click.group()
def pipes() -> None:
    """Snowflake tables, stages and pipes, and the SQS-triggered loader."""


def _plans(cli: CliContext, events: tuple[str, ...], *, apply: bool) -> None:
    # Imported here: the Snowflake connector is heavy, and workers never need it.
    from loader.warehouse.connection import Warehouse  # noqa: PLC0415
    from loader.warehouse.manager import PipeManager  # noqa: PLC0415

    specs = cli.specs(events)
    settings = cli.settings
    refused = 0
    with Warehouse(settings.snowflake) as warehouse:
        manager = PipeManager(warehouse, settings)
        for spec in specs:
            plan = manager.plan(spec)
            click.echo(plan.render())
            refused += bool(plan.refusals)
            if apply and not plan.refusals:
                manager.apply(spec)
                click.echo(f"-- {spec.name}: applied")
    if refused:
        raise ConfigError(f"{refused} event type(s) have changes that would break their tables: see above")


@pipes.command("plan")
@click.argument("events", nargs=-1)
@specs_option
@pass_cli
def plan(cli: CliContext, events: tuple[str, ...]) -> None:
    """Print the statements that would bring the warehouse in line with the specs (changes nothing)."""
    _plans(cli, events, apply=False)


@pipes.command("apply")
@click.argument("events", nargs=-1)
@specs_option
@pass_cli
def apply(cli: CliContext, events: tuple[str, ...]) -> None:
    """Create or evolve tables, file formats, stages and pipes of EVENTS (default: all); idempotent."""
    _plans(cli, events, apply=True)


def _log_thread_failure(args: threading.ExceptHookArgs) -> None:
    """One log line, not a traceback, for an exception that ends a thread: the Snowflake connector
    cancels a timed-out statement from a timer thread, and while Snowflake is down that cancel
    fails too, once per statement, for as long as the outage lasts."""
    frames = traceback.extract_tb(args.exc_traceback)
    log.warning(
        "thread_failed",
        thread=args.thread.name if args.thread is not None else None,
        error=f"{args.exc_type.__name__}: {args.exc_value}",
        where=f"{frames[-1].filename}:{frames[-1].lineno}" if frames else None,
    )


@pipes.command("run")
@click.argument("events", nargs=-1)
@specs_option
@click.option(
    "--queue-url",
    default=None,
    help="SQS queue of the bucket notifications (default: $LOADER_AWS__NOTIFICATIONS_QUEUE_URL).",
)
@bind_options("metrics", port=9102, what="the /metrics, /healthz and /readyz endpoints")
@pass_cli
def run(
    cli: CliContext,
    events: tuple[str, ...],
    queue_url: str | None,
    metrics_host: str,
    metrics_port: int,
) -> None:
    """Load every file the bucket notifications name into its table, until SIGTERM.

    It rides out outages of SQS, S3 and Snowflake (retrying for as long as they last; /readyz
    answers 503 meanwhile, naming the service and why) and messages it cannot read (left for the
    queue's redrive policy); only a configuration error ends it (exit status 2). On SIGTERM or
    Ctrl-C it stops polling and waits up to 10 s for the batch in flight; a batch the warehouse
    does not finish by then is abandoned (its messages come back) and the exit status is 3."""
    from loader import metrics  # noqa: PLC0415 - only the loader serves them from here
    from loader.warehouse import endpoints  # noqa: PLC0415 - heavy, see above
    from loader.warehouse.sqs_loader import SqsLoader  # noqa: PLC0415 - heavy, see above

    specs = cli.specs(events)
    loader = SqsLoader(cli.settings, specs, queue_url=queue_url)
    server = None
    if metrics_port:
        try:
            server = endpoints.serve(
                metrics_host,
                metrics_port,
                metrics.exposition(
                    ready=metrics.ReadyProbe("loader", "", lambda: loader.readiness.report().ready)
                ),
                alive=loader.alive,
                readiness=loader.readiness.report,
            )
        except OSError as exc:
            loader.close()
            raise ConfigError(
                f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc.strerror or exc} "
                "(choose another --metrics-port, or 0 to turn them off)"
            ) from None
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    threading.excepthook = _log_thread_failure
    drained = False
    try:
        drained = loader.serve(stop)
    except LoaderError:
        drained = True  # the loop ended on the error: no statement is left running
        raise
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        if drained:
            loader.close()
    if not drained:
        # A statement the warehouse does not answer is still running: closing the session (here
        # or at interpreter exit) and the connector's timer threads would wait on it too.
        sys.stderr.flush()
        os._exit(EXIT_ABANDONED)


@pipes.command("status")
@click.argument("events", nargs=-1)
@specs_option
@json_option("a table")
@pass_cli
def status(cli: CliContext, events: tuple[str, ...], as_json: bool) -> None:
    """Per pipe: files in S3, loaded, pending, the last file loaded, and load errors."""
    import json  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from loader.ops.pipe_status import pipe_status  # noqa: PLC0415
    from loader.store.s3 import S3Store  # noqa: PLC0415
    from loader.warehouse.connection import Warehouse  # noqa: PLC0415
    from loader.warehouse.objects import EventObjects  # noqa: PLC0415

    specs = cli.specs(events)
    settings = cli.settings
    with Warehouse(settings.snowflake) as warehouse:
        statuses = [
            pipe_status(
                warehouse,
                S3Store(settings.aws, s.s3.bucket),
                EventObjects.for_spec(s, settings.snowflake),
            )
            for s in specs
        ]
    if as_json:
        click.echo(json.dumps([s.to_json() for s in statuses], indent=2))
        return
    table = Table(title="pipes")
    for column in ("event type", "pipe", "mode", "in S3", "loaded", "pending", "last file loaded", "errors"):
        table.add_column(column)
    for s in statuses:
        table.add_row(
            s.event,
            s.pipe,
            s.mode,
            str(s.files_in_s3),
            str(s.files_loaded),
            str(s.files_pending),
            f"{s.last_file_loaded or '-'} ({s.last_load_time or 'never'})",
            str(len(s.errors)),
        )
    Console().print(table)
