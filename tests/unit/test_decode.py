"""Batch decoding: fast path rows, exact reasons for rejects, nothing raises."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from loader.devstack.samples import SampleEvents
from loader.encode.decode import BatchDecoder
from loader.schema import load_avro_schema
from tests.unit.fakes import FakeRecord

pytestmark = pytest.mark.unit

SCHEMAS = Path(__file__).parents[2] / "schemas"


@pytest.fixture(scope="module")
def decoder() -> BatchDecoder:
    return BatchDecoder(load_avro_schema(SCHEMAS / "order_created.avsc"))


def _records(n: int, start: int = 0) -> list[FakeRecord]:  # offsets 100 + i
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


def test_envelope_in_headers(decoder: BatchDecoder) -> None:
    """The envelope may travel as Kafka headers with the bare payload as the value."""
    source = json.loads(_records(1)[0].value or b"")
    headers = [
        ("event_id", b"e-42"),
        ("event_name", b"order_created"),
        ("source", b"rest-proxy"),
        ("created_at", b"2026-11-27T08:00:00Z"),
        ("schema_version", b"1"),
        ("traceparent", b"00-ab"),
    ]
    bare = FakeRecord("orders", 0, 7, 0, b"k", json.dumps(source["payload"]).encode(), tuple(headers))
    mixed = [*_records(3), bare]
    batch = decoder.decode(mixed)
    assert batch.rejected == []
    row = batch.table.slice(3, 1).to_pylist()[0]
    assert (row["_EVENT_ID"], row["_SOURCE"], row["_SCHEMA_VERSION"]) == ("e-42", "rest-proxy", 1)
    assert row["ORDER_ID"] == source["payload"]["order_id"]


def test_header_envelope_with_bad_payload_is_a_dead_letter(decoder: BatchDecoder) -> None:
    """A header-enveloped record with a broken payload is rejected, its raw bytes kept."""
    bad = FakeRecord(
        "orders", 0, 9, 0, None, b"{not json", (("event_id", b"e"), ("created_at", b"2026-01-01"))
    )
    batch = decoder.decode([*_records(2), bad])
    assert [r.record.value for r in batch.rejected] == [b"{not json"]
    assert batch.table.num_rows == 2


@pytest.mark.parametrize("value", [b"null", b"1", b"[]", b'"x"', b"true", b"{} null {}", b"{}{}"])
def test_bare_json_values_are_rejected_not_crashing(decoder: BatchDecoder, value: bytes) -> None:
    """Bare JSON values (Arrow's reader segfaults on a lone `null`) are dead letters."""
    batch = decoder.decode([FakeRecord("t", 0, 0, 0, None, value), *_records(2, start=1)])
    assert [r.record.offset for r in batch.rejected] == [0]
    assert batch.table.num_rows == 2
