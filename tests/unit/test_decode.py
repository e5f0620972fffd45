"""Batch decoding: fast path rows, exact reasons for rejects, nothing raises."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from loader.encode.decode import BatchDecoder
from loader.samples import SampleEvents
from loader.schema import load_avro_schema
from tests.unit.fakes import FakeRecord

pytestmark = pytest.mark.unit

SCHEMAS = Path(__file__).parents[2] / "schemas"


@pytest.fixture(scope="module")
def decoder() -> BatchDecoder:
    return BatchDecoder(load_avro_schema(SCHEMAS / "order_created.avsc"))


def _records(n: int, start: int = 0) -> list[FakeRecord]:
    samples = SampleEvents("order_created", load_avro_schema(SCHEMAS / "order_created.avsc"), seed=1)
    out = []
    for i in range(start, start + n):
        key, value = samples.encoded(i)
        out.append(FakeRecord("orders", 3, 100 + i, 1_764_230_400_000 + i, key, value))
    return out


def test_valid_batch_becomes_typed_rows(decoder: BatchDecoder) -> None:
    """Valid events become one row each, typed, with their metadata columns."""
    records = _records(50)
    batch = decoder.decode(records)
    assert batch.rejected == []
    assert batch.table.num_rows == 50
    assert batch.table.schema == decoder.file_schema
    row = batch.table.slice(7, 1).to_pylist()[0]
    source = json.loads(records[7].value or b"")
    assert row["ORDER_ID"] == source["payload"]["order_id"]
    assert row["SUBTOTAL"] == Decimal(source["payload"]["subtotal"])
    assert row["_OFFSET"] == 107 and row["_PARTITION"] == 3 and row["_TOPIC"] == "orders"
    assert row["_EVENT_ID"] == source["event_id"]
    assert row["_KEY"] == records[7].key


def _with_payload(
    base: FakeRecord,
    offset: int,
    mutate: dict[str, object] | None = None,
    raw: bytes | None = None,
    drop: str | None = None,
) -> FakeRecord:
    event = json.loads(base.value or b"")
    event["payload"].update(mutate or {})
    if drop:
        event["payload"].pop(drop)
    value = raw if raw is not None else json.dumps(event).encode()
    return FakeRecord(base.topic, base.partition, offset, base.timestamp, base.key, value)


def test_bad_records_get_exact_reasons(decoder: BatchDecoder) -> None:
    """Each broken record is rejected alone with its reason; the rest become rows in order."""
    good = _records(40)
    base = good[0]
    bad = {
        1000: _with_payload(base, 1000, raw=b'{"event_id": "x", '),
        1001: _with_payload(base, 1001, mutate={"item_count": "three"}),
        1002: _with_payload(base, 1002, drop="order_id"),
        1003: FakeRecord("orders", 3, 1003, 0, b"k", None),
        1004: _with_payload(base, 1004, raw=b""),
        1005: _with_payload(base, 1005, mutate={"subtotal": "12.345"}),
        1006: _with_payload(base, 1006, raw=b"\xff\xfe{not utf8}"),
        1007: _with_payload(base, 1007, mutate={"order_date": "2026-13-45"}),
    }
    mixed = [*good[:10], bad[1000], bad[1001], *good[10:30], *list(bad.values())[2:], *good[30:]]
    batch = decoder.decode(mixed)
    reasons = {r.record.offset: r.reason for r in batch.rejected}
    assert set(reasons) == set(bad)
    assert "changed from number to string" in reasons[1001] or "item_count" in reasons[1001]
    assert reasons[1002] == "missing required field 'order_id'"
    assert reasons[1003].startswith("tombstone")
    assert reasons[1004] == "empty value"
    assert "scale" in reasons[1005]
    assert reasons[1006] == "not a JSON object"
    assert "2026-13-45" in reasons[1007]
    assert batch.table.column("_OFFSET").to_pylist() == [r.offset for r in good]


def test_pretty_printed_json_is_accepted(decoder: BatchDecoder) -> None:
    """A valid event spread over several lines still becomes a row."""
    record = _records(1)[0]
    pretty = json.dumps(json.loads(record.value or b""), indent=2).encode()
    batch = decoder.decode([FakeRecord("orders", 0, 5, 0, None, pretty)])
    assert batch.rejected == [] and batch.table.num_rows == 1


def test_unknown_fields_are_ignored(decoder: BatchDecoder) -> None:
    """Fields the schema does not know are ignored (forward compatibility)."""
    record = _with_payload(_records(1)[0], 9, mutate={"brand_new": {"x": 1}})
    batch = decoder.decode([record])
    assert batch.rejected == [] and batch.table.num_rows == 1


def test_empty_batch(decoder: BatchDecoder) -> None:
    """An empty batch gives an empty table of the file schema."""
    batch = decoder.decode([])
    assert batch.table.num_rows == 0 and batch.table.schema == decoder.file_schema
