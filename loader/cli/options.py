"""The options several commands share, declared once, and the context ``--specs`` creates.

Every command that reads specs takes ``--specs`` (:data:`specs_option`), which
puts a :class:`CliContext` in ``ctx.obj``; the command receives it through
:data:`pass_cli` and asks it for the settings and the specs. ``--json``, the
``--since``/``--until``/``--dry-run`` range and the host/port of a served
endpoint come from the decorators below, so their names, types, environment
variables and help read the same in every command.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import click

from loader.cli.ranges import MOMENT
from loader.config.settings import Settings, load_settings
from loader.config.spec import EventSpec, load_specs

__all__ = [
    "CliContext",
    "bind_options",
    "json_option",
    "pass_cli",
    "range_options",
    "specs_option",
]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliContext:
    """What a command starts from: the ``--specs`` folder given, the settings, the specs.

    The settings load on first use, once per command.
    """

    specs_dir: Path | None = None
    """``--specs`` as given; None means the settings' folder ($LOADER_SPECS_DIR or ./pipelines)."""

    @cached_property
    def settings(self) -> Settings:
        """The connection settings (environment, config file, dev stack)."""
        return load_settings()

    @property
    def specs_folder(self) -> Path:
        """The folder of event specs: ``--specs``, or the settings' (loading them only then)."""
        return self.specs_dir or self.settings.specs_dir

    def specs(self, names: Sequence[str] = ()) -> list[EventSpec]:
        """The specs ``names`` (default: all), after the settings: a broken configuration is
        reported before a broken spec."""
        settings = self.settings
        return load_specs(self.specs_dir or settings.specs_dir, list(names) or None)

    def spec(self, name: str) -> EventSpec:
        """The spec of event type ``name`` (the settings load first, as for :meth:`specs`)."""
        [spec] = self.specs([name])
        return spec


def _new_context(ctx: click.Context, _param: click.Parameter, specs_dir: Path | None) -> None:
    ctx.obj = CliContext(specs_dir)


specs_option = click.option(
    "--specs",
    "specs_dir",
    type=click.Path(path_type=Path),
    default=None,
    expose_value=False,
    callback=_new_context,
    help="Folder of event specs (default: $LOADER_SPECS_DIR or ./pipelines).",
)
"""``--specs DIR``: creates the command's :class:`CliContext`."""

pass_cli = click.make_pass_decorator(CliContext)
"""Passes the command's :class:`CliContext` as its first argument."""


def json_option(instead_of: str) -> Callable[[F], F]:
    """``--json`` (as ``as_json``): print JSON instead of ``instead_of`` ("a table", "text")."""
    return click.option("--json", "as_json", is_flag=True, help=f"Print JSON instead of {instead_of}.")


def range_options(what: str, *, dry_run: str | None) -> Callable[[F], F]:
    """``--since``, ``--until`` and ``--dry-run``; ``what`` names the files' use and ``dry_run`` says
    what a dry run does, in their help (None: a command that only reads has no ``--dry-run``).
    Check the range against the specs with :func:`loader.cli.ranges.check_range`."""

    def decorate(command: F) -> F:
        # Applied innermost first, so that help lists --since, --until, --dry-run.
        if dry_run is not None:
            command = click.option("--dry-run", is_flag=True, help=dry_run)(command)
        command = click.option(
            "--until",
            type=MOMENT,
            default=None,
            help="Time partition to stop before (ISO-8601, UTC unless an offset is given), exclusive; "
            "on a partition boundary.",
        )(command)
        return click.option(
            "--since",
            type=MOMENT,
            default=None,
            help=f"First time partition {what} (ISO-8601, UTC unless an offset is given), inclusive; "
            "on a partition boundary.",
        )(command)

    return decorate


def bind_options(name: str, *, port: int, what: str) -> Callable[[F], F]:
    """``--NAME-host`` and ``--NAME-port`` (also $LOADER_NAME_HOST, $LOADER_NAME_PORT) of ``what``,
    served on 127.0.0.1:``port`` by default; port 0 serves nothing."""
    env = f"LOADER_{name.upper()}"

    def decorate(command: F) -> F:
        command = click.option(
            f"--{name}-port",
            envvar=f"{env}_PORT",
            type=click.IntRange(0, 65535),
            default=port,
            show_default=True,
            help=f"Port of {what} (${env}_PORT); 0 serves nothing.",
        )(command)
        return click.option(
            f"--{name}-host",
            envvar=f"{env}_HOST",
            default="127.0.0.1",
            show_default=True,
            help=f"Address of {what} (${env}_HOST).",
        )(command)

    return decorate
