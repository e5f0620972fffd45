"""LOADER_PIPES holds a pipe's parameters, never SQL: the loader builds its COPY from the spec
and refuses a record that someone changed by hand (fakesnow, moto)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from loader.config.identifiers import quote_literal
from loader.config.settings import Settings
from loader.config.spec import EventSpec
from loader.devstack import DevStack
from loader.devstack.provision import provision
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.manager import PipeManager
from loader.warehouse.objects import EventObjects
from loader.warehouse.sqs_loader import SqsLoader
from tests.integration.helpers import make_spec, upload_sample_file
from tests.waiting import eventually, stays

pytestmark = pytest.mark.integration


def _poll(settings: Settings, spec: EventSpec, queue_url: str, seconds: float, *, loads: bool) -> SqsLoader:
    """A fresh loader (no cached pipe check) polling the queue: until it loads a file (within
    ``seconds``) if ``loads``, else for ``seconds`` without loading any."""
    loader = SqsLoader(settings, [spec], queue_url=queue_url, wait_time_s=1, visibility_timeout_s=2)

    def files_loaded() -> int:
        loader.poll_once()  # a long poll: waits up to wait_time_s itself
        return loader.stats.files_loaded

    try:
        if loads:
            eventually(files_loaded, seconds, what="a file loaded", interval_s=0, detail=lambda: loader.stats)
        else:
            stays(
                lambda: not files_loaded(),
                seconds,
                what="no file loaded",
                interval_s=0,
                detail=lambda: loader.stats,
            )
    finally:
        loader.close()
    return loader


def _rows(warehouse: Warehouse, objects: EventObjects) -> int:
    return int(warehouse.execute(objects.count_statement())[0][0])


def test_stored_sql_is_never_run_and_a_tampered_record_is_refused(
    dev_stack: DevStack, unique_name: Callable[..., str]
) -> None:
    """A table of the older shape whose COPY_STATEMENT holds hostile SQL is migrated by apply,
    and its SQL never runs; a hand-edited record is refused until apply rewrites it."""
    settings = dev_stack.settings
    name = unique_name("pipes", sep="_")
    spec = make_spec(name, bucket="it-pipe-record")
    # A database of its own: this test creates LOADER_PIPES in the older shape.
    document = spec.model_dump(by_alias=True, exclude={"source_path"})
    document["snowflake"]["database"] = name.upper()
    spec = EventSpec.model_validate(document)
    queue_url = asyncio.run(provision(settings, [spec], queue_name=unique_name("pq")))
    store = S3Store(settings.aws, spec.s3.bucket)
    with Warehouse(settings.snowflake) as warehouse:
        manager = PipeManager(warehouse, settings)
        objects = manager.objects(spec)
        for statement in objects.create_statements():
            warehouse.execute(statement)
        # The older shape, with a statement that would empty the table if it were run.
        warehouse.execute(
            f"CREATE TABLE {objects.pipes_table} (PIPE_NAME VARCHAR NOT NULL, EVENT VARCHAR NOT NULL,"
            " BUCKET VARCHAR NOT NULL, DATA_PREFIX VARCHAR NOT NULL, COPY_STATEMENT VARCHAR NOT NULL,"
            " SCHEMA_VERSION NUMBER(10,0))"
        )
        hostile = f"DELETE FROM {objects.table}"
        warehouse.execute(
            f"INSERT INTO {objects.pipes_table} VALUES ({quote_literal(objects.pipe_name)},"
            f" {quote_literal(spec.name)}, 'b', 'p', {quote_literal(hostile)}, 1)"
        )

        upload_sample_file(store, spec, 0, 20)
        stale = _poll(settings, spec, queue_url, 4, loads=False)
        assert stale.stats.files_loaded == 0  # nothing recorded in the new shape: wait for apply

        plan = manager.plan(spec)
        statements = [step.sql for step in plan.steps]
        assert f"ALTER TABLE {objects.pipes_table} DROP COLUMN COPY_STATEMENT" in statements
        assert any(
            s.startswith(f"ALTER TABLE {objects.pipes_table} ADD COLUMN TARGET_TABLE") for s in statements
        )
        manager.apply(spec)
        assert manager.plan(spec).empty
        assert _poll(settings, spec, queue_url, 20, loads=True).stats.files_loaded == 1
        assert _rows(warehouse, objects) == 20

        # Someone points the record at another table: refused, the file waits, nothing is lost.
        warehouse.execute(
            f"UPDATE {objects.pipes_table} SET TARGET_TABLE = 'OTHER_TABLE'"
            f" WHERE PIPE_NAME = {quote_literal(objects.pipe_name)}"
        )
        upload_sample_file(store, spec, 20, 30)
        refused = _poll(settings, spec, queue_url, 4, loads=False)
        assert refused.stats.files_loaded == 0
        assert refused.stats.failures >= 1
        assert _rows(warehouse, objects) == 20

        assert not manager.plan(spec).empty  # apply sees the drift and rewrites the record
        manager.apply(spec)
        assert _poll(settings, spec, queue_url, 20, loads=True).stats.files_loaded == 1
        assert _rows(warehouse, objects) == 50
