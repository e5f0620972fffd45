"""The pipe manager: from an event's spec to its Snowflake objects, by plan and apply.

``plan`` reads what exists (SHOW/DESC, the ``LOADER_PIPES`` table) and
returns the exact statements that would bring it to what the spec implies;
``apply`` runs them, so a second apply finds nothing to do. Additive schema
changes become ``ALTER TABLE … ADD COLUMN`` (and widening ``NUMBER``
precision); changes that would break loads or readers are refused with what
to do instead.

On real Snowflake with ``load_mode: auto-ingest`` the pipe is a Snowpipe with
``AUTO_INGEST``; changing its COPY follows Snowflake's safe sequence (pause,
wait until nothing is pending, recreate, resume) and its notification channel
is merged into the bucket's notification rules. In ``copy`` mode the pipe is a
row of ``LOADER_PIPES`` (its parameters, never SQL), read by the SQS-triggered
loader; a table of the older shape, which stored the COPY statement itself, is
migrated by the plan.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from loader.config.identifiers import quote_ident, quote_literal
from loader.config.settings import Settings
from loader.config.spec import EventSpec
from loader.errors import ConfigError, WarehouseError
from loader.notify.provision import ensure_notification_rules, queue_arn
from loader.warehouse.connection import Warehouse
from loader.warehouse.objects import PIPE_RECORD_COLUMNS, PIPES_TABLE, Column, EventObjects, PipeRecord

__all__ = ["PipeManager", "Plan", "Step", "recorded_pipe"]

log = structlog.get_logger("loader.pipes")

WAIT_FOR_PIPE = "-- wait until SYSTEM$PIPE_STATUS reports no pending files"


@dataclass(frozen=True)
class Step:
    """One statement of a plan (or a wait between statements)."""

    sql: str
    wait_for_pipe: str | None = None
    """Set on the wait step of a pipe replacement: the pipe to watch."""


@dataclass
class Plan:
    """What apply would do for one event type."""

    event: str
    steps: list[Step] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.steps and not self.refusals

    def render(self) -> str:
        lines = [f"-- {self.event}: " + ("no changes" if self.empty else f"{len(self.steps)} statement(s)")]
        lines += [f"-- refused: {r}" for r in self.refusals]
        lines += [f"-- note: {n}" for n in self.notes]
        lines += [step.sql if step.wait_for_pipe else f"{step.sql};" for step in self.steps]
        return "\n".join(lines)


def _normalise(sql_type: str) -> str:
    """A column type as DESC TABLE prints it, in the spelling the manager writes."""
    kind = sql_type.upper().strip()
    kind = re.sub(r"^(VARCHAR|TEXT|STRING)(\(\d+\))?$", "VARCHAR", kind)
    kind = re.sub(r"^(BINARY|TIMESTAMP_TZ|TIMESTAMP_NTZ)\(\d+\)$", r"\1", kind)
    kind = re.sub(r"^(DOUBLE|REAL|FLOAT\d*)$", "FLOAT", kind)
    return kind.replace(" ", "")


def recorded_pipe(warehouse: Warehouse, objects: EventObjects) -> PipeRecord | None:
    """The parameters ``LOADER_PIPES`` holds for the event's pipe; None if it has no row."""
    rows = warehouse.execute(objects.select_pipe_record())
    if not rows:
        return None
    table, stage, file_format, on_error = (None if value is None else str(value) for value in rows[0][:4])
    return PipeRecord(table=table, stage=stage, file_format=file_format, on_error=on_error)


def _number(sql_type: str) -> tuple[int, int] | None:
    match = re.fullmatch(r"NUMBER\((\d+),(\d+)\)", sql_type)
    return (int(match[1]), int(match[2])) if match else None


