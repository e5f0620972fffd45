"""``loader schemas …``: checks for CI, registration at deploy time, fields sent ahead of the schema."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from pydantic import ValidationError

from loader.cli.options import CliContext, json_option, pass_cli, range_options, specs_option
from loader.cli.ranges import check_range
from loader.config.problems import validation_problems
from loader.config.settings import SchemaRegistrySettings
from loader.errors import ConfigError
from loader.schema.check import check_schemas
from loader.schema.registry import register_schema
from loader.schema.registry_client import RegistryClient

if TYPE_CHECKING:
    from loader.ops.drift import DriftReport
    from loader.schema.drift import FieldDrift, Suggestion

__all__ = ["schemas"]


@click.group()
def schemas() -> None:
    """Event schemas: validation and compatibility."""


@schemas.command("check")
@specs_option
@click.option(
    "--against",
    default="main",
    show_default=True,
    help="Git ref holding the previous schema versions; '' to only validate.",
)
@pass_cli
def check(cli: CliContext, against: str) -> None:
    """Validate every spec and schema; refuse backward-incompatible schema changes."""
    report = check_schemas(cli.specs_folder, against or None)
    for problem in report.problems:
        click.echo(f"error: {problem}", err=True)
    if report.problems:
        raise ConfigError(f"{len(report.problems)} schema problem(s): see above")
    changed = f", {len(report.changed)} changed since {against}" if against else ""
    click.echo(f"ok: {len(report.checked)} schemas valid{changed}, all backward compatible")


@schemas.command("register")
@click.argument("events", nargs=-1)
@specs_option
@click.option(
    "--url",
    default=None,
    help="Confluent-compatible schema registry (default: LOADER_SCHEMA_REGISTRY__URL).",
)
@click.option(
    "--user",
    default=None,
    help="Basic-auth user (default: LOADER_SCHEMA_REGISTRY__USERNAME); the password comes "
    "from LOADER_SCHEMA_REGISTRY__PASSWORD, never from the command line.",
)
@pass_cli
def register(cli: CliContext, events: tuple[str, ...], url: str | None, user: str | None) -> None:
    """Register the schemas of EVENTS (default: all typed ones) at deploy time, never at run time."""
    specs = cli.specs(events)
    configured = cli.settings.schema_registry
    given = {name: value for name, value in (("url", url), ("username", user)) if value}
    try:
        registry = SchemaRegistrySettings.model_validate(configured.model_dump() | given)
    except ValidationError as exc:
        problems = "; ".join(validation_problems(exc, show_input=False))
        raise ConfigError(f"invalid schema registry settings: {problems}") from None
    with RegistryClient.from_settings(registry) as client:
        for spec in specs:
            if spec.schema_path is None:
                click.echo(f"{spec.name}: raw event type, nothing to register")
                continue
            registration = register_schema(spec, client)
            click.echo(f"{spec.name}: registered as {registration.subject}, id {registration.schema_id}")


@schemas.command("drift")
@click.argument("event")
@specs_option
@range_options("to read", dry_run=None)
@click.option(
    "--write",
    "write_to",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also write the schema with the suggested fields added and its version bumped to this file.",
)
@json_option("text")
@pass_cli
def drift(  # click passes options by name
    cli: CliContext,
    *,
    event: str,
    since: datetime | None,
    until: datetime | None,
    write_to: Path | None,
    as_json: bool,
) -> None:
    """List the payload fields EVENT's producers send that its schema does not know (the _EXTRA
    column of its data files): count, first and last seen, samples; and print the Avro field
    definitions to add (optional, default null, types inferred from the samples)."""
    from loader.ops.drift import read_drift  # noqa: PLC0415 - heavy imports, only here
    from loader.schema.avro import load_avro_schema  # noqa: PLC0415
    from loader.schema.drift import apply_suggestions, suggest  # noqa: PLC0415
    from loader.store.s3 import S3Store  # noqa: PLC0415

    spec = cli.spec(event)
    check_range(since, until, [spec])
    if spec.schema_path is None:
        raise ConfigError(f"{spec.name} is a raw event type: its whole payload is kept, nothing drifts")
    schema = load_avro_schema(spec.schema_path)
    report = read_drift(S3Store(cli.settings.aws, spec.s3.bucket), spec, schema, since, until)
    fields = sorted(report.fields.values(), key=lambda d: d.path)
    suggestions = suggest(fields)
    if as_json:
        click.echo(json.dumps(_drift_json(report.event, fields, suggestions), indent=2, default=str))
    else:
        _print_drift(report, fields, suggestions, spec.schema_ref.extra_fields.keep)
    if write_to is not None:
        document = json.loads(spec.schema_path.read_text())
        updated, left = apply_suggestions(document, suggestions)
        write_to.write_text(json.dumps(updated, indent=2) + "\n")
        for problem in left:
            click.echo(f"not added: {problem}", err=True)
        click.echo(f"wrote {write_to} (version {updated.get('version')})", err=as_json)


def _drift_json(event: str, fields: list[FieldDrift], suggestions: list[Suggestion]) -> dict[str, Any]:
    return {
        "event": event,
        "fields": [
            {
                "path": d.path,
                "count": d.count,
                "first_seen": d.first_seen,
                "last_seen": d.last_seen,
                "samples": d.samples,
            }
            for d in fields
        ],
        "add": [
            {"path": s.path, "in_record": s.parent, "field": s.definition, "note": s.note}
            for s in suggestions
        ],
    }


def _print_drift(
    report: DriftReport, fields: list[FieldDrift], suggestions: list[Suggestion], kept: bool
) -> None:
    click.echo(
        f"{report.event}: {report.files} data files, {report.rows:,} rows, {report.rows_with_extra:,} with "
        f"unknown fields ({report.files_without_extra} files without _EXTRA)"
    )
    if not kept:
        click.echo("note: this spec drops unknown fields (schema.extra_fields.keep: false)")
    if not fields:
        click.echo("no unknown fields")
        return
    for d in fields:
        samples = ", ".join(json.dumps(s)[:60] for s in d.samples)
        click.echo(
            f"  {d.path}: {d.count:,} rows, first {d.first_seen}, last {d.last_seen}; samples: {samples}"
        )
    click.echo('Avro fields to add (then bump "version"; `loader schemas check` verifies):')
    for s in suggestions:
        where = f"in record {s.parent!r}" if s.parent else "at the top level"
        if s.definition is None:
            click.echo(f"  {s.path}: not suggested: {s.note}")
            continue
        click.echo(f"  {where}: {json.dumps(s.definition)}" + (f"  # {s.note}" if s.note else ""))
