"""Events as analysts and operators see them: valid, header-enveloped and broken, end to end."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections import Counter
from collections.abc import Callable
from decimal import Decimal

import pytest

from loader.consume.kafka import ensure_topic
from loader.devstack import DevStack
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.load import load_files
from loader.warehouse.objects import EventObjects
from loader.worker.worker import StreamWorker
from tests.integration.helpers import make_spec, produce, read_files, sample_values
from tests.integration.workers import run_worker_until

pytestmark = pytest.mark.integration


def _broken(valid: bytes) -> dict[str, bytes | None]:
    """A corpus of what producers really send wrong, by name."""
    event = json.loads(valid)

    def edited(**payload: object) -> bytes:
        return json.dumps({**event, "payload": {**event["payload"], **payload}}).encode()

    missing = {**event, "payload": {k: v for k, v in event["payload"].items() if k != "order_id"}}
    return {
        "malformed": valid[:-7],
        "wrong_type": edited(item_count="three"),
        "missing_required": json.dumps(missing).encode(),
        "null_required": edited(store_id=None),
        "bad_decimal": edited(subtotal="12.345"),
        "bad_date": edited(order_date="2026-02-30"),
        "latin1": valid.replace(b'"currency":"', '"currency":"\u00e9'.encode("latin-1")),
        "empty": b"",
        "tombstone": None,
        "bare_null": b"null",
        "array": b"[1,2,3]",
        "no_envelope": json.dumps(event["payload"]).encode(),
    }


def test_valid_header_and_broken_events(dev_stack: DevStack, unique_name: Callable[..., str]) -> None:
    """The table holds exactly the valid events, typed; dead letters the broken ones; counts reconcile."""
    settings = dev_stack.settings
    spec = make_spec(unique_name("events", sep="_"), bucket="it-events", partitions=3)
    asyncio.run(ensure_topic(spec, settings.kafka))
    store = S3Store(settings.aws, spec.s3.bucket)
    store.create_bucket()

    valid = sample_values(spec, 400, seed=11)
    messages: list[tuple] = [(f"good-{i}".encode(), value) for i, (_, value) in enumerate(valid[:300])]
    for i, (_, value) in enumerate(valid[300:]):  # envelope in headers, bare payload as the value
        event = json.loads(value)
        headers = [
            (k, str(event[k]).encode())
            for k in ("event_id", "event_name", "created_at", "source", "schema_version")
        ]
        messages.append((f"header-{i}".encode(), json.dumps(event["payload"]).encode(), headers))
    pretty = json.dumps(json.loads(valid[0][1]), indent=2).encode()
    unknown = json.dumps({**json.loads(valid[1][1]), "new_field": {"x": 1}}).encode()
    messages += [(b"good-pretty", pretty), (b"good-unknown-field", unknown)]
    broken = _broken(valid[2][1])
    messages += [(f"bad-{name}".encode(), value) for name, value in broken.items()]
    produced = produce(settings, spec, messages)

    worker = StreamWorker(spec, settings)
    run_worker_until(worker, lambda: worker.stats.records_read >= produced)

    dead = read_files(store, spec.dead_letter_prefix)
    dead_rows = [row for table in dead.values() for row in table.to_pylist()]
    assert sorted(row["_KEY"] for row in dead_rows) == sorted(f"bad-{n}".encode() for n in broken)
    assert all(row["_REASON"] for row in dead_rows)
    by_key = {row["_KEY"]: row for row in dead_rows}
    assert by_key[b"bad-missing_required"]["_REASON"] == "missing required field 'order_id'"
    assert by_key[b"bad-tombstone"]["_VALUE"] is None
    assert by_key[b"bad-latin1"]["_VALUE"] == broken["latin1"]  # raw bytes kept as sent

    objects = EventObjects.for_spec(spec, settings.snowflake)
    with Warehouse(settings.snowflake) as warehouse:
        for statement in objects.create_statements():
            warehouse.execute(statement)
        keys = [info.key for info in store.list_objects(spec.data_prefix)]
        assert all(r.done for r in load_files(warehouse, store, objects, keys))
        rows = warehouse.execute(
            'SELECT "_KEY", "SUBTOTAL", "ORDER_DATE", "_CREATED_AT", "_PARTITION", "_SOURCE" FROM '
            + objects.table
        )
    loaded_keys = sorted(bytes(r[0]) for r in rows)
    expected = sorted([k for k, *_ in messages if not k.startswith(b"bad-")])
    assert loaded_keys == expected
    sample = next(r for r in rows if bytes(r[0]) == b"header-0")
    assert isinstance(sample[1], Decimal)
    assert isinstance(sample[2], dt.date)
    assert isinstance(sample[3], dt.datetime)
    assert sample[5] == json.loads(valid[300][1])["source"]

    # Per partition: records read = rows loaded + dead letters.
    per_partition = Counter(r[4] for r in rows) + Counter(row["_PARTITION"] for row in dead_rows)
    assert sum(per_partition.values()) == produced
    assert set(per_partition) <= set(range(spec.kafka.partitions))
