"""``loader worker run EVENT``: one event type's stream worker."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click

from loader.cli.app import specs_option
from loader.config.settings import load_settings
from loader.config.spec import load_specs
from loader.worker.worker import StreamWorker

__all__ = ["worker"]


@click.group()
def worker() -> None:
    """Stream workers (Kafka → Parquet in S3)."""


@worker.command("run")
@click.argument("event")
@specs_option
def run(event: str, specs_dir: Path | None) -> None:
    """Consume EVENT's topic and write its files to S3 until SIGTERM or Ctrl-C."""
    settings = load_settings()
    [spec] = load_specs(specs_dir or settings.specs_dir, [event])
    stream_worker = StreamWorker(spec, settings)

    async def _main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stream_worker.stop)
        await stream_worker.run()

    asyncio.run(_main())
