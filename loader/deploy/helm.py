"""Running ``helm template`` on the chart: finding helm, and its errors as LoaderErrors."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from loader.errors import ConfigError, ToolError

__all__ = ["CHART_DIR", "HELM_HOME_BIN", "find_helm", "helm_template"]

CHART_DIR = Path("deploy/helm/event-loader")
"""The chart, relative to the repository root."""

HELM_HOME_BIN = Path.home() / ".cache" / "event-loader" / "bin" / "helm"
"""Where ``.ci/run`` installs helm when it is not on the PATH."""

INSTALL_HINT = (
    "install it with `GOBIN=$HOME/.cache/event-loader/bin go install helm.sh/helm/v3/cmd/helm@v3.19.0` "
    "or from https://helm.sh/docs/intro/install/"
)

TEMPLATE_TIMEOUT_S = 120


def find_helm() -> Path | None:
    """helm on the PATH, else the one ``.ci/run`` installs, else None."""
    found = shutil.which("helm")
    if found:
        return Path(found)
    return HELM_HOME_BIN if HELM_HOME_BIN.is_file() else None


def helm_template(
    values_yaml: str,
    *,
    chart: Path = CHART_DIR,
    release: str = "event-loader",
    namespace: str | None = None,
    extra_values: Sequence[Path] = (),
) -> str:
    """The chart's manifests for ``values_yaml`` (then ``extra_values`` files, which win)."""
    helm = find_helm()
    if helm is None:
        raise ConfigError(
            f"--manifests needs helm, which is not on the PATH nor at {HELM_HOME_BIN}: {INSTALL_HINT}"
        )
    if not (chart / "Chart.yaml").is_file():
        raise ConfigError(f"no Helm chart at {chart}: run from the repository root or pass --chart")
    with tempfile.TemporaryDirectory(prefix="loader-deploy-") as tmp:
        values_file = Path(tmp) / "values.yaml"
        values_file.write_text(values_yaml)
        command = [str(helm), "template", release, str(chart), "--values", str(values_file)]
        for extra in extra_values:
            command += ["--values", str(extra)]
        if namespace:
            command += ["--namespace", namespace]
        try:
            done = subprocess.run(  # noqa: S603 - a fixed argv, no shell
                command, capture_output=True, text=True, timeout=TEMPLATE_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ToolError(f"could not run {helm} template: {exc}") from None
    if done.returncode != 0:
        raise ToolError(f"helm template failed: {done.stderr.strip()}")
    return done.stdout