class PipeManager:
    """Plans and applies the warehouse objects of event specs."""

    def __init__(self, warehouse: Warehouse, settings: Settings) -> None:
        self.warehouse = warehouse
        self.settings = settings

    def objects(self, spec: EventSpec) -> EventObjects:
        return EventObjects.for_spec(spec, self.settings.snowflake)

    # -- plan ------------------------------------------------------------------------------------

    def plan(self, spec: EventSpec) -> Plan:
        """The statements that would make the warehouse match ``spec`` (nothing is changed)."""
        objects = self.objects(spec)
        plan = Plan(event=spec.name)
        sf = spec.snowflake
        if not self._listed(f"SHOW DATABASES LIKE {quote_literal(sf.database)}", sf.database):
            plan.steps.append(Step(objects.create_database()))
        elif not self._listed(
            f"SHOW SCHEMAS LIKE {quote_literal(sf.schema_)} IN DATABASE {quote_ident(sf.database)}",
            sf.schema_,
        ):
            plan.steps.append(Step(objects.create_schema()))
        if not plan.steps:
            self._plan_table(objects, plan)
            self._plan_format_and_stage(objects, plan)
            self._plan_pipe(objects, plan)
        else:
            plan.steps += [
                Step(objects.create_schema()),
                Step(objects.create_table()),
                Step(objects.create_file_format()),
                Step(objects.create_stage()),
            ]
            self._plan_pipe(objects, plan, fresh=True)
        return plan

    def _plan_table(self, objects: EventObjects, plan: Plan) -> None:
        current = self._columns(objects)
        if current is None:
            plan.steps.append(Step(objects.create_table()))
            return
        desired = {c.name: c for c in objects.columns()}
        table = objects.table
        for name, want in desired.items():
            have = current.get(name)
            if have is None:
                plan.steps.append(Step(objects.add_column(want)))
                continue
            if have.type != want.type:
                widened = self._widening(have.type, want.type)
                if widened:
                    plan.steps.append(
                        Step(f'ALTER TABLE {table} ALTER COLUMN "{name}" SET DATA TYPE {want.type}')
                    )
                else:
                    plan.refusals.append(
                        f"column {name} is {have.type} in {table} but the schema now says {want.type}: "
                        "a type change would break loads and readers; keep the field's type and add a new one"
                    )
            if want.nullable and not have.nullable:
                plan.steps.append(Step(f'ALTER TABLE {table} ALTER COLUMN "{name}" DROP NOT NULL'))
        for name, have in current.items():
            if name in desired:
                continue
            if not have.nullable:
                plan.refusals.append(
                    f"column {name} is NOT NULL in {table} but the schema no longer has it, so new files "
                    f"would fail to load: keep the field (optional is fine), or first ALTER TABLE {table} "
                    f'ALTER COLUMN "{name}" DROP NOT NULL'
                )
            else:
                plan.notes.append(f"column {name} is no longer in the schema: it stays, NULL in new rows")

    @staticmethod
    def _widening(have: str, want: str) -> bool:
        old, new = _number(have), _number(want)
        return old is not None and new is not None and old[1] == new[1] and new[0] > old[0]

    def _plan_format_and_stage(self, objects: EventObjects, plan: Plan) -> None:
        sf_schema = objects.schema_name
        if not self._listed(
            f"SHOW FILE FORMATS LIKE {quote_literal(objects.file_format_name)} IN SCHEMA {sf_schema}",
            objects.file_format_name,
        ):
            plan.steps.append(Step(objects.create_file_format()))
        stages = self._rows(f"SHOW STAGES LIKE {quote_literal(objects.stage_name)} IN SCHEMA {sf_schema}")
        url = next((str(r[4]) for r in stages if str(r[1]).upper() == objects.stage_name), None)
        if url is None:
            plan.steps.append(Step(objects.create_stage()))
        elif url != objects.stage_url():
            plan.steps.append(Step(objects.create_stage(replace=True)))
            plan.notes.append(f"stage {objects.stage_name} moves from {url} to {objects.stage_url()}")

    def _plan_pipe(self, objects: EventObjects, plan: Plan, *, fresh: bool = False) -> None:
        if self.settings.snowflake.load_mode == "auto-ingest":
            definition = None if fresh else self._pipe_definition(objects)
            if definition is None:
                plan.steps.append(Step(objects.create_pipe()))
            elif " ".join(definition.split()) != " ".join(objects.pipe_copy().split()):
                plan.steps += [
                    Step(f"ALTER PIPE {objects.pipe} SET PIPE_EXECUTION_PAUSED = TRUE"),
                    Step(WAIT_FOR_PIPE, wait_for_pipe=objects.pipe),
                    Step(objects.create_pipe(replace=True)),
                    Step(f"ALTER PIPE {objects.pipe} SET PIPE_EXECUTION_PAUSED = FALSE"),
                ]
            return
        columns = None if fresh else self._columns(objects, PIPES_TABLE)
        if columns is None:
            plan.steps.append(Step(objects.create_pipes_table()))
        else:
            for name, kind in PIPE_RECORD_COLUMNS.items():
                if name not in columns:
                    column_type = kind.removesuffix(" NOT NULL")
                    plan.steps.append(
                        Step(f"ALTER TABLE {objects.pipes_table} ADD COLUMN {name} {column_type}")
                    )
            if "COPY_STATEMENT" in columns:
                # The older shape stored SQL that the loader ran verbatim: drop it, keep parameters.
                plan.steps.append(Step(f"ALTER TABLE {objects.pipes_table} DROP COLUMN COPY_STATEMENT"))
                plan.notes.append(f"{PIPES_TABLE} now records each pipe's parameters instead of its SQL")
        migrating = columns is None or not PIPE_RECORD_COLUMNS.keys() <= columns.keys()
        recorded = None if migrating else recorded_pipe(self.warehouse, objects)
        if recorded != objects.pipe_record():
            plan.steps += [Step(sql) for sql in objects.record_pipe()]

    # -- apply -----------------------------------------------------------------------------------

    def apply(self, spec: EventSpec, *, sleep: Callable[[float], None] = time.sleep) -> Plan:
        """Run the plan (refused as a whole if any change would break the table)."""
        plan = self.plan(spec)
        if plan.refusals:
            raise ConfigError(f"{spec.name}: refusing to apply:\n  - " + "\n  - ".join(plan.refusals))
        for step in plan.steps:
            if step.wait_for_pipe:
                self._wait_until_drained(step.wait_for_pipe, sleep)
            else:
                self.warehouse.execute(step.sql)
        self._wire_notifications(spec)
        if plan.steps:
            log.info("pipes_applied", event_type=spec.name, statements=len(plan.steps))
        return plan

    def _wait_until_drained(self, pipe: str, sleep: Callable[[float], None], timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = json.loads(self._rows(f"SELECT SYSTEM$PIPE_STATUS({quote_literal(pipe)})")[0][0])
            if int(status.get("pendingFileCount", 0)) == 0:
                return
            sleep(5.0)
        raise WarehouseError(f"pipe {pipe} still has pending files after {timeout_s:.0f}s; try again later")

    def _wire_notifications(self, spec: EventSpec) -> None:
        """S3 ObjectCreated on the data prefix → the pipe's channel (auto-ingest) or the loader's queue."""
        objects = self.objects(spec)
        target: str | None = None
        if self.settings.snowflake.load_mode == "auto-ingest":
            rows = self._rows(
                f"SHOW PIPES LIKE {quote_literal(objects.pipe_name)} IN SCHEMA {objects.schema_name}"
            )
            target = next((str(r[6]) for r in rows if str(r[1]).upper() == objects.pipe_name), None)
        elif self.settings.aws.notifications_queue_url:
            target = queue_arn(self.settings, self.settings.aws.notifications_queue_url)
        if target:
            ensure_notification_rules(self.settings, spec.s3.bucket, {spec.data_prefix: target})

    # -- reading what exists ---------------------------------------------------------------------

    def _rows(self, sql: str) -> list[tuple[Any, ...]]:
        return self.warehouse.execute(sql)

    def _listed(self, sql: str, name: str) -> bool:
        return any(str(row[1]).upper() == name.upper() for row in self._rows(sql))

    def _columns(self, objects: EventObjects, table: str | None = None) -> dict[str, Column] | None:
        """The columns of the event's table, or of ``table`` in its schema; None if it is missing."""
        name = table or objects.spec.snowflake.table
        if not self._listed(f"SHOW TABLES LIKE {quote_literal(name)} IN SCHEMA {objects.schema_name}", name):
            return None
        self._rows(objects.use_statement())  # fakesnow resolves DESC through the current schema
        rows = self._rows(f"DESC TABLE {objects.table_named(name)}")
        return {
            str(r[0]).upper(): Column(str(r[0]).upper(), _normalise(str(r[1])), str(r[3]) == "Y")
            for r in rows
        }

    def _pipe_definition(self, objects: EventObjects) -> str | None:
        rows = self._rows(
            f"SHOW PIPES LIKE {quote_literal(objects.pipe_name)} IN SCHEMA {objects.schema_name}"
        )
        return next((str(r[4]) for r in rows if str(r[1]).upper() == objects.pipe_name), None)
