"""``loader schemas check``: every spec and schema valid, every change backward compatible.

Run in CI on each pull request: schemas are never registered at run time,
so an incompatible change must be refused before it merges. Old versions
come from git (``git show <ref>:<path>``), by default the main branch.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from loader.config.spec import load_specs
from loader.errors import ConfigError, excerpt
from loader.schema.avro import load_avro_schema, parse_avro_schema
from loader.schema.compat import backward_problems

__all__ = ["CheckReport", "check_schemas"]


@dataclass
class CheckReport:
    """What was checked and what is wrong."""

    checked: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def check_schemas(specs_dir: Path, against: str | None) -> CheckReport:
    """Validate every spec and its schema; compare changed schemas with ``against`` (a git ref)."""
    report = CheckReport()
    try:
        specs = load_specs(specs_dir)
    except ConfigError as exc:
        report.problems.append(str(exc))
        return report
    for spec in specs:
        path = spec.schema_path
        if path is None:
            continue
        report.checked.append(str(path))
        try:
            new = load_avro_schema(path)
        except ConfigError as exc:
            report.problems.append(str(exc))
            continue
        if against is None:
            continue
        old_text = _git_show(path, against)
        if old_text is None or old_text == path.read_text():
            continue
        report.changed.append(str(path))
        try:
            old = parse_avro_schema(json.loads(old_text))
        except ValueError:
            continue  # the old version was already broken: nothing to stay compatible with
        report.problems += [f"{path}: {problem}" for problem in backward_problems(old, new)]
    return report


def _git(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(  # noqa: S603 - fixed git argv, no shell
            ["git", "-C", str(path.parent), *args],  # noqa: S607 - git from PATH, as a developer runs it
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"cannot run git to read old schema versions: {exc}") from exc


def _git_show(path: Path, ref: str) -> str | None:
    """The file's content at ``ref``, or None if it did not exist there."""
    top = _git(path, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise ConfigError(
            f"{path} is not in a git repository: run the check in the repository, or drop --against"
        )
    # A ref beginning with '-' would be read by git as an option.
    if ref.startswith("-") or _git(path, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").returncode:
        raise ConfigError(f"unknown git ref {excerpt(ref)}: fetch it, or pass --against <branch|commit>")
    relative = path.resolve().relative_to(Path(top.stdout.strip()).resolve())
    shown = _git(path, "show", f"{ref}:{relative.as_posix()}")
    return shown.stdout if shown.returncode == 0 else None
