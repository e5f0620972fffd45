"""The ``loader`` command: parse, load config, call one function.

Errors derived from :class:`loader.errors.LoaderError` are printed as one
clear message (no traceback) and exit with status 2 for configuration
problems and 1 for everything else.
"""

from __future__ import annotations

from loader.cli.app import cli, main
from loader.cli.audit import audit
from loader.cli.dead_letters import dead_letters
from loader.cli.demo import demo
from loader.cli.deploy import deploy
from loader.cli.dev import dev
from loader.cli.gateway import gateway
from loader.cli.new_event import new_event
from loader.cli.pipes import pipes
from loader.cli.plan import plan
from loader.cli.reconcile import reconcile
from loader.cli.replay import replay
from loader.cli.schemas import schemas
from loader.cli.status import status
from loader.cli.worker import worker

cli.add_command(audit)
cli.add_command(dead_letters)
cli.add_command(demo)
cli.add_command(deploy)
cli.add_command(dev)
cli.add_command(gateway)
cli.add_command(new_event)
cli.add_command(pipes)
cli.add_command(plan)
cli.add_command(reconcile)
cli.add_command(replay)
cli.add_command(schemas)
cli.add_command(status)
cli.add_command(worker)

__all__ = ["cli", "main"]
