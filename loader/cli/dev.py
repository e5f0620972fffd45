"""``loader dev up|provision|produce|status|down``: the local stack, detached, for a person at a terminal.

``up`` starts the services that are not configured (Kafka, moto, fakesnow, the schema registry),
records them in the state file, provisions what every spec needs on them
(topics, buckets, the notifications queue and the notification rules), and
returns; every other ``loader`` command run with the same state dir picks their
endpoints and the queue up. ``provision`` does the same for specs added later,
``produce`` sends sample events, ``down`` stops the services, ``status`` says
whether they answer. ``provision`` and ``produce`` act only on the services the
dev stack started (:mod:`loader.devstack.targets`), never on configured
infrastructure. Errors are DevStackError, which the ``loader`` group prints as
one line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import click

from loader.cli.options import CliContext, pass_cli, specs_option
from loader.config.settings import dev_state_path
from loader.devstack import stack as devstack
from loader.devstack.process import Service
from loader.errors import DevStackError

__all__ = ["dev"]

_LABELS = {"kafka": "Kafka", "moto": "S3/SQS (moto)", "fakesnow": "Snowflake (fakesnow)"}


def _label(service: Service) -> str:
    return _LABELS.get(service.name, service.name)


@click.group()
def dev() -> None:
    """Run Kafka, S3/SQS (moto) and Snowflake (fakesnow) on this machine for development."""


@dev.command()
@click.option(
    "--real-aws",
    is_flag=True,
    default=None,
    help=f"Use real AWS (boto3's credentials) instead of starting moto; also ${devstack.REAL_AWS_ENV}=1.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=devstack.DEFAULT_TIMEOUT_S,
    show_default=True,
    help="Seconds each service may take to answer.",
)
@specs_option
@pass_cli
def up(cli: CliContext, real_aws: bool | None, timeout: float) -> None:
    """Start the services that are not configured, provision every spec on them, leave them running."""
    running = devstack.running_stack()
    if running is not None:
        click.echo(f"a dev stack is already running (state in {dev_state_path()}); nothing started.")
        for name, endpoint in running.endpoints.items():
            click.echo(f"  {name:<9} {endpoint}")
        click.echo("`loader dev status` checks it, `loader dev down` stops it.")
        _provision_all(cli)
        return
    began = time.monotonic()
    stack = devstack.up(real_aws=real_aws, timeout_s=timeout)
    if not stack.services:
        click.echo("nothing to start: Kafka, S3 and Snowflake are all configured (env or LOADER_CONFIG).")
        return
    click.echo(f"dev stack up in {time.monotonic() - began:.1f}s (data and logs in {stack.work_dir}):")
    for service in stack.services:
        endpoint = stack.endpoints[service.name]
        version = f"  {service.version}" if service.version else ""
        click.echo(f"  {_label(service):<21} {endpoint:<24} pid {service.pid}{version}")
    click.echo(f"endpoints recorded in {dev_state_path()}: loader commands with this state dir use them.")
    click.echo("stop it with `loader dev down`.")
    _provision_all(cli)


def _provision_all(cli: CliContext) -> None:
    """`dev up`'s provisioning of every spec; a folder without specs is not an error here."""
    if not cli.specs_folder.is_dir():
        click.echo(
            f"no specs folder {cli.specs_folder}: nothing provisioned (`loader dev provision` does it later)."
        )
        return
    _provision(cli, ())


def _provision(cli: CliContext, events: Sequence[str], *, refuse_nothing: bool = False) -> None:
    """Provision ``events`` (default: all); with ``refuse_nothing``, fail when all was left alone."""
    # Imported here: the Kafka and AWS clients are heavy, and `dev down`/`status` need neither.
    from loader.devstack.provision import provision_dev_stack  # noqa: PLC0415

    specs = cli.specs(events)
    done = provision_dev_stack(specs)
    if done.nothing and refuse_nothing:
        raise DevStackError(
            "nothing provisioned: none of it is on the services `loader dev up` started, and "
            "configured infrastructure is never touched: " + "; ".join(done.left_alone)
        )
    what = "nothing provisioned" if done.nothing else "provisioned"
    click.echo(f"{what} on the dev stack for {len(specs)} event type(s) in {cli.specs_folder}:")
    if done.topics:
        click.echo(f"  topics   {', '.join(done.topics)}")
    if done.queue_url:
        click.echo(f"  buckets  {', '.join(done.buckets)}, each notifying the queue of new data files")
        click.echo(
            f"  queue    {done.queue_url} (and its dead-letter queue), recorded for `loader pipes run`"
        )
    for reason in done.left_alone:
        click.echo(f"  left alone: {reason}")


@dev.command()
@click.argument("events", nargs=-1)
@specs_option
@pass_cli
def provision(cli: CliContext, events: tuple[str, ...]) -> None:
    """Create the topics, buckets, notifications queue and notification rules EVENTS (default: all) need.

    Only on the services `loader dev up` started, never on configured
    infrastructure; creates only what is missing, so it can run again.
    """
    _provision(cli, events, refuse_nothing=True)


@dev.command()
@click.argument("event")
@click.option(
    "--events",
    "count",
    type=click.IntRange(1, 10_000_000),
    default=1000,
    show_default=True,
    help="How many sample events to send.",
)
@specs_option
@pass_cli
def produce(cli: CliContext, event: str, count: int) -> None:
    """Send sample events, shaped by EVENT's schema, to its topic on the dev stack's Kafka."""
    from loader.devstack.samples import produce_dev_samples  # noqa: PLC0415 - heavy, as above

    spec = cli.spec(event)
    asyncio.run(produce_dev_samples(spec, count))
    click.echo(f"produced {count} sample events to {spec.kafka.topic}.")


@dev.command()
def down() -> None:
    """Stop the services `loader dev up` started and forget them."""
    outcomes = devstack.down()
    if not outcomes:
        click.echo("no dev stack is running.")
        return
    for service, outcome in outcomes:
        note = " (pid now belongs to another program; left alone)" if outcome == "not ours" else ""
        click.echo(f"  {_label(service):<21} pid {service.pid}: {outcome}{note}")
    if any(outcome == "failed" for _, outcome in outcomes):
        raise click.ClickException(f"some services could not be stopped; state kept in {dev_state_path()}")
    click.echo("dev stack stopped.")


@dev.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Show each service and whether it answers (exit 1 unless all do)."""
    states = devstack.status()
    if states is None:
        click.echo("no dev stack is running (start one with `loader dev up`).")
        ctx.exit(1)
    for state in states:
        health = "answers" if state.answers else ("not answering" if state.running else "not running")
        click.echo(f"  {_label(state.service):<21} {state.endpoint:<24} pid {state.service.pid:<8} {health}")
    if not all(state.answers for state in states):
        ctx.exit(1)
