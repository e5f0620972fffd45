"""The pipe manager on fakesnow: plan/apply, idempotence, schema evolution, refusals."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from loader.cli import cli
from loader.config.spec import EventSpec
from loader.devstack import DevStack
from loader.errors import ConfigError
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.load import load_files
from loader.warehouse.manager import PipeManager
from tests.integration.helpers import REPO, upload_sample_file
from tests.integration.workers import cli_env

pytestmark = pytest.mark.integration


def _spec(tmp_path: Path, name: str, schema: dict[str, Any]) -> EventSpec:
    (tmp_path / "schema.avsc").write_text(json.dumps(schema))
    return EventSpec.model_validate(
        {
            "name": name,
            "kafka": {"topic": f"m.{name}"},
            "schema": {"path": str(tmp_path / "schema.avsc")},
            "s3": {"bucket": "it-manager", "prefix": f"events/{name}"},
            "snowflake": {"database": "MANAGED", "schema": "EVENTS", "table": name.upper()},
        }
    )


def test_apply_is_idempotent_and_evolves_additively(
    dev_stack: DevStack, tmp_path: Path, unique_name: Callable[..., str]
) -> None:
    """Fresh apply creates everything, a second does nothing; a new optional field becomes a column
    and old and new files both load; a type change is refused with what to do."""
    settings = dev_stack.settings
    base = json.loads((REPO / "schemas" / "order_created.avsc").read_text())
    name = unique_name("managed", sep="_")
    spec = _spec(tmp_path, name, base)
    store = S3Store(settings.aws, spec.s3.bucket)
    store.create_bucket()
    with Warehouse(settings.snowflake) as warehouse:
        manager = PipeManager(warehouse, settings)
        first = manager.plan(spec)
        assert any(s.sql.startswith("CREATE TABLE") for s in first.steps)
        manager.apply(spec)
        assert manager.plan(spec).empty  # idempotent: nothing left to do
        old_key = upload_sample_file(store, spec, 0, 50)

        evolved = {
            **base,
            "version": 2,
            "fields": [
                *base["fields"],
                {
                    "name": "tip",
                    "type": [
                        "null",
                        {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2},
                    ],
                    "default": None,
                },
            ],
        }
        spec = _spec(tmp_path, name, evolved)
        plan = manager.plan(spec)
        assert [s.sql for s in plan.steps if "ADD COLUMN" in s.sql] == [
            f'ALTER TABLE "MANAGED"."EVENTS"."{name.upper()}" ADD COLUMN "TIP" NUMBER(12,2)'
        ]
        manager.apply(spec)
        assert manager.plan(spec).empty
        new_key = upload_sample_file(store, spec, 50, 50)
        objects = manager.objects(spec)
        results = load_files(warehouse, store, objects, [old_key, new_key])
        assert [r.status for r in results] == ["LOADED", "LOADED"]
        rows = warehouse.execute(f'SELECT "_OFFSET", "TIP" FROM {objects.table}')
        assert len(rows) == 100
        assert all(tip is None for offset, tip in rows if offset < 50)
        assert any(tip is not None for offset, tip in rows if offset >= 50)

        broken = {
            **evolved,
            "version": 3,
            "fields": [
                {**f, "type": "string"} if f["name"] == "item_count" else f for f in evolved["fields"]
            ],
        }
        spec = _spec(tmp_path, name, broken)
        refused = manager.plan(spec)
        assert any("ITEM_COUNT is NUMBER(10,0)" in r and "add a new one" in r for r in refused.refusals)
        with pytest.raises(ConfigError, match="refusing to apply"):
            manager.apply(spec)


def test_plan_and_apply_commands(
    dev_stack: DevStack, tmp_path: Path, unique_name: Callable[..., str]
) -> None:
    """`pipes plan` prints statements without running them, `apply` runs them once, `status` reports."""
    settings = dev_stack.settings
    name = unique_name("cmd", sep="_")
    spec = _spec(tmp_path, name, json.loads((REPO / "schemas" / "store_updated.avsc").read_text()))
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / f"{name}.yaml").write_text(
        json.dumps(spec.model_dump(by_alias=True, mode="json", exclude={"source_path"}))
    )
    env = cli_env(settings)
    runner = CliRunner()
    planned = runner.invoke(cli, ["pipes", "plan", "--specs", str(specs)], env=env)
    assert planned.exit_code == 0, planned.output
    assert f'CREATE TABLE IF NOT EXISTS "MANAGED"."EVENTS"."{name.upper()}"' in planned.output
    applied = runner.invoke(cli, ["pipes", "apply", "--specs", str(specs)], env=env)
    assert applied.exit_code == 0, applied.output
    again = runner.invoke(cli, ["pipes", "plan", "--specs", str(specs)], env=env)
    assert f"-- {name}: no changes" in again.output
    S3Store(settings.aws, spec.s3.bucket).create_bucket()
    status = runner.invoke(cli, ["pipes", "status", "--json", "--specs", str(specs)], env=env)
    assert status.exit_code == 0, status.output
    [pipe] = json.loads(status.stdout)  # the log (a LOAD_HISTORY fallback warning) is on stderr
    assert (pipe["pipe"], pipe["mode"], pipe["files_pending"], pipe["errors"]) == (
        f"{name.upper()}_PIPE",
        "copy",
        0,
        [],
    )
