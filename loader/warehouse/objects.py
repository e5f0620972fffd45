"""The Snowflake objects one event spec implies, as SQL.

Table (typed columns + row metadata), Parquet file format, stage on the
event's data prefix, and the COPY that loads named files. Every identifier
goes through :func:`~loader.config.identifiers.quote_ident`; file names
through :func:`~loader.config.identifiers.quote_literal`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from loader.config.identifiers import quote_ident, quote_literal
from loader.config.settings import SnowflakeSettings
from loader.config.spec import EventSpec
from loader.schema.model import EventSchema
from loader.schema.types import snowflake_columns

__all__ = ["EventObjects"]


@dataclass(frozen=True)
class EventObjects:
    """Names and statements for one event's warehouse objects."""

    spec: EventSpec
    schema: EventSchema
    settings: SnowflakeSettings

    def _qualified(self, name: str) -> str:
        sf = self.spec.snowflake
        return f"{quote_ident(sf.database)}.{quote_ident(sf.schema_)}.{quote_ident(name)}"

    @property
    def table(self) -> str:
        return self._qualified(self.spec.snowflake.table)

    @property
    def file_format(self) -> str:
        return self._qualified(f"{self.spec.snowflake.table}_PARQUET")

    @property
    def stage(self) -> str:
        return self._qualified(f"{self.spec.snowflake.table}_STAGE")

    def stage_url(self) -> str:
        """Where the stage points: the data prefix in S3, or its local mirror for fakesnow."""
        local = self.settings.local_stage_dir
        if local is not None:
            return f"file://{local.resolve()}/{self.spec.s3.bucket}/{self.spec.data_prefix}"
        return f"s3://{self.spec.s3.bucket}/{self.spec.data_prefix}"

    def create_statements(self) -> list[str]:
        """Statements that create whatever is missing (idempotent)."""
        sf = self.spec.snowflake
        columns = ",\n  ".join(f"{quote_ident(name)} {typ}" for name, typ in snowflake_columns(self.schema))
        stage_options = ""
        if self.settings.local_stage_dir is None and self.settings.storage_integration:
            stage_options = f" STORAGE_INTEGRATION = {quote_ident(self.settings.storage_integration)}"
        return [
            f"CREATE DATABASE IF NOT EXISTS {quote_ident(sf.database)}",
            f"CREATE SCHEMA IF NOT EXISTS {quote_ident(sf.database)}.{quote_ident(sf.schema_)}",
            f"CREATE TABLE IF NOT EXISTS {self.table} (\n  {columns}\n)",
            f"CREATE FILE FORMAT IF NOT EXISTS {self.file_format} TYPE = PARQUET",
            f"CREATE STAGE IF NOT EXISTS {self.stage} URL = {quote_literal(self.stage_url())}"
            f"{stage_options} FILE_FORMAT = {self.file_format}",
        ]

    def use_statement(self) -> str:
        """Make the event's schema current (fakesnow resolves its load history through it)."""
        sf = self.spec.snowflake
        return f"USE SCHEMA {quote_ident(sf.database)}.{quote_ident(sf.schema_)}"

    def copy_statement(self, relative_paths: Sequence[str]) -> str:
        """COPY of the named files (paths relative to the stage) into the event's table."""
        files = ", ".join(quote_literal(p) for p in relative_paths)
        return (
            f"COPY INTO {self.table} FROM @{self.stage}"
            f" FILES = ({files})"
            f" FILE_FORMAT = (FORMAT_NAME = {quote_literal(self.file_format)})"
            " MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE"
            f" ON_ERROR = {self.spec.snowflake.on_error}"
        )

    def count_statement(self) -> str:
        """How many rows the table holds."""
        return f"SELECT COUNT(*) FROM {self.table}"  # noqa: S608 - the name is validated and quoted

    def sample_statement(self, columns: Sequence[str], *, limit: int) -> str:
        """The first rows in (partition, offset) order, for people to look at."""
        chosen = ", ".join(quote_ident(c) for c in columns)
        return (
            f"SELECT {chosen} FROM {self.table}"  # noqa: S608 - names are validated and quoted
            f' ORDER BY "_PARTITION", "_OFFSET" LIMIT {int(limit)}'
        )

    def relative_path(self, key: str) -> str:
        """A data key relative to the stage's location."""
        return key.removeprefix(self.spec.data_prefix)
