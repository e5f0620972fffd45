"""``loader gateway``: the HTTP front door that produces events to Kafka, and its API keys."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import click
import orjson

from loader.cli.options import CliContext, pass_cli, specs_option
from loader.errors import ConfigError, RunError

__all__ = ["gateway"]

ALIVE_WITHIN_S = 10.0
"""``/healthz`` is 200 while the event loop has beaten within this long."""


@click.group(invoke_without_command=True)
@click.option("--host", default=None, help="Address of the HTTP API (default: gateway.host, 127.0.0.1).")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port of the HTTP API (default: gateway.port, 8088).",
)
@specs_option
@pass_cli
@click.pass_context
def gateway(ctx: click.Context, cli: CliContext, host: str | None, port: int | None) -> None:
    """Serve POST /v1/events/{event} and the REST Proxy v2 POST /topics/{topic}: events are
    checked with the worker's decoder and produced to Kafka (one producer per cluster).
    /metrics, /healthz and /readyz are served on gateway.metrics_port."""
    if ctx.invoked_subcommand is not None:
        return
    _serve(cli, host, port)


@gateway.command("new-key")
@click.argument("name")
@click.option("--events", required=True, help="Comma-separated event types the key may post, or '*' for all.")
def new_key(name: str, events: str) -> None:
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
    click.echo(f"key (shown once; give it to {name}): {key}")
    click.echo("settings entry (add it to LOADER_GATEWAY__API_KEYS or the api_keys_file list):")
    click.echo(orjson.dumps(entry.model_dump(mode="json")).decode())


def _serve(cli: CliContext, host: str | None, port: int | None) -> None:
    """Run the gateway until SIGTERM or Ctrl-C (uvicorn drains requests, then the producers stop)."""
    from loader import metrics  # noqa: PLC0415 - heavy: only the serving command needs them
    from loader.gateway.app import create_app  # noqa: PLC0415 - see above
    from loader.gateway.auth import KeyRing  # noqa: PLC0415 - see above
    from loader.gateway.delivery import KafkaDelivery  # noqa: PLC0415 - see above
    from loader.gateway.server import serve  # noqa: PLC0415 - see above
    from loader.warehouse import endpoints  # noqa: PLC0415 - see above
    from loader.warehouse.readiness import ReadinessReport  # noqa: PLC0415 - see above

    settings = cli.settings
    specs = cli.specs()
    keys = KeyRing.from_settings(settings.gateway)
    delivery = KafkaDelivery(specs, settings)
    beat = [time.monotonic()]

    async def heartbeat() -> None:
        while True:
            beat[0] = time.monotonic()
            await asyncio.sleep(1.0)

    @contextlib.asynccontextmanager
    async def running() -> AsyncIterator[None]:
        await delivery.start()
        task = asyncio.create_task(heartbeat())
        try:
            yield
        finally:
            task.cancel()
            await delivery.stop()

    def readiness() -> ReadinessReport:
        down = delivery.readiness()
        return ReadinessReport(not down, down)

    app = create_app(specs, settings.gateway, delivery, keys, lifespan=running)
    bind = host or settings.gateway.host
    server = None
    if settings.gateway.metrics_port:
        try:
            server = endpoints.serve(
                bind,
                settings.gateway.metrics_port,
                metrics.exposition(),
                alive=lambda: time.monotonic() - beat[0] < ALIVE_WITHIN_S,
                readiness=readiness,
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {bind}:{settings.gateway.metrics_port}: {exc.strerror or exc} "
                "(set LOADER_GATEWAY__METRICS_PORT to another port)"
            ) from None
    try:
        started = serve(app, bind, port or settings.gateway.port)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    if not started:
        raise RunError("the gateway did not start: see the log above")
