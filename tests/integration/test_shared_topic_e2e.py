"""Several event types on one topic, end to end: each spec's worker takes its own records."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from loader.config.spec import EventSpec, load_specs
from loader.consume.kafka import ensure_topic
from loader.devstack import DevStack
from loader.devstack.samples import SampleEvents
from loader.metrics import REGISTRY
from loader.schema.resolve import schema_for
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.load import load_files
from loader.warehouse.objects import EventObjects
from loader.worker.worker import StreamWorker
from tests.integration.helpers import REPO, produce
from tests.integration.workers import end_and_committed, offsets_in_s3
from tests.waiting import eventually_async

pytestmark = pytest.mark.integration

PARTITIONS = 3


def _write_specs(folder: Path, topic: str, bucket: str, suffix: str) -> dict[str, EventSpec]:
    """Four specs on ``topic``: orders and stores (typed), clicks (raw), and a raw catch-all."""
    folder.mkdir()
    kinds = {
        "orders": ("order_created", {"event_name": "order_created"}),
        "stores": ("store_updated", {"event_name": "store_updated"}),
        "clicks": (None, {"event_name": "app_click"}),
        "other": (None, {"catch_all": True}),
    }
    for kind, (schema, match) in kinds.items():
        name = f"{kind}_{suffix}"
        document: dict[str, Any] = {
            "name": name,
            "kafka": {"topic": topic, "partitions": PARTITIONS, "match": match},
            "schema": {"path": str(REPO / "schemas" / f"{schema}.avsc")} if schema else {"mode": "raw"},
            "s3": {"bucket": bucket, "prefix": f"events/{name}"},
            "rolling": {"max_age_s": 1.0, "max_records": 50},
            "snowflake": {"database": "TESTS", "schema": "EVENTS", "table": name.upper()},
        }
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(document))
    loaded = {spec.name.split("_")[0]: spec for spec in load_specs(folder)}
    return {kind: loaded[kind] for kind in kinds}


def _values(spec: EventSpec, event_name: str, count: int, seed: int) -> list[bytes]:
    samples = SampleEvents(event_name, schema_for(spec), seed=seed)
    return [samples.encoded(i)[1] for i in range(count)]


async def _run_until_caught_up(
    workers: list[StreamWorker], settings: Any, specs: list[EventSpec], timeout_s: float
) -> None:
    """Run the workers together until every group has committed every partition to its end."""
    tasks = [asyncio.create_task(worker.run()) for worker in workers]

    async def caught_up() -> bool:
        assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
        offsets = [await asyncio.to_thread(end_and_committed, settings, spec) for spec in specs]
        return all(ends == committed for ends, committed in offsets)

    try:
        await eventually_async(
            caught_up,
            timeout_s,
            what="every group committed to the end",
            detail=lambda: [w.stats for w in workers],
        )
    finally:
        for worker in workers:
            worker.stop()
        await asyncio.gather(*tasks)


def test_three_event_types_and_a_stray_on_one_topic(
    dev_stack: DevStack, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    """Interleaved orders, stores and clicks land in their own tables; a record no spec matches goes to
    the catch-all; per partition every offset is one spec's row or dead letter and the others' skip."""
    settings = dev_stack.settings
    topic = unique_name("shared")
    suffix = unique_name("s", sep="_").split("_")[1]
    specs = _write_specs(tmp_path / "pipelines", topic, "it-shared", suffix)
    orders, stores, clicks = specs["orders"], specs["stores"], specs["clicks"]
    asyncio.run(ensure_topic(orders, settings.kafka))
    store = S3Store(settings.aws, "it-shared")
    store.create_bucket()

    order_values = _values(orders, "order_created", 120, seed=1)
    store_values = _values(stores, "store_updated", 80, seed=2)
    click_values = _values(clicks, "app_click", 100, seed=3)
    messages: list[tuple[Any, ...]] = []
    for i in range(120):  # interleaved, keys spread over the partitions
        messages.append((f"order-{i}".encode(), order_values[i]))
        if i < 80:
            messages.append((f"store-{i}".encode(), store_values[i]))
        if i < 100 and i % 2:
            messages.append((f"click-{i}".encode(), click_values[i]))
        elif i < 100:  # the envelope in headers: matched without reading the value
            event = json.loads(click_values[i])
            headers = [
                (k, str(event[k]).encode()) for k in ("event_id", "event_name", "created_at", "source")
            ]
            messages.append((f"click-{i}".encode(), json.dumps(event["payload"]).encode(), headers))
    broken_order = order_values[0].replace(b'"payload":{', b'"payload":{"item_count":"three",', 1)
    stray = json.loads(click_values[0]) | {"event_name": "mystery_event"}
    messages += [(b"order-broken", broken_order), (b"stray", json.dumps(stray).encode())]
    produced = produce(settings, orders, messages)

    workers = [StreamWorker(spec, settings) for spec in specs.values()]
    asyncio.run(_run_until_caught_up(workers, settings, list(specs.values()), timeout_s=180))

    # Every offset of every partition is exactly one spec's row or dead letter.
    ends, _committed = end_and_committed(settings, orders)
    assert sum(ends.values()) == produced
    taken: Counter[tuple[int, int]] = Counter()
    by_spec: dict[str, tuple[list[Any], list[Any]]] = {}
    ranges_in_s3: dict[str, int] = {}
    for kind, spec in specs.items():
        rows, dead, ranges = offsets_in_s3(store, spec)
        by_spec[kind] = (rows, dead)
        ranges_in_s3[kind] = len(ranges)
        taken.update(rows + dead)
    assert set(taken) == {(p, o) for p, end in ends.items() for o in range(end)}
    assert max(taken.values()) == 1
    assert [len(by_spec[k][0]) for k in specs] == [120, 80, 100, 1]
    assert [len(by_spec[k][1]) for k in specs] == [1, 0, 0, 0]

    # Per spec and partition: read = rows + dead letters + skipped (the others' records).
    for kind, worker in zip(specs, workers, strict=True):
        rows, dead = by_spec[kind]
        stats = worker.stats
        assert stats.records_read == produced
        assert stats.rows_written + stats.dead_lettered + stats.skipped == produced, kind
        assert (stats.rows_written, stats.dead_lettered) == (len(rows), len(dead)), kind
        # Ranges of other specs' records only were committed past, with no file.
        assert stats.files_written == ranges_in_s3[kind], kind
        event = specs[kind].name
        other_events = REGISTRY.get_sample_value(
            "loader_records_skipped_total", {"event": event, "reason": "other_event"}
        )
        assert other_events == produced - len(rows) - len(dead), kind
        assert REGISTRY.get_sample_value(
            "loader_records_skipped_total", {"event": event, "reason": "unmatched"}
        ) in (None, 0.0)

    # Each table holds its own events: the stray record in the catch-all's.
    counts = {}
    with Warehouse(settings.snowflake) as warehouse:
        for kind, spec in specs.items():
            objects = EventObjects.for_spec(spec, settings.snowflake)
            for statement in objects.create_statements():
                warehouse.execute(statement)
            keys = [info.key for info in store.list_objects(spec.data_prefix)]
            assert all(r.done for r in load_files(warehouse, store, objects, keys))
            rows_in_table = warehouse.execute(f'SELECT "_KEY", "_EVENT_NAME" FROM {objects.table}')
            counts[kind] = Counter(row[1] for row in rows_in_table)
            if kind == "other":
                assert [bytes(row[0]) for row in rows_in_table] == [b"stray"]
    assert counts == {
        "orders": {"order_created": 120},
        "stores": {"store_updated": 80},
        "clicks": {"app_click": 100},
        "other": {"mystery_event": 1},
    }
