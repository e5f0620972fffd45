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
    │   └── WarehouseError          Snowflake; transient unless marked otherwise
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
    "ServiceError",
    "SpecError",
    "StorageError",
    "WarehouseError",
]


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
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{path}: invalid event spec\n{lines}")


class ServiceError(LoaderError):
    """A backing service (Kafka, S3/SQS, Snowflake) failed."""

    transient = True


class KafkaError(ServiceError):
    """Kafka failed or refused a request."""


class StorageError(ServiceError):
    """S3 or SQS failed or refused a request."""


class WarehouseError(ServiceError):
    """Snowflake failed or refused a statement."""


class DevStackError(LoaderError):
    """A local development service could not be started or reached."""


class FencedError(LoaderError):
    """This worker lost ownership of a partition; it must not write for it."""
