"""The per-event stream worker: buffers, rolling policy, files, offsets."""

from __future__ import annotations
