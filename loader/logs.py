"""Logging setup: structlog events with fields, JSON in production, readable in a terminal.

``LOADER_LOG_FORMAT`` (``json`` or ``console``) overrides the choice made from
whether stderr is a terminal; ``LOADER_LOG_LEVEL`` sets the level.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog

__all__ = ["configure_logging"]


def configure_logging(level: str | None = None, fmt: str | None = None) -> None:
    """Configure structlog (and the standard library's root logger) once per process."""
    level_name = (level or os.environ.get("LOADER_LOG_LEVEL") or "INFO").upper()
    numeric = logging.getLevelNamesMapping().get(level_name, logging.INFO)
    chosen = fmt or os.environ.get("LOADER_LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if chosen == "console" else structlog.processors.JSONRenderer()
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries (aiokafka, botocore, faust) log through the standard library: render their
    # records the same way, so every line is JSON in production. Only warnings and up.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name, timestamper],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(numeric, logging.WARNING))
