"""``loader deploy render``: Helm values (or manifests) for one worker Deployment per event type."""

from __future__ import annotations

from pathlib import Path

import click

from loader.cli.options import CliContext, pass_cli, specs_option
from loader.config.spec import load_specs
from loader.deploy.helm import CHART_DIR, helm_template
from loader.deploy.render import chart_values, values_yaml

__all__ = ["deploy"]


@click.group("deploy")
def deploy() -> None:
    """Kubernetes deployment: the Helm chart's values from the specs."""


@deploy.command("render")
@click.argument("events", nargs=-1)
@specs_option
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default=Path("-"),
    show_default=True,
    help="File to write, or - for stdout.",
)
@click.option("--image", default=None, metavar="REPO:TAG", help="Image of the workers and the loader.")
@click.option(
    "--manifests",
    is_flag=True,
    help="Write the Kubernetes manifests (helm template of the chart with these values) instead.",
)
@click.option(
    "--values",
    "-f",
    "extra_values",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --manifests: more values files (environment settings), applied after the rendered ones.",
)
@click.option(
    "--chart",
    type=click.Path(file_okay=False, path_type=Path),
    default=CHART_DIR,
    show_default=True,
    help="With --manifests: the chart folder.",
)
@click.option(
    "--release", default="event-loader", show_default=True, help="With --manifests: the release name."
)
@click.option("--namespace", default=None, help="With --manifests: the namespace.")
@pass_cli
def render(
    cli: CliContext,
    *,
    events: tuple[str, ...],
    output: Path,
    image: str | None,
    manifests: bool,
    extra_values: tuple[Path, ...],
    chart: Path,
    release: str,
    namespace: str | None,
) -> None:
    """Write the chart's values for EVENTS (default: every spec), or its manifests.

    Each event's replicas come from its spec (deployment.replicas) and may not
    exceed its partition count. No credential is read or written: pods get
    theirs from the Secret named by the existingSecret value.
    """
    # No settings: with --specs, rendering reads no configuration at all.
    specs = load_specs(cli.specs_folder, list(events) or None)
    text = values_yaml(chart_values(specs, image=image))
    if manifests:
        text = helm_template(
            text, chart=chart, release=release, namespace=namespace, extra_values=extra_values
        )
    with click.open_file(str(output), "w") as out:
        out.write(text)
