"""Where files live in S3 and how they get there."""

from __future__ import annotations
