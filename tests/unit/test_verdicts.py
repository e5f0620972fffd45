"""One verdict per record, whichever decoding path it takes (issue 13, point 5): each record that
got a wrong verdict before, alone, pretty-printed, and in a batch of good records."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from loader.config.spec import load_spec
from loader.encode import decoder_for
from loader.encode.decode import BatchDecoder, Decoder
from loader.encode.raw import RawDecoder
from loader.errors import ConfigError
from loader.schema import load_avro_schema
from loader.schema.model import EventSchema, FieldType, SchemaField
from tests.unit.fakes import FakeRecord

pytestmark = pytest.mark.unit

REPO = Path(__file__).parents[2]
STORES = BatchDecoder(load_avro_schema(REPO / "schemas" / "store_updated.avsc"))
ORDERS = BatchDecoder(load_avro_schema(REPO / "schemas" / "order_created.avsc"))
CREATED = "2026-11-27T08:00:00Z"
ENVELOPE = {"event_id": "e-1", "event_name": "store_updated", "created_at": CREATED, "source": "t"}
STORE: dict[str, Any] = {
    "store_id": "s-1",
    "store_name": "Dragon",
    "city": "Denver",
    "cuisine": None,
    "is_open": True,
    "rating": 4.5,
    "location": {"lat": 39.7, "lng": -104.9},
    "updated_at": CREATED,
}
ORDER: dict[str, Any] = {
    "order_id": "o-1",
    "store_id": "s-1",
    "customer_id": "c-1",
    "subtotal": "10.00",
    "delivery_fee": "2.50",
    "currency": "CAD",
    "item_count": 1,
    "items": [{"sku": "SKU-1", "quantity": 1, "unit_price": "10.00"}],
    "promised_at": None,
    "order_date": "2026-11-27",
    "is_scheduled": False,
}
GOOD = [json.dumps({**ENVELOPE, "event_id": f"g-{i}", "payload": STORE}).encode() for i in range(3)]
GOOD_ORDERS = [json.dumps({**ENVELOPE, "event_id": f"g-{i}", "payload": ORDER}).encode() for i in range(3)]


def _event(payload: dict[str, Any]) -> bytes:
    return json.dumps({**ENVELOPE, "payload": payload}).encode()


def _verdicts(
    decoder: Decoder,
    value: bytes,
    headers: tuple[tuple[str, bytes], ...] = (),
    good: Sequence[bytes] = GOOD,
) -> list[str | None]:
    """The record's verdict (None: a row; else the reason) alone and after ``good`` records,
    which stay rows."""
    verdicts: list[str | None] = []
    for before in ([], good):
        records = [FakeRecord("t", 0, i, 1, None, v) for i, v in enumerate(before)]
        records.append(FakeRecord("t", 0, len(before), 1, None, value, headers))
        batch = decoder.decode(records)
        assert batch.table.num_rows + len(batch.rejected) == len(records)
        reasons = {r.record.offset: r.reason for r in batch.rejected}
        assert set(reasons) <= {len(before)}, reasons
        verdicts.append(reasons.get(len(before)))
    return verdicts


def _pretty(value: bytes) -> bytes:
    return json.dumps(json.loads(value), indent=2).encode()


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("pretty", [False, True], ids=["compact", "pretty"])
def test_nan_or_infinity_in_a_double_field_is_a_dead_letter(constant: str, pretty: bool) -> None:
    """NaN and Infinity are not JSON: a double field holding one is a dead letter, not a row."""
    value = _event({**STORE, "rating": 1.25}).replace(b"1.25", constant.encode())
    verdicts = _verdicts(STORES, _pretty(value) if pretty else value)
    assert verdicts == [f"{constant} is not JSON (RFC 8259 has no NaN or Infinity)"] * 2


def test_nan_in_an_unknown_field_is_a_dead_letter() -> None:
    """NaN is refused wherever it is, in fields the schema does not know too."""
    value = _event({**STORE, "extra": [1.25]}).replace(b"1.25", b"NaN")
    assert _verdicts(STORES, value) == ["NaN is not JSON (RFC 8259 has no NaN or Infinity)"] * 2


def test_a_nested_record_without_a_required_field_is_a_dead_letter() -> None:
    """A location without its lng is a dead letter naming the nested field."""
    value = _event({**STORE, "location": {"lat": 39.7}})
    assert _verdicts(STORES, value) == ["missing required field 'location.lng'"] * 2
    assert _verdicts(STORES, _pretty(value)) == ["missing required field 'location.lng'"] * 2


def test_a_record_in_an_array_without_a_required_field_is_a_dead_letter() -> None:
    """An order item without its sku (or with a null one) is a dead letter naming the field."""
    for item in ({"quantity": 1, "unit_price": "1.00"}, {"sku": None, "quantity": 1, "unit_price": "1.00"}):
        value = _event({**ORDER, "items": [ORDER["items"][0], item]})
        assert _verdicts(ORDERS, value, good=GOOD_ORDERS) == ["missing required field 'items[].sku'"] * 2


def test_an_optional_record_may_be_null_or_absent() -> None:
    """A null or absent optional record is a row: only present records need their fields."""
    assert _verdicts(STORES, _event({**STORE, "location": None})) == [None, None]
    payload = dict(STORE)
    del payload["location"]
    assert _verdicts(STORES, _event(payload)) == [None, None]


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        (b'"city": "Denver"', b'"city": "Denver", "city": "Austin"', "city"),
        (b'"lat": 39.7', b'"lat": 39.7, "lat": 1.0', "lat"),
        (b'"source": "t"', b'"source": "t", "source": "t"', "source"),
        (b'"city": "Denver"', b'"city": "Denver", "x": {"y": 1, "y": 1}', "y"),
        (b'"city": "Denver"', b'"city": "Denver", "x": 1, "x": 2', "x"),
    ],
    ids=["payload", "nested", "envelope", "inside-unknown", "unknown"],
)
def test_a_repeated_key_is_a_dead_letter_however_formatted(old: bytes, new: bytes, key: str) -> None:
    """A key twice in one object is a dead letter at every depth, on one line or pretty-printed."""
    one_line = _event(STORE).replace(old, new)
    assert new in one_line
    pretty = one_line.replace(b", ", b",\n    ").replace(b"{", b"{\n  ")
    reason = f"duplicate key {key!r}: a key may appear once per object"
    assert _verdicts(STORES, one_line) == [reason] * 2
    assert _verdicts(STORES, pretty) == [reason] * 2


HEADERS = (("event_id", b"e-9"), ("created_at", CREATED.encode()))


@pytest.mark.parametrize("name", ["event_id", "created_at", "source", "event_name"])
def test_an_envelope_header_that_is_not_utf8_is_a_dead_letter(name: str) -> None:
    """An envelope header holding invalid UTF-8 is a dead letter naming the header."""
    headers = dict(HEADERS)
    headers[name] = b"e-\xff\xfe"
    verdicts = _verdicts(STORES, json.dumps(STORE).encode(), tuple(headers.items()))
    assert verdicts == [f"envelope header {name!r} is not UTF-8: b'e-\\xff\\xfe'"] * 2


@pytest.mark.parametrize(
    "suffix",
    [b', "extra": {"a": 1}', b', "source": "x"', b', "payload": {}', b"} {", b' {"a": 1}'],
    ids=["unknown-key", "envelope-key", "payload-key", "two-objects", "object-after"],
)
def test_a_header_envelope_value_that_is_not_one_json_object_is_a_dead_letter(suffix: bytes) -> None:
    """Under a header envelope the value must be exactly one JSON object: anything after it
    (keys smuggled into the envelope, a second object) makes it a dead letter."""
    value = json.dumps(STORE).encode() + suffix
    if suffix == b"} {":
        value = json.dumps(STORE).encode()[:-1] + b"}} {}"
    [alone, among] = _verdicts(STORES, value, HEADERS)
    assert alone is not None and alone == among


def test_a_header_envelope_with_a_json_object_is_a_row() -> None:
    """The same payload as one object under the same headers is a row (pretty-printed too)."""
    assert _verdicts(STORES, json.dumps(STORE).encode(), HEADERS) == [None, None]
    assert _verdicts(STORES, json.dumps(STORE, indent=2).encode(), HEADERS) == [None, None]


def _deep(levels: int) -> Any:
    value: Any = 1
    for level in range(levels):
        value = [value] if level % 2 else {"a": value}
    return value


DEPTH_REASON = "nested deeper than 64 levels of objects and arrays (max_json_depth)"


@pytest.mark.parametrize("pretty", [False, True], ids=["compact", "pretty"])
def test_a_3000_deep_unknown_field_is_a_dead_letter_on_every_path(pretty: bool) -> None:
    """A valid event with a 3,000-deep unknown field is a dead letter naming max_json_depth,
    compact or pretty-printed, alone or in a batch."""
    deep = b"[" * 3000 + b"1" + b"]" * 3000
    value = _event({**STORE, "deep": "DEEP"}).replace(b'"DEEP"', deep)
    if pretty:
        value = value.replace(b", ", b",\n ")
    assert _verdicts(STORES, value) == [DEPTH_REASON] * 2


def test_nesting_up_to_max_json_depth_is_a_row() -> None:
    """The envelope is level 1 and the payload level 2: 62 more levels fit in 64, 63 do not."""
    assert _verdicts(STORES, _event({**STORE, "deep": _deep(62)})) == [None, None]
    assert _verdicts(STORES, _event({**STORE, "deep": _deep(63)})) == [DEPTH_REASON] * 2
    # Brackets inside strings are text, not nesting.
    assert _verdicts(STORES, _event({**STORE, "city": "[" * 500})) == [None, None]


def test_max_json_depth_is_the_same_under_a_header_envelope() -> None:
    """A bare payload under a header envelope sits at level 2, as it would in the envelope."""
    assert _verdicts(STORES, json.dumps({**STORE, "deep": _deep(62)}).encode(), HEADERS) == [None, None]
    deeper = json.dumps({**STORE, "deep": _deep(63)}).encode()
    assert _verdicts(STORES, deeper, HEADERS) == [DEPTH_REASON] * 2


def test_max_json_depth_is_a_spec_setting_for_both_decoders(tmp_path: Path) -> None:
    """schema.max_json_depth reaches the typed and the raw decoder; out of range is refused."""
    decoders: list[Decoder] = []
    for name in ("store_updated", "app_click"):
        document = yaml.safe_load((REPO / "pipelines" / f"{name}.yaml").read_text())
        document["schema"]["max_json_depth"] = 120
        if "path" in document["schema"]:
            document["schema"]["path"] = str(REPO / "schemas" / "store_updated.avsc")
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(document))
        decoders.append(decoder_for(load_spec(path)))
    for decoder in decoders:
        value = _event({**STORE, "deep": _deep(100)})
        assert _verdicts(decoder, value) == [None, None]
        assert _verdicts(decoder, _event({**STORE, "deep": _deep(130)}))[0] == (
            "nested deeper than 120 levels of objects and arrays (max_json_depth)"
        )
    document["schema"]["max_json_depth"] = 1000
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError, match="max_json_depth"):
        load_spec(path)


def test_a_schema_deeper_than_max_json_depth_is_a_config_error() -> None:
    """A limit its own valid events would break is refused when the decoder is made."""
    nested = FieldType(kind="record", fields=(SchemaField("x", FieldType(kind="int"), nullable=False),))
    for _ in range(9):
        nested = FieldType(kind="record", fields=(SchemaField("r", nested, nullable=False),))
    schema = EventSchema("deep", 1, (SchemaField("r", nested, nullable=False),))
    BatchDecoder(schema, max_json_depth=12)
    with pytest.raises(ConfigError, match=r"nests 12 levels.*max_json_depth \(11\)"):
        BatchDecoder(schema, max_json_depth=11)


RAW = RawDecoder("app_click")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"a": 1, "a": 2}', "duplicate key 'a': a key may appear once per object"),
        (b'{"a": {"b": [{"c": 1, "c": 1}]}}', "duplicate key 'c': a key may appear once per object"),
        (json.dumps({"deep": _deep(63)}).encode(), DEPTH_REASON),
        (b'{"a": NaN}', "NaN is not JSON"),
    ],
    ids=["repeated", "repeated-nested", "deep", "nan"],
)
def test_raw_events_follow_the_same_rules(payload: bytes, reason: str) -> None:
    """Raw events are held to the same strict JSON: repeated keys, depth (the payload is level
    2: 63 more levels make 65), NaN."""
    value = b'{"event_id": "e", "created_at": "' + CREATED.encode() + b'", "payload": ' + payload + b"}"
    [alone, among] = _verdicts(RAW, value)
    assert alone is not None and alone.startswith(reason) and alone == among
    headers = (("event_id", b"e"), ("created_at", CREATED.encode()))
    assert _verdicts(RAW, payload, headers)[0] == alone


@pytest.mark.parametrize(("sent", "version"), [(b"7", 7), (b"007", 7), (b" 12 ", 12), (b"0", 0)])
def test_a_schema_version_header_is_its_decimal_number(sent: bytes, version: int) -> None:
    """A schema_version header is a decimal number in ASCII: leading zeros and spaces are fine."""
    headers = (*HEADERS, ("schema_version", sent))
    record = FakeRecord("t", 0, 0, 1, None, json.dumps(STORE).encode(), headers)
    batch = STORES.decode([record])
    assert batch.rejected == []
    assert batch.table.column("_SCHEMA_VERSION").to_pylist() == [version]
