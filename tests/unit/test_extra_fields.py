"""Unknown payload fields: kept in _EXTRA (or switched off with a reason), counted, and turned
into Avro field suggestions that keep the schema backward compatible."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from loader import metrics
from loader.config.spec import SchemaRef
from loader.encode.decode import BatchDecoder
from loader.encode.extra import extra_paths, split_unknown
from loader.schema import load_avro_schema
from loader.schema.avro import parse_avro_schema
from loader.schema.compat import backward_problems
from loader.schema.drift import FieldDrift, apply_suggestions, avro_type, suggest
from loader.schema.types import EXTRA
from tests.unit.fakes import FakeRecord

pytestmark = pytest.mark.unit

SCHEMAS = Path(__file__).parents[2] / "schemas"
STORE = load_avro_schema(SCHEMAS / "store_updated.avsc")
ORDER = load_avro_schema(SCHEMAS / "order_created.avsc")


def _store_payload(**extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "store_id": "s1",
        "store_name": "Pizza",
        "city": "Lyon",
        "cuisine": None,
        "is_open": True,
        "rating": 4.5,
        "location": {"lat": 45.7, "lng": 4.8},
        "updated_at": "2026-11-27T08:00:00Z",
    }
    payload.update(extra)
    return payload


def _record(offset: int, payload: dict[str, Any]) -> FakeRecord:
    event = {"event_id": f"e{offset}", "event_name": "store_updated", "created_at": "2026-11-27T08:00:00Z"}
    value = json.dumps({**event, "payload": payload}).encode()
    return FakeRecord("stores", 0, offset, 1_764_230_400_000 + offset, None, value)


def test_split_keeps_unknown_fields_at_every_depth() -> None:
    """Unknown top-level, nested-record and array-item fields are split off with their paths."""
    payload = _store_payload(color="red", location={"lat": 1.0, "lng": 2.0, "floor": 3})
    extra, paths = split_unknown(payload, STORE.fields)
    assert extra == {"color": "red", "location": {"floor": 3}}
    assert sorted(paths) == ["color", "location.floor"]
    items = [{"sku": "a", "quantity": 1, "unit_price": "1.00"}, {"sku": "b", "quantity": 1, "gift": True}]
    extra, paths = split_unknown({"order_id": "o", "items": items}, ORDER.fields)
    assert extra == {"items": [None, {"gift": True}]}
    assert paths == ["items[].gift"]
    assert sorted(p for p, _ in extra_paths(extra, ORDER.fields)) == ["items[].gift"]


def test_split_finds_nothing_in_a_known_payload() -> None:
    """A payload with only known fields has no extra (NULL in _EXTRA)."""
    assert split_unknown(_store_payload(), STORE.fields) == (None, [])


def test_decoder_writes_exactly_the_unknown_fields_and_counts_them() -> None:
    """Rows with unknown fields get them as JSON in _EXTRA; the others get NULL; counts by path."""
    decoder = BatchDecoder(STORE)
    records = [
        _record(0, _store_payload()),
        _record(1, _store_payload(color="red", tags=["a", "b"])),
        _record(2, _store_payload(location={"lat": 1.0, "lng": 2.0, "floor": 3}, color="blue")),
        _record(3, _store_payload(is_open="not a boolean", color="lost")),  # a dead letter
    ]
    batch = decoder.decode(records)
    assert [r.record.offset for r in batch.rejected] == [3]
    extras = batch.table.column(EXTRA).cast("string").to_pylist()
    assert extras[0] is None
    assert json.loads(extras[1]) == {"color": "red", "tags": ["a", "b"]}
    assert json.loads(extras[2]) == {"location": {"floor": 3}, "color": "blue"}
    assert batch.table.column("CITY").to_pylist() == ["Lyon"] * 3
    assert dict(batch.unknown_fields) == {"color": 2, "tags": 1, "location.floor": 1}


def test_fast_path_batch_has_null_extra() -> None:
    """A batch with no unknown field takes the fast path and has an all-NULL _EXTRA."""
    decoder = BatchDecoder(STORE)
    batch = decoder.decode([_record(i, _store_payload()) for i in range(5)])
    assert batch.table.schema == decoder.file_schema
    assert batch.table.column(EXTRA).null_count == 5
    assert not batch.unknown_fields


def test_header_envelope_payload_is_split_too() -> None:
    """With the envelope in headers, the bare payload's unknown fields go to _EXTRA."""
    value = json.dumps(_store_payload(color="red")).encode()
    headers = [("event_id", b"e1"), ("created_at", b"2026-11-27T08:00:00Z")]
    record = FakeRecord("stores", 0, 9, 1_764_230_400_000, None, value, headers)
    batch = BatchDecoder(STORE).decode([record])
    assert not batch.rejected
    assert json.loads(batch.table.column(EXTRA)[0].as_py()) == {"color": "red"}


