"""``loader gateway``: the HTTP front door that produces events to Kafka, and its API keys."""

from __future__ import annotations

import shlex

import click
import orjson

from loader.cli.options import CliContext, pass_cli, specs_option
from loader.errors import ConfigError

__all__ = ["gateway"]


@click.group(invoke_without_command=True)
@click.option("--host", default=None, help="Address of the HTTP API (default: gateway.host, 127.0.0.1).")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port of the HTTP API (default: gateway.port, 8088).",
)
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=None,
    help="Gateway processes sharing the port, one core each (default: gateway.processes, 1).",
)
@specs_option
@pass_cli
@click.pass_context
def gateway(
    ctx: click.Context, cli: CliContext, host: str | None, port: int | None, processes: int | None
) -> None:
    """Serve POST /v1/events/{event} and the REST Proxy v2 POST /topics/{topic}: events are
    checked with the worker's decoder and produced to Kafka (one producer per cluster).
    /metrics, /healthz and /readyz are served on gateway.metrics_port."""
    if ctx.invoked_subcommand is not None:
        return
    _serve(cli, host, port, processes)


@gateway.command("new-key")
@click.argument("name")
@click.option("--events", required=True, help="Comma-separated event types the key may post, or '*' for all.")
@click.option(
    "--shell",
    is_flag=True,
    help="Print shell lines instead (KEY=… and export LOADER_GATEWAY__API_KEYS=…), for "
    '`eval "$(loader gateway new-key … --shell)"` on a development machine.',
)
def new_key(name: str, events: str, shell: bool) -> None:
    """Print a fresh API key (once: keep it secret) and the settings entry holding its hash."""
    from loader.config.settings import GatewayApiKey  # noqa: PLC0415 - pydantic, only here
    from loader.gateway.auth import new_key as make_key  # noqa: PLC0415 - see above

    key, digest = make_key()
    try:
        entry = GatewayApiKey(
            name=name, sha256=digest, events=[e.strip() for e in events.split(",") if e.strip()]
        )
    except ValueError as exc:
        raise ConfigError(f"bad key entry: {exc}") from None
    settings_entry = orjson.dumps(entry.model_dump(mode="json")).decode()
    if shell:
        click.echo(f"KEY={shlex.quote(key)}")
        click.echo(f"export LOADER_GATEWAY__API_KEYS={shlex.quote(f'[{settings_entry}]')}")
        return
    click.echo(f"key (shown once; give it to {name}): {key}")
    click.echo("settings entry (add it to LOADER_GATEWAY__API_KEYS or the api_keys_file list):")
    click.echo(settings_entry)


def _serve(cli: CliContext, host: str | None, port: int | None, processes: int | None) -> None:
    """Run the gateway until SIGTERM or Ctrl-C (requests drain, then the producers stop)."""
    from loader.gateway.service import run_gateway  # noqa: PLC0415 - heavy: only serving needs it

    settings = cli.settings
    run_gateway(
        settings,
        cli.specs(),
        host or settings.gateway.host,
        port or settings.gateway.port,
        processes or settings.gateway.processes,
    )
