"""Logging setup: structlog events with fields, JSON in production, readable in a terminal.

``LOADER_LOG_FORMAT`` (``json`` or ``console``) overrides the choice made from
whether stderr is a terminal; ``LOADER_LOG_LEVEL`` sets the level.

No secret reaches a log line: settings hold secrets as ``SecretStr`` (printed
as ``**********``), any field whose name says it is a secret (``password``,
``secret_access_key``, ``token``…) is masked, and tracebacks are rendered
without local variables, which would otherwise show a password passed as an
argument.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["MASK", "configure_logging", "mask_secret_fields"]

MASK = "**********"
_SECRET_NAME = re.compile(
    r"passw(or)?d|passphrase|secret|token|credential|access_?key|api_?key|private_?key|authori[sz]ation",
    re.IGNORECASE,
)


def mask_secret_fields(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: the value of any field named like a secret becomes ``**********``."""
    for key, value in event_dict.items():
        if value is not None and _SECRET_NAME.search(key):
            event_dict[key] = MASK
    return event_dict


def _stderr_logger(*_args: Any) -> structlog.WriteLogger:
    """A logger on the ``sys.stderr`` of when it is made, not of when logging was configured
    (whoever swapped the stream meanwhile, a test runner capturing a command, may have closed it).

    A WriteLogger writes each line and its newline in one call: the processes of a worker pool
    share stderr, and ``print`` (two writes) let their lines interleave."""
    return structlog.WriteLogger(sys.stderr)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The standard library's records, on the current ``sys.stderr`` (see :func:`_stderr_logger`)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(level: str | None = None, fmt: str | None = None) -> None:
    """Configure structlog (and the standard library's root logger) once per process."""
    level_name = (level or os.environ.get("LOADER_LOG_LEVEL") or "INFO").upper()
    numeric = logging.getLevelNamesMapping().get(level_name, logging.INFO)
    chosen = fmt or os.environ.get("LOADER_LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(
            exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False)
        )
        if chosen == "console"
        else structlog.processors.JSONRenderer()
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            mask_secret_fields,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    # Libraries (aiokafka, botocore, faust) log through the standard library: render their
    # records the same way, so every line is JSON in production. Only warnings and up.
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                mask_secret_fields,
                renderer,
            ],
            foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name, timestamper],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(numeric, logging.WARNING))