def test_switched_off_drops_the_column_but_still_counts() -> None:
    """keep_extra=False: files have no _EXTRA column; unknown fields are still counted."""
    decoder = BatchDecoder(STORE, keep_extra=False)
    batch = decoder.decode([_record(1, _store_payload(color="red"))])
    assert EXTRA not in batch.table.schema.names
    assert batch.table.num_rows == 1
    assert dict(batch.unknown_fields) == {"color": 1}


def test_switching_off_needs_a_reason() -> None:
    """schema.extra_fields.keep: false without a reason is refused; with one it is accepted."""
    with pytest.raises(ValidationError, match="needs a reason"):
        SchemaRef.model_validate({"path": "x.avsc", "extra_fields": {"keep": False}})
    ref = SchemaRef.model_validate(
        {"path": "x.avsc", "extra_fields": {"keep": False, "reason": "PII may arrive in new fields"}}
    )
    assert not ref.extra_fields.keep
    assert SchemaRef.model_validate({"path": "x.avsc"}).extra_fields.keep


def _unknown_samples(event: str) -> dict[str, float]:
    registry: CollectorRegistry = metrics.REGISTRY
    found: dict[str, float] = {}
    for family in registry.collect():
        if family.name == "loader_unknown_fields":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels["event"] == event:
                    found[sample.labels["field"]] = sample.value
    return found


def test_unknown_field_metric_is_capped_per_event() -> None:
    """Past MAX_UNKNOWN_FIELDS distinct paths per event, further paths are counted as other."""
    bound = metrics.EventMetrics("extra_cap_test")
    cap = metrics.MAX_UNKNOWN_FIELDS
    bound.unknown_fields({f"f{i}": 1 for i in range(cap)})
    bound.unknown_fields({"f0": 2, "late_a": 3, "late_b": 4, "items[].gift": 1})
    found = _unknown_samples("extra_cap_test")
    assert len(found) == cap + 1
    assert found["f0"] == 3
    assert found["other"] == 8
    assert "items[].gift" not in found


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, 2, None], "int"),
        ([1, 2**40], "long"),
        ([1, 2.5], "double"),
        ([True, False], "boolean"),
        (["a", None], "string"),
        ([[1, 2], [3]], {"type": "array", "items": "int"}),
        (
            [{"floor": 3}, {"floor": 4, "wing": "B"}],
            {
                "type": "record",
                "name": "ExtraX",
                "fields": [
                    {"name": "floor", "type": ["null", "int"], "default": None},
                    {"name": "wing", "type": ["null", "string"], "default": None},
                ],
            },
        ),
    ],
)
def test_avro_type_inferred_from_samples(values: list[Any], expected: Any) -> None:
    """Samples map to the narrowest Avro type holding them all (records and arrays too)."""
    avro, note = avro_type(values, "ExtraX")
    assert avro == expected
    assert note == ""


def test_mixed_types_fall_back_to_string_with_a_note() -> None:
    """Values of different kinds suggest a string, and say so."""
    avro, note = avro_type([1, "a"], "X")
    assert avro == "string"
    assert "mixed types" in note


def test_suggestion_applied_is_backward_compatible() -> None:
    """The suggested fields, added to the schema (top level and inside a nested record), pass
    the backward-compatibility check and read as optional fields."""
    drifts = []
    for path, values in (("color", ["red", "blue"]), ("location.floor", [3, 4]), ("tags", [["a"]])):
        drift = FieldDrift(path)
        for value in values:
            drift.add(value, datetime(2026, 11, 27))
        drifts.append(drift)
    document = json.loads((SCHEMAS / "store_updated.avsc").read_text())
    updated, left = apply_suggestions(document, suggest(drifts))
    assert left == []
    new = parse_avro_schema(updated)
    assert backward_problems(STORE, new) == []
    assert new.version == STORE.version + 1
    by_name = {f.name: f for f in new.fields}
    assert by_name["color"].nullable and by_name["color"].has_default
    assert by_name["tags"].type.kind == "array"
    location = by_name["location"].type
    assert [f.name for f in location.fields] == ["lat", "lng", "floor"]
    # With the fields known, nothing is unknown any more.
    payload = _store_payload(color="red", tags=["a"], location={"lat": 1.0, "lng": 2.0, "floor": 3})
    assert split_unknown(payload, new.fields) == (None, [])


def test_invalid_names_are_not_suggested() -> None:
    """A field name Avro cannot hold is reported, not added."""
    drift = FieldDrift("first-name")
    drift.add("x", datetime(2026, 11, 27))
    [suggestion] = suggest([drift])
    assert suggestion.definition is None
    assert "rename" in suggestion.note
