"""Throwaway spec files for unit tests: the order_created example with some fields changed."""

from __future__ import annotations

from pathlib import Path

import yaml

EXAMPLES = Path(__file__).parents[2] / "pipelines"


def write_example_spec(folder: Path, file_stem: str, **changes: object) -> Path:
    """Write the order_created example to ``folder/file_stem.yaml``, with top-level or
    ``section__field`` changes (None removes the field); its schema path made absolute."""
    data = yaml.safe_load((EXAMPLES / "order_created.yaml").read_text())
    data["schema"]["path"] = str((EXAMPLES.parent / "schemas" / "order_created.avsc").resolve())
    for dotted, value in changes.items():
        target = data
        *parents, leaf = dotted.split("__")
        for parent in parents:
            target = target[parent]
        if value is None:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    path = folder / f"{file_stem}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
