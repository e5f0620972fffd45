"""``loader dev up|down|status``: the local stack, detached, for a person at a terminal.

``up`` starts the services that are not configured (Kafka, moto, fakesnow),
records them in the state file, and returns; every other ``loader`` command run
with the same state dir picks their endpoints up. ``down`` stops them,
``status`` says whether they answer. Errors are DevStackError, which the
``loader`` group prints as one line.
"""

from __future__ import annotations

import time

import click

from loader.config.settings import dev_state_path
from loader.devstack import stack as devstack
from loader.devstack.process import Service

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
def up(real_aws: bool | None, timeout: float) -> None:
    """Start the services that are not configured and leave them running."""
    running = devstack.running_stack()
    if running is not None:
        click.echo(f"a dev stack is already running (state in {dev_state_path()}); nothing started.")
        for name, endpoint in running.endpoints.items():
            click.echo(f"  {name:<9} {endpoint}")
        click.echo("`loader dev status` checks it, `loader dev down` stops it.")
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
