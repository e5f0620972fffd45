"""The Snowflake objects one event spec implies, as SQL.

Table (typed columns + row metadata), Parquet file format, stage on the
event's data prefix, and the pipe: a Snowpipe with ``AUTO_INGEST`` on real
Snowflake, or, in ``copy`` mode, a row in the ``LOADER_PIPES`` table that the
SQS-triggered loader reads (one source of truth for both). That row holds the
pipe's parameters, never SQL: the loader builds its COPY with this module, so
whoever can write the table cannot choose what the loader runs. Every identifier
goes through :func:`~loader.config.identifiers.quote_ident`; every string
through :func:`~loader.config.identifiers.quote_literal`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from loader.config.identifiers import quote_ident, quote_literal
from loader.config.settings import SnowflakeSettings
from loader.config.spec import FILE_FORMAT_SUFFIX, PIPE_SUFFIX, PIPES_TABLE, STAGE_SUFFIX, EventSpec
from loader.schema.model import EventSchema
from loader.schema.resolve import schema_for
from loader.schema.types import EXTRA, METADATA_COLUMNS, snowflake_type

__all__ = [
    "EXTRA_COLUMN",
    "PIPES_TABLE",
    "PIPE_RECORD_COLUMNS",
    "REDRIVEN_AT",
    "REDRIVEN_AT_COLUMN",
    "Column",
    "EventObjects",
    "PipeRecord",
]

PIPE_RECORD_COLUMNS = {
    "PIPE_NAME": "VARCHAR NOT NULL",
    "EVENT": "VARCHAR NOT NULL",
    "BUCKET": "VARCHAR NOT NULL",
    "DATA_PREFIX": "VARCHAR NOT NULL",
    "TARGET_TABLE": "VARCHAR",
    "STAGE": "VARCHAR",
    "FILE_FORMAT": "VARCHAR",
    "ON_ERROR": "VARCHAR",
    "SCHEMA_VERSION": "NUMBER(10,0)",
}
"""``LOADER_PIPES``' columns. The parameters are nullable only so that a table of an older
shape can gain them with ``ADD COLUMN``; ``pipes apply`` always writes them."""


@dataclass(frozen=True)
class PipeRecord:
    """A copy-mode pipe's parameters, as ``LOADER_PIPES`` holds them: names, not SQL."""

    table: str | None
    stage: str | None
    file_format: str | None
    on_error: str | None


@dataclass(frozen=True)
class Column:
    """A table column as the manager compares it."""

    name: str
    type: str
    nullable: bool

    def ddl(self) -> str:
        return f"{quote_ident(self.name)} {self.type}{'' if self.nullable else ' NOT NULL'}"


EXTRA_COLUMN = Column(EXTRA, "VARIANT", nullable=True)
"""The payload fields the schema does not know (JSON); every table has it, NULL in the rows
of files without it (a spec that drops unknown fields, files written before it existed).
Nullable, so that ``pipes apply`` adds it to a table created before it."""

REDRIVEN_AT = "_REDRIVEN_AT"
"""When a row was re-driven from a dead letter (``loader dead-letters redrive``); NULL in the
rows of the worker's files, which do not have the column (COPY matches columns by name)."""
REDRIVEN_AT_COLUMN = Column(REDRIVEN_AT, "TIMESTAMP_TZ", nullable=True)
"""Nullable, so that ``pipes apply`` adds it to a table created before it (``ADD COLUMN``)."""


