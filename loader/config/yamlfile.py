"""Reading the YAML files people write (specs, the settings file) as untrusted input.

Two guards beyond ``yaml.safe_load``. Aliases (``*name``) are refused: a
kilobyte of nested aliases expands into billions of values (the "billion
laughs" bomb), and no spec or settings file needs them. Files over
:data:`MAX_CONFIG_BYTES` are refused before parsing. Parse errors are reported
by line and column only, never with the offending line quoted: the line may be
huge, or hold a password.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from loader.errors import clip

__all__ = ["MAX_CONFIG_BYTES", "YamlFileError", "read_yaml"]

MAX_CONFIG_BYTES = 1024 * 1024
"""The largest spec or settings file read; real ones are a few kilobytes."""


class YamlFileError(ValueError):
    """A file could not be read as YAML; the message says why, without quoting its content."""


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (and so merge keys, which are made of them)."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call] # untyped in the stubs
            raise YamlFileError(
                f"line {mark.line + 1}, column {mark.column + 1}: YAML aliases (*name) are not allowed; "
                "write the value out in full"
            )
        return super().compose_node(parent, index)


def _describe(exc: yaml.YAMLError) -> str:
    if not isinstance(exc, yaml.MarkedYAMLError):
        return clip(str(exc), 300)  # a reader error: a byte position, not the content
    parts = [
        f"{note} at line {mark.line + 1}, column {mark.column + 1}"
        for note, mark in ((exc.context, exc.context_mark), (exc.problem, exc.problem_mark))
        if note and mark
    ]
    return clip(": ".join(parts), 300) or "invalid YAML"


def read_yaml(path: Path) -> object:
    """The YAML document in ``path``; raise OSError if it cannot be read, YamlFileError if it is
    too large, uses aliases or is not valid YAML."""
    with path.open("rb") as file:
        raw = file.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise YamlFileError(f"larger than {MAX_CONFIG_BYTES // 1024} KiB; real ones are a few KiB")
    try:
        return yaml.load(raw, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise YamlFileError(f"not valid YAML: {_describe(exc)}") from None
    except RecursionError:
        raise YamlFileError("nested too deeply to be a spec or settings file") from None
