"""The loader's exception tree.

Every error the loader raises on purpose derives from :class:`LoaderError`,
and each class says whether retrying can help (``transient``) or not. Errors
of aiokafka, botocore and the Snowflake connector are translated into this
tree at the module that talks to them, so the retry policy lives in one
place (:mod:`loader.retry`).

    LoaderError
    ├── ConfigError                 terminal: a spec, schema or setting is wrong
    │   └── SpecError               terminal: one spec file is invalid (names file and field)
    ├── ServiceError                a backing service failed
    │   ├── KafkaError              transient unless marked otherwise
    │   ├── StorageError            S3/SQS; transient unless marked otherwise
    │   ├── WarehouseError          Snowflake; transient unless marked otherwise (keeps errno, sqlstate)
    │   └── RegistryError           the schema registry; transient unless marked otherwise
    ├── NotAppliedError             transient: the warehouse's pipe is not what the spec implies
    ├── ToolError                   terminal: an external program (helm) could not run or failed
    ├── RunError                    terminal: a command ended without doing all it was asked
    ├── DevStackError               terminal: a local service could not be started
    └── FencedError                 terminal for this generation: we lost the partition
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DevStackError",
    "FencedError",
    "KafkaError",
    "LoaderError",
    "NotAppliedError",
    "RegistryError",
    "RunError",
    "ServiceError",
    "SpecError",
    "StorageError",
    "ToolError",
    "WarehouseError",
    "capped",
    "clip",
    "excerpt",
]

CLIP_CHARS = 2000
"""The most of one line of an error message that is shown; the rest is elided."""

MAX_PROBLEMS = 20
"""The most problems one configuration error lists; the rest are counted."""

EXCERPT_CHARS = 80
"""The most of an input value that an error message quotes."""


def clip(text: str, limit: int = CLIP_CHARS) -> str:
    """``text`` cut in the middle to at most about ``limit`` characters, saying how much was left out.

    Errors quote what they were given, and what they were given may be huge (a YAML
    alias bomb expands to megabytes): the head and tail are enough to recognise it.
    """
    if len(text) <= limit:
        return text
    keep = max(limit - 30, 2) // 2
    return f"{text[:keep]}…[{len(text) - 2 * keep:,} characters left out]…{text[-keep:]}"


def capped(problems: list[str]) -> list[str]:
    """The first :data:`MAX_PROBLEMS` problems, each clipped, and how many more there are."""
    shown = [clip(p) for p in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        shown.append(f"… and {len(problems) - MAX_PROBLEMS} more")
    return shown


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """The ``repr`` of an input value for an error message, clipped to about ``limit`` characters."""
    return clip(repr(value), limit)


class LoaderError(Exception):
    """Root of every error the loader raises on purpose."""

    transient: bool = False

    def __init__(self, message: str, *, transient: bool | None = None) -> None:
        super().__init__(message)
        if transient is not None:
            self.transient = transient


class ConfigError(LoaderError):
    """A spec, schema or setting is invalid; the message says how to fix it."""


class SpecError(ConfigError):
    """One spec file is invalid."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in capped(problems))
        super().__init__(f"{clip(path, 300)}: invalid event spec\n{lines}")


class ServiceError(LoaderError):
    """A backing service (Kafka, S3/SQS, Snowflake) failed."""

    transient = True


class KafkaError(ServiceError):
    """Kafka failed or refused a request."""


class StorageError(ServiceError):
    """S3 or SQS failed or refused a request."""


class WarehouseError(ServiceError):
    """Snowflake failed or refused a statement.

    Translated from a connector error, it keeps that error's Snowflake code (``errno``, e.g.
    2003 for an object that does not exist), its ``sqlstate`` and the name of its class
    (``origin``); each is None when there is none (an OS error, or raised by the loader).
    """

    def __init__(
        self,
        message: str,
        *,
        transient: bool | None = None,
        errno: int | None = None,
        sqlstate: str | None = None,
        origin: str | None = None,
    ) -> None:
        super().__init__(message, transient=transient)
        self.errno = errno
        self.sqlstate = sqlstate
        self.origin = origin


class RegistryError(ServiceError):
    """The schema registry failed or refused a request."""


class NotAppliedError(LoaderError):
    """The warehouse's objects for an event are not what its spec implies (no pipe recorded, or
    a different one): ``loader pipes apply`` fixes it, and loads resume once it has run."""

    transient = True


class ToolError(LoaderError):
    """An external program the loader runs (``helm``) could not be started or failed."""


class RunError(LoaderError):
    """A command ended without doing all it was asked (files not loaded, a worker that
    failed, a demo short of rows); what failed was reported as it ran."""


class DevStackError(LoaderError):
    """A local development service could not be started or reached."""


class FencedError(LoaderError):
    """This worker lost ownership of a partition; it must not write for it."""
