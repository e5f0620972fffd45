"""The Snowflake connection, with the connector's errors translated at this boundary.

Connection and network failures are transient (the warehouse may be down for
an hour; loads catch up after), and so is a statement that timed out: every
statement runs with ``statement_timeout_s`` (see
:class:`~loader.config.settings.SnowflakeSettings`), so a warehouse that
does not answer cannot block the loader. SQL compilation and access errors
are terminal. Credentials never appear in messages: they are not part of any
statement and the connector's own messages are passed through unchanged.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import snowflake.connector
import snowflake.connector.errors as sf_errors
import structlog

from loader.config.settings import SnowflakeSettings
from loader.errors import WarehouseError

__all__ = ["Warehouse"]

log = structlog.get_logger("loader.warehouse")


_TIMED_OUT = {604, 630}
"""Snowflake's codes for a statement cancelled (the connector's timeout) or timed out
(``STATEMENT_TIMEOUT_IN_SECONDS``): the warehouse was slow, so a retry may succeed."""


def _translate(exc: Exception, action: str) -> WarehouseError:
    transient = isinstance(exc, sf_errors.OperationalError | sf_errors.InterfaceError) or not isinstance(
        exc, sf_errors.Error
    )
    if isinstance(exc, sf_errors.ProgrammingError | sf_errors.DatabaseError) and not isinstance(
        exc, sf_errors.OperationalError
    ):
        transient = getattr(exc, "errno", None) in _TIMED_OUT
    message = getattr(exc, "raw_msg", None) or str(exc)
    # The connector fills in -1 and "n/a" when it has no code: the error carries None instead.
    errno = getattr(exc, "errno", None)
    sqlstate = getattr(exc, "sqlstate", None)
    return WarehouseError(
        f"{action}: {message}",
        transient=transient,
        errno=errno if isinstance(errno, int) and errno > 0 else None,
        sqlstate=sqlstate if isinstance(sqlstate, str) and sqlstate not in ("", "n/a") else None,
        origin=type(exc).__name__,
    )


class Warehouse:
    """A lazily opened Snowflake session that runs statements and returns rows."""

    def __init__(self, settings: SnowflakeSettings) -> None:
        self.settings = settings
        self._conn: Any = None

    def connect(self) -> None:
        if self._conn is not None:
            return
        try:
            self._conn = snowflake.connector.connect(**self.settings.connect_kwargs())
        except (sf_errors.Error, OSError) as exc:
            raise _translate(exc, "cannot connect to Snowflake") from None

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        """Run one statement and return its rows."""
        self.connect()
        try:
            with self._conn.cursor() as cursor:
                cursor.execute(sql, timeout=self.settings.statement_timeout_s)
                rows: list[tuple[Any, ...]] = cursor.fetchall()
                return rows
        except (sf_errors.Error, OSError) as exc:
            if isinstance(exc, sf_errors.OperationalError | sf_errors.InterfaceError | OSError):
                self.close()  # reconnect on the next statement
            raise _translate(exc, f"statement failed ({sql.split(maxsplit=1)[0]} …)") from None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except (sf_errors.Error, OSError):
                log.debug("close_failed")
            self._conn = None

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
