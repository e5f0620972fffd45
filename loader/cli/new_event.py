"""``loader new-event NAME``: scaffold a spec and a schema for a new event type."""

from __future__ import annotations

from pathlib import Path

import click

from loader.cli.options import CliContext, pass_cli, specs_option
from loader.ops.new_event import DEFAULT_BUCKET, scaffold

__all__ = ["new_event"]


@click.command("new-event")
@click.argument("name")
@specs_option
@click.option(
    "--schemas",
    "schemas_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of Avro schemas (default: schemas/ beside the specs folder).",
)
@click.option("--topic", default=None, help="Kafka topic of the events (default: NAME).")
@click.option(
    "--partitions",
    type=click.IntRange(1, 10_000),
    default=6,
    show_default=True,
    help="Partitions of the topic when it is created locally.",
)
@click.option("--bucket", default=DEFAULT_BUCKET, show_default=True, help="S3 bucket of the Parquet files.")
@click.option("--raw", is_flag=True, help="Raw JSON events: no schema, the payload is one VARIANT column.")
@click.option("--force", is_flag=True, help="Overwrite the spec and schema if they exist.")
@pass_cli
def new_event(
    cli: CliContext,
    name: str,
    *,  # click passes options by name
    schemas_dir: Path | None,
    topic: str | None,
    partitions: int,
    bucket: str,
    raw: bool,
    force: bool,
) -> None:
    """Write NAME's spec (every field explained) and an example schema, valid as they are."""
    specs = cli.specs_folder
    written = scaffold(
        name,
        specs_dir=specs,
        schemas_dir=schemas_dir or specs.parent / "schemas",
        topic=topic,
        partitions=partitions,
        bucket=bucket,
        raw=raw,
        force=force,
    )
    click.echo(f"wrote {written.spec_path}")
    if written.schema_path is not None:
        click.echo(f"wrote {written.schema_path}")
    option = "" if cli.specs_dir is None else f" --specs {cli.specs_dir}"
    steps = [
        f"describe the payload's fields in {written.schema_path}, then `loader schemas check{option}`"
        if written.schema_path is not None
        else f"the payload lands whole in the PAYLOAD column; review {written.spec_path}",
        f"`loader plan {name}{option}`: the topic, S3 layout, table DDL and deployment it implies",
        f"on a local `loader dev up` stack, `loader dev provision {name}{option}`: its topic, bucket "
        "and notification rule (on real infrastructure, your own provisioning does this)",
        f"`loader pipes apply {name}{option}`: create the table, file format, stage and pipe",
        f"`loader worker run {name}{option}`: load the topic into S3, and from there into the table",
    ]
    click.echo("next steps:")
    for number, step in enumerate(steps, 1):
        click.echo(f"  {number}. {step}")
