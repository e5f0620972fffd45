"""What may reach a COPY: checks on each notified or listed key and its object.

Keys and objects are untrusted input. A key is a name, never a path: only
the exact form the workers write (:func:`~loader.store.layout.parse_data_key`)
is loaded, so ``..``, ``//``, a backslash or a control character never reach
the stage. An object that cannot be a Parquet file (smaller than its two
magic numbers and footer length, or without ``PAR1`` at both ends) is
refused before any COPY: it is read with two ranged GETs, never whole. The
local stage's mirror (fakesnow) resolves every destination and refuses any
outside the stage folder.
"""

from __future__ import annotations

from pathlib import Path

from loader.store.layout import parse_data_key
from loader.store.s3 import S3Store
from loader.warehouse.objects import EventObjects

__all__ = ["MIN_PARQUET_BYTES", "admit", "mirror_path"]

_MAGIC = b"PAR1"
MIN_PARQUET_BYTES = 12
"""``PAR1``, the footer's 4-byte length, ``PAR1``: no Parquet file is smaller."""


def mirror_path(stage_dir: Path, relative: str) -> Path | None:
    """Where the local stage holds the file at ``relative`` (a path relative to the stage);
    None if that resolves outside ``stage_dir`` (``..``, an absolute path, a symlink out)."""
    root = stage_dir.resolve()
    target = (root / relative).resolve()
    return target if target != root and target.is_relative_to(root) else None


def admit(store: S3Store, objects: EventObjects, key: str) -> str | None:
    """None once ``key`` may be copied (mirrored into the local stage, if there is one);
    otherwise why it is refused. S3 failures other than a missing object are raised."""
    if parse_data_key(objects.spec, key) is None:
        return f"not a data file name the workers write (under {objects.spec.data_prefix})"
    size = store.object_size(key)
    if size is None:
        return "no such object (deleted after its notification?)"
    if size < MIN_PARQUET_BYTES:
        return f"{size} bytes: too small to be a Parquet file"
    if store.get_head(key, 4) != _MAGIC or store.get_tail(key, 4) != _MAGIC:
        return "not a Parquet file (no PAR1 magic bytes at its start and end)"
    local = objects.settings.local_stage_dir
    if local is not None:
        stage_dir = Path(local) / objects.spec.s3.bucket / objects.spec.data_prefix
        target = mirror_path(stage_dir, objects.relative_path(key))
        if target is None:
            return "its local stage path is outside the stage folder"
        # Always mirror S3 as it is now: a leftover local file (from a reset stack) must
        # never stand in for the object. Write aside, then rename, so COPY sees whole files.
        partial = target.with_name(target.name + ".part")
        store.download_file(key, partial)
        partial.replace(target)
    return None
