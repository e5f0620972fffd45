"""Headers as a column and rows back to records: what replay publish sends is what was consumed."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from loader.devstack.samples import SampleEvents
from loader.encode.decode import BatchDecoder
from loader.encode.headers import decode_headers, headers_column
from loader.encode.raw import RawDecoder
from loader.encode.reencode import RecordEncoder
from loader.schema import load_avro_schema
from tests.unit.fakes import FakeRecord

pytestmark = pytest.mark.unit

SCHEMAS = Path(__file__).parents[2] / "schemas"

HEADER_SETS: list[tuple[tuple[str, bytes | None], ...]] = [
    (),
    (("trace", b"abc"),),
    (("bin", b"\xff\x00\xfe"), ("empty", b""), ("none", None)),
    (("dup", b"1"), ("dup", b"2"), ("unicode", "café ☕".encode())),
]


def _record(offset: int, headers: tuple[tuple[str, bytes | None], ...]) -> FakeRecord:
    return FakeRecord("t", 0, offset, 1_700_000_000_000 + offset, b"k", b"{}", headers)


def test_headers_column_keeps_order_repeats_binary_and_nulls() -> None:
    """Every header comes back exactly, in order; records without headers are null."""
    records = [_record(i, headers) for i, headers in enumerate(HEADER_SETS)]
    column = headers_column(records).to_pylist()
    assert column[0] is None
    for text, headers in zip(column[1:], HEADER_SETS[1:], strict=True):
        assert decode_headers(text) == list(headers)
    assert json.loads(column[1]) == [{"key": "trace", "value": "abc"}]  # readable in the warehouse


def test_a_batch_without_headers_is_all_null() -> None:
    column = headers_column([_record(i, ()) for i in range(5)])
    assert column.null_count == 5 and len(column) == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ('{"key": "a"}', "not a JSON array"),
        ('[{"value": "x"}]', "without a string key"),
        ('[{"key": "a", "value_base64": "***"}]', "bad base64"),
    ],
)
def test_foreign_header_text_is_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_headers(text)


def test_typed_rows_become_the_records_they_came_from() -> None:
    """Key, timestamp, partition, offset and headers as consumed; the value equal in meaning."""
    schema = load_avro_schema(SCHEMAS / "order_created.avsc")
    samples = SampleEvents("order_created", schema, seed=3)
    records = []
    for i in range(8):
        key, value = samples.encoded(i)
        records.append(FakeRecord("orders", 5, 70 + i, 1_764_230_400_007 + i, key, value, HEADER_SETS[i % 4]))
    table = BatchDecoder(schema).decode(records).table
    rebuilt = list(RecordEncoder(schema, raw=False).records(table))
    for original, again in zip(records, rebuilt, strict=True):
        assert (again.partition, again.offset, again.timestamp_ms) == (5, original.offset, original.timestamp)
        assert again.key == original.key
        assert again.headers == list(original.headers)
        sent, replayed = json.loads(original.value or b""), json.loads(again.value)
        assert replayed["event_id"] == sent["event_id"] and replayed["created_at"] == sent["created_at"]
        assert replayed["payload"]["order_id"] == sent["payload"]["order_id"]
        assert replayed["payload"]["subtotal"] == sent["payload"]["subtotal"]  # decimals keep every digit
        assert replayed["payload"]["items"] == sent["payload"]["items"]


def test_raw_rows_keep_their_free_form_payload_and_header_envelope() -> None:
    """A raw event's payload comes back as sent; an envelope sent in headers stays in headers."""
    decoder = RawDecoder("app_click")
    samples = SampleEvents("app_click", decoder.schema, seed=9)
    records = []
    for i in range(6):
        key, value = samples.encoded(i)
        event = json.loads(value)
        headers: tuple[tuple[str, bytes | None], ...] = ()
        if i % 2:  # the envelope in headers, the bare payload as the value
            headers = (("event_id", event["event_id"].encode()), ("created_at", event["created_at"].encode()))
            value = json.dumps(event["payload"]).encode()
        records.append(FakeRecord("clicks", 1, i, 1_764_230_400_000 + i, key, value, headers))
    batch = decoder.decode(records)
    assert batch.rejected == []
    rebuilt = list(RecordEncoder(decoder.schema, raw=True).records(batch.table))
    for original, again in zip(records, rebuilt, strict=True):
        assert again.headers == list(original.headers)
        assert orjson.loads(again.value) == orjson.loads(original.value or b"")
    again_batch = decoder.decode(
        [FakeRecord("clicks", 1, r.offset, r.timestamp_ms, r.key, r.value, tuple(r.headers)) for r in rebuilt]
    )
    assert again_batch.table.equals(batch.table)


def test_a_null_event_id_header_is_not_a_header_envelope() -> None:
    """As for the decoder, an ``event_id`` header with a null value counts as absent: the value
    sent was the whole JSON envelope, and that is what comes back."""
    schema = load_avro_schema(SCHEMAS / "order_created.avsc")
    key, value = SampleEvents("order_created", schema, seed=4).encoded(0)
    record = FakeRecord("orders", 0, 1, 1_764_230_400_000, key, value, (("event_id", None),))
    decoder = BatchDecoder(schema)
    table = decoder.decode([record]).table
    (again,) = RecordEncoder(schema, raw=False).records(table)
    assert json.loads(again.value)["event_id"] == json.loads(value)["event_id"]
    rebuilt = FakeRecord("orders", 0, 1, again.timestamp_ms, again.key, again.value, tuple(again.headers))
    assert decoder.decode([rebuilt]).table.equals(table)