@dataclass(frozen=True)
class EventObjects:
    """Names and statements for one event's warehouse objects."""

    spec: EventSpec
    schema: EventSchema
    settings: SnowflakeSettings

    @classmethod
    def for_spec(cls, spec: EventSpec, settings: SnowflakeSettings) -> EventObjects:
        """The objects of ``spec``, with the schema it names (raises ConfigError when that is invalid)."""
        return cls(spec, schema_for(spec), settings)

    # -- names -----------------------------------------------------------------------------------

    @property
    def schema_name(self) -> str:
        sf = self.spec.snowflake
        return f"{quote_ident(sf.database)}.{quote_ident(sf.schema_)}"

    def _qualified(self, name: str) -> str:
        return f"{self.schema_name}.{quote_ident(name)}"

    @property
    def table(self) -> str:
        return self._qualified(self.spec.snowflake.table)

    @property
    def file_format_name(self) -> str:
        return self.spec.snowflake.table + FILE_FORMAT_SUFFIX

    @property
    def file_format(self) -> str:
        return self._qualified(self.file_format_name)

    @property
    def stage_name(self) -> str:
        return self.spec.snowflake.table + STAGE_SUFFIX

    @property
    def stage(self) -> str:
        return self._qualified(self.stage_name)

    @property
    def pipe_name(self) -> str:
        return self.spec.snowflake.table + PIPE_SUFFIX

    @property
    def pipe(self) -> str:
        return self._qualified(self.pipe_name)

    @property
    def pipes_table(self) -> str:
        return self._qualified(PIPES_TABLE)

    def pipe_record(self) -> PipeRecord:
        """The parameters the spec implies for this event's copy-mode pipe."""
        return PipeRecord(
            table=self.spec.snowflake.table.upper(),
            stage=self.stage_name.upper(),
            file_format=self.file_format_name.upper(),
            on_error=self.spec.snowflake.on_error,
        )

    def stage_url(self) -> str:
        """Where the stage points: the data prefix in S3, or its local mirror for fakesnow."""
        local = self.settings.local_stage_dir
        if local is not None:
            return f"file://{local.resolve()}/{self.spec.s3.bucket}/{self.spec.data_prefix}"
        return f"s3://{self.spec.s3.bucket}/{self.spec.data_prefix}"

    # -- desired state ---------------------------------------------------------------------------

    def columns(self) -> list[Column]:
        """The table's columns: one per schema field (required ones NOT NULL), then metadata,
        then ``_EXTRA`` and ``_REDRIVEN_AT``."""
        payload = [Column(f.column, snowflake_type(f.type), f.nullable) for f in self.schema.fields]
        metadata = [Column(name, sf, nullable) for name, _, sf, nullable in METADATA_COLUMNS]
        return [*payload, *metadata, EXTRA_COLUMN, REDRIVEN_AT_COLUMN]

    def create_database(self) -> str:
        return f"CREATE DATABASE IF NOT EXISTS {quote_ident(self.spec.snowflake.database)}"

    def create_schema(self) -> str:
        return f"CREATE SCHEMA IF NOT EXISTS {self.schema_name}"

    def table_named(self, name: str) -> str:
        """Another table in the event's schema (a replay target), validated and quoted."""
        return self._qualified(name)

    def create_table(self, name: str | None = None) -> str:
        """The event's table, or a table of the same shape named ``name``."""
        columns = ",\n  ".join(column.ddl() for column in self.columns())
        table = self.table if name is None else self.table_named(name)
        return f"CREATE TABLE IF NOT EXISTS {table} (\n  {columns}\n)"

    def add_column(self, column: Column) -> str:
        # Added columns stay nullable: rows loaded before have no value for them.
        return f"ALTER TABLE {self.table} ADD COLUMN {quote_ident(column.name)} {column.type}"

    def create_file_format(self) -> str:
        return f"CREATE FILE FORMAT IF NOT EXISTS {self.file_format} TYPE = PARQUET"

    def create_stage(self, *, replace: bool = False) -> str:
        options = ""
        if self.settings.local_stage_dir is None and self.settings.storage_integration:
            options = f" STORAGE_INTEGRATION = {quote_ident(self.settings.storage_integration)}"
        verb = "CREATE OR REPLACE STAGE" if replace else "CREATE STAGE IF NOT EXISTS"
        url = quote_literal(self.stage_url())
        return f"{verb} {self.stage} URL = {url}{options} FILE_FORMAT = {self.file_format}"

    def pipe_copy(self, *, into: str | None = None, force: bool = False) -> str:
        """The pipe's COPY: every file of the stage, columns matched by name, explicit ON_ERROR.

        A replay may copy ``into`` another table of the schema, and ``force`` a reload of
        files the table has loaded before (their rows then appear twice)."""
        table = self.table if into is None else self.table_named(into)
        return (
            f"COPY INTO {table} FROM @{self.stage}"
            f" FILE_FORMAT = (FORMAT_NAME = {quote_literal(self.file_format)})"
            " MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE"
            f" ON_ERROR = {self.spec.snowflake.on_error}" + (" FORCE = TRUE" if force else "")
        )

    def create_pipe(self, *, replace: bool = False) -> str:
        verb = "CREATE OR REPLACE PIPE" if replace else "CREATE PIPE IF NOT EXISTS"
        return f"{verb} {self.pipe} AUTO_INGEST = TRUE AS {self.pipe_copy()}"

    def create_pipes_table(self) -> str:
        columns = ", ".join(f"{name} {kind}" for name, kind in PIPE_RECORD_COLUMNS.items())
        return f"CREATE TABLE IF NOT EXISTS {self.pipes_table} ({columns})"

    def record_pipe(self) -> list[str]:
        """Replace this pipe's row in ``LOADER_PIPES`` (copy mode's pipe definition)."""
        record = self.pipe_record()
        values = {
            "PIPE_NAME": quote_literal(self.pipe_name),
            "EVENT": quote_literal(self.spec.name),
            "BUCKET": quote_literal(self.spec.s3.bucket),
            "DATA_PREFIX": quote_literal(self.spec.data_prefix),
            "TARGET_TABLE": quote_literal(str(record.table)),
            "STAGE": quote_literal(str(record.stage)),
            "FILE_FORMAT": quote_literal(str(record.file_format)),
            "ON_ERROR": quote_literal(str(record.on_error)),
            "SCHEMA_VERSION": str(int(self.schema.version)),
        }
        # Names are validated and quoted, values are quoted literals.
        return [
            f"DELETE FROM {self.pipes_table} WHERE PIPE_NAME = {quote_literal(self.pipe_name)}",  # noqa: S608
            f"INSERT INTO {self.pipes_table} ({', '.join(values)}) VALUES ({', '.join(values.values())})",  # noqa: S608
        ]

    def select_pipe_record(self) -> str:
        """Read this pipe's parameters back from ``LOADER_PIPES`` (see :meth:`pipe_record`)."""
        return (
            f"SELECT TARGET_TABLE, STAGE, FILE_FORMAT, ON_ERROR FROM {self.pipes_table}"  # noqa: S608
            f" WHERE PIPE_NAME = {quote_literal(self.pipe_name)}"
        )

    def create_statements(self) -> list[str]:
        """Statements that create whatever is missing (idempotent; no pipe)."""
        return [
            self.create_database(),
            self.create_schema(),
            self.create_table(),
            self.create_file_format(),
            self.create_stage(),
        ]

    # -- loading and queries ---------------------------------------------------------------------

    def use_statement(self) -> str:
        """Make the event's schema current (fakesnow resolves its load history through it)."""
        return f"USE SCHEMA {self.schema_name}"

    def copy_statement(
        self, relative_paths: Sequence[str], *, into: str | None = None, force: bool = False
    ) -> str:
        """The pipe's COPY (see :meth:`pipe_copy`) for the named files only (paths relative
        to the stage)."""
        files = ", ".join(quote_literal(p) for p in relative_paths)
        head, tail = self.pipe_copy(into=into, force=force).split(" FILE_FORMAT = ", 1)
        return f"{head} FILES = ({files}) FILE_FORMAT = {tail}"

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

    def copy_history_query(self, table: str, start: datetime, end: datetime) -> str:
        """The loads (COPY and Snowpipe) into ``table`` of the event's schema between ``start``
        and ``end``: ``INFORMATION_SCHEMA.COPY_HISTORY``, which reaches back 14 days."""
        return (
            "SELECT FILE_NAME, STATUS, LAST_LOAD_TIME, FIRST_ERROR_MESSAGE, PIPE_NAME"  # noqa: S608 - literals
            " FROM TABLE(INFORMATION_SCHEMA.COPY_HISTORY("
            f"TABLE_NAME => {quote_literal(table)},"
            f" START_TIME => TO_TIMESTAMP_LTZ({quote_literal(start.isoformat())}),"
            f" END_TIME => TO_TIMESTAMP_LTZ({quote_literal(end.isoformat())})))"
        )

    def load_history_query(self, table: str) -> str:
        """The COPY loads into ``table`` (never Snowpipe's): ``INFORMATION_SCHEMA.LOAD_HISTORY``,
        14 days and at most 10,000 rows; read only where COPY_HISTORY is unavailable."""
        return (
            "SELECT FILE_NAME, STATUS, LAST_LOAD_TIME, FIRST_ERROR_MESSAGE, NULL"  # noqa: S608 - a quoted literal
            f" FROM INFORMATION_SCHEMA.LOAD_HISTORY WHERE TABLE_NAME = {quote_literal(table)}"
        )

    def refresh_pipe(self, prefix: str, modified_after: datetime) -> str:
        """Queue the stage's files under ``prefix`` (relative to the stage) staged at or after
        ``modified_after`` for the event's Snowpipe, which skips the files it has loaded."""
        return (
            f"ALTER PIPE {self.pipe} REFRESH PREFIX = {quote_literal(prefix)}"
            f" MODIFIED_AFTER = {quote_literal(modified_after.isoformat())}"
        )

    def rows_of_file_statement(
        self, partition: int, first_offset: int, last_offset: int, *, redriven: bool = False
    ) -> str:
        """How many rows of one data file (a partition's offset range) the table holds: rows the
        worker wrote, or (``redriven``) rows re-driven from the range's dead letters."""
        return (
            f"SELECT COUNT(*) FROM {self.table}"  # noqa: S608 - the name is validated and quoted
            f' WHERE "_PARTITION" = {int(partition)}'
            f' AND "_OFFSET" BETWEEN {int(first_offset)} AND {int(last_offset)}'
            f' AND "{REDRIVEN_AT}" IS {"NOT NULL" if redriven else "NULL"}'
        )

    def relative_path(self, name: str) -> str:
        """A data key, or a file name from the load history (a full s3:// or file:// URL),
        relative to the stage's location."""
        return name.split(self.spec.data_prefix, 1)[-1]
