"""Snowflake: the objects each spec implies, COPY, and the SQS-triggered loader."""

from __future__ import annotations
