"""Confluent wire-format Avro values (``format: avro-registry``): values serialized by
confluent-kafka's AvroSerializer (as a real producer does), resolved to the spec's schema."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa
import pytest
from confluent_kafka.schema_registry._sync.mock_schema_registry_client import MockSchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loader.config.spec import load_spec
from loader.encode import decoder_for
from loader.encode.avro_registry import AvroRegistryDecoder, wire_value
from loader.errors import ConfigError, RegistryError, SpecError
from loader.schema import load_avro_schema
from loader.schema.registry_client import WriterSchemaError
from loader.schema.types import arrow_schema
from tests.unit.fakes import FakeRecord

pytestmark = pytest.mark.unit

REPO = Path(__file__).parents[2]
TOPIC = "stores"
CREATED = "2026-11-27T08:00:00Z"
HEADERS = (("event_id", b"e-1"), ("created_at", CREATED.encode()), ("source", b"svc"))

READER: dict[str, Any] = {
    "type": "record",
    "name": "StoreUpdated",
    "namespace": "com.delivery.stores",
    "version": 2,
    "fields": [
        {"name": "store_id", "type": "string"},
        {"name": "rating", "type": ["null", "double"], "default": None},
        {"name": "visits", "type": "long"},
        {"name": "city", "type": "string", "default": "unknown"},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "opened_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}},
    ],
}
V1: dict[str, Any] = {
    "type": "record",
    "name": "Store",
    "namespace": "com.producer",
    "fields": [
        {"name": "store_id", "type": "string"},
        {"name": "rating", "type": ["null", "float"], "default": None},
        {"name": "visits", "type": "int"},
        {"name": "internal", "type": "string"},
        {"name": "opened_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}},
    ],
}
V2: dict[str, Any] = {
    **V1,
    "fields": [*V1["fields"], {"name": "city", "type": ["null", "string"], "default": None}],
}
OPENED = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


class Registry:
    """confluent-kafka's in-memory registry: the serializer registers, the decoder looks up by id."""

    def __init__(self) -> None:
        self.client = MockSchemaRegistryClient({"url": "mock://registry"})
        self.lookups: list[int] = []
        self.down = False

    def serialize(self, writer: dict[str, Any], value: dict[str, Any]) -> bytes:
        serializer = AvroSerializer(self.client, json.dumps(writer))
        data = serializer(value, SerializationContext(TOPIC, MessageField.VALUE))
        assert data is not None
        return data

    def writer_schema(self, schema_id: int) -> str:
        self.lookups.append(schema_id)
        if self.down:
            raise RegistryError("cannot reach the schema registry", transient=True)
        try:
            return str(self.client.get_schema(schema_id).schema_str)
        except Exception:  # the mock's own "not found" error
            raise WriterSchemaError(schema_id, "the schema registry has no such schema") from None


def _decoder(registry: Registry, reader: dict[str, Any] = READER) -> AvroRegistryDecoder:
    from loader.schema.avro import parse_avro_schema  # noqa: PLC0415

    return AvroRegistryDecoder(parse_avro_schema(reader), reader, registry)


def _records(values: Sequence[bytes | None], headers: Any = HEADERS) -> list[FakeRecord]:
    return [FakeRecord(TOPIC, 0, 10 + i, 1_764_230_400_000, None, v, headers) for i, v in enumerate(values)]


def _v1(registry: Registry, index: int) -> bytes:
    value = {
        "store_id": f"s-{index}",
        "rating": 4.5,
        "visits": index,
        "internal": "x",
        "opened_at": OPENED,
        "price": Decimal("12.34"),
    }
    return registry.serialize(V1, value)


def _v2(registry: Registry, index: int, city: str | None = "Denver") -> bytes:
    value = {
        "store_id": f"s-{index}",
        "rating": None,
        "visits": index,
        "internal": "x",
        "opened_at": OPENED,
        "price": Decimal("1.50"),
        "city": city,
    }
    return registry.serialize(V2, value)


def test_v1_and_v2_mixed_in_one_batch_land_in_the_spec_shape() -> None:
    """v1 and v2 records in one batch become rows of the spec's shape (promotions, defaults, drops)."""
    registry = Registry()
    values = [_v1(registry, 0), _v2(registry, 1), _v1(registry, 2), _v2(registry, 3, city="Boston")]
    decoder = _decoder(registry)
    decoded = decoder.decode(_records(values))
    assert decoded.rejected == []
    table = decoded.table
    assert table.schema == arrow_schema(decoder.schema).append(decoder.file_schema.field("_EXTRA"))
    assert table.column("STORE_ID").to_pylist() == ["s-0", "s-1", "s-2", "s-3"]
    assert table.column("VISITS").to_pylist() == [0, 1, 2, 3]  # int promoted to long
    assert table.column("RATING").to_pylist() == [4.5, None, 4.5, None]  # float promoted to double
    assert table.column("CITY").to_pylist() == ["unknown", "Denver", "unknown", "Boston"]  # v1: default
    assert table.column("TAGS").to_pylist() == [[], [], [], []]
    assert table.column("OPENED_AT").to_pylist() == [OPENED] * 4  # millis read as micros
    assert table.column("PRICE").to_pylist() == [Decimal("12.34"), Decimal("1.50")] * 2
    assert "INTERNAL" not in table.column_names
    # The writer-only field is not dropped: it is kept in _EXTRA, and counted.
    assert [json.loads(v) for v in table.column("_EXTRA").to_pylist()] == [{"internal": "x"}] * 4
    assert decoded.unknown_fields == {"internal": 4}
    assert table.column("_EVENT_ID").to_pylist() == ["e-1"] * 4
    assert table.column("_CREATED_AT").to_pylist() == [datetime(2026, 11, 27, 8, tzinfo=UTC)] * 4
    assert table.column("_OFFSET").to_pylist() == [10, 11, 12, 13]
    assert len(registry.lookups) == 2  # each writer schema looked up once


def test_writer_null_for_a_required_reader_field_is_a_dead_letter_alone() -> None:
    """A writer union's null branch meeting a required reader field rejects that record only."""
    registry = Registry()
    reader = {
        **READER,
        "fields": [*READER["fields"][:3], {"name": "city", "type": "string"}, *READER["fields"][4:]],
    }
    values = [_v2(registry, 0), _v2(registry, 1, city=None), _v2(registry, 2)]
    decoded = _decoder(registry, reader).decode(_records(values))
    assert decoded.table.column("_OFFSET").to_pylist() == [10, 12]
    assert [r.record.offset for r in decoded.rejected] == [11]
    assert (
        decoded.rejected[0].reason
        == "schema id 1: field 'city' is null in the record but the spec requires it"
    )


def test_unresolvable_writer_schema_makes_every_record_of_its_id_a_dead_letter() -> None:
    """A writer lacking a reader field without default: each record of its id is a dead letter."""
    registry = Registry()
    no_visits = {**V1, "name": "Other", "fields": [f for f in V1["fields"] if f["name"] != "visits"]}
    bad = registry.serialize(
        no_visits, {"store_id": "s", "rating": None, "internal": "", "opened_at": OPENED, "price": Decimal(1)}
    )
    bad_id = int.from_bytes(bad[1:5], "big")
    decoded = _decoder(registry).decode(_records([bad, _v1(registry, 1), bad]))
    assert decoded.table.column("_OFFSET").to_pylist() == [11]
    assert [r.record.offset for r in decoded.rejected] == [10, 12]
    for rejected in decoded.rejected:
        assert f"schema id {bad_id}" in rejected.reason
        assert "cannot be resolved" in rejected.reason


def test_unknown_schema_id_is_a_dead_letter_with_the_id() -> None:
    """An id the registry does not know rejects its records with the id and reason; the rest decode."""
    registry = Registry()
    good = _v1(registry, 0)
    unknown = wire_value(4242, good[5:])
    decoded = _decoder(registry).decode(_records([unknown, good, unknown]))
    assert decoded.table.num_rows == 1
    assert [r.reason for r in decoded.rejected] == [
        "schema id 4242: the schema registry has no such schema"
    ] * 2
    assert registry.lookups.count(4242) == 1  # asked once per batch


def test_a_registry_outage_propagates_and_rejects_nothing() -> None:
    """A transient lookup failure raises out of decode (the batch is retried), never a dead letter."""
    registry = Registry()
    value = _v1(registry, 0)
    registry.down = True
    with pytest.raises(RegistryError) as raised:
        _decoder(registry).decode(_records([value]))
    assert raised.value.transient


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "tombstone"),
        (b"", "too short"),
        (b"\x00\x00\x00", "too short"),
        (b'{"store_id": "s"}', "magic byte is 0x7b"),
    ],
)
def test_malformed_wire_bytes_are_dead_letters(value: bytes | None, reason: str) -> None:
    """Values not in the Confluent wire format are dead letters saying why."""
    registry = Registry()
    decoded = _decoder(registry).decode(_records([value, _v1(registry, 1)]))
    assert decoded.table.num_rows == 1
    assert len(decoded.rejected) == 1
    assert reason in decoded.rejected[0].reason


def test_truncated_and_overlong_bodies_are_dead_letters_alone() -> None:
    """A body cut short or followed by extra bytes is rejected alone, whatever its neighbours."""
    registry = Registry()
    good = _v1(registry, 0)
    decoded = _decoder(registry).decode(_records([good[:-3], good, good + b"\x02", good]))
    assert decoded.table.column("_OFFSET").to_pylist() == [11, 13]
    reasons = [r.reason for r in decoded.rejected]
    assert reasons[0].startswith("schema id 1: not a valid Avro record: ")
    assert reasons[1] == "schema id 1: 1 bytes left after the Avro record"


def test_envelope_comes_from_headers_or_the_records_fields() -> None:
    """The envelope comes from headers, else the record's fields of the same name; neither: dead letter."""
    registry = Registry()
    with_envelope = {
        **V1,
        "fields": [
            *V1["fields"],
            {"name": "event_id", "type": "string"},
            {"name": "created_at", "type": "string"},
            {"name": "schema_version", "type": "int"},
        ],
    }
    value = registry.serialize(
        with_envelope,
        {
            "store_id": "s",
            "rating": None,
            "visits": 1,
            "internal": "",
            "opened_at": OPENED,
            "price": Decimal(1),
            "event_id": "from-record",
            "created_at": "2026-11-27T09:00:00+01:00",
            "schema_version": 7,
        },
    )
    decoded = _decoder(registry).decode(
        _records([value], headers=()) + _records([_v1(registry, 1)], headers=())
    )
    assert decoded.table.column("_EVENT_ID").to_pylist() == ["from-record"]
    assert decoded.table.column("_CREATED_AT").to_pylist() == [datetime(2026, 11, 27, 8, tzinfo=UTC)]
    assert decoded.table.column("_SCHEMA_VERSION").to_pylist() == [7]
    assert [r.reason for r in decoded.rejected] == [
        "missing required envelope field 'event_id' (a Kafka header, or a field of the record)"
    ]
    headers = (("event_id", b"\xff"), ("created_at", CREATED.encode()))
    decoded = _decoder(registry).decode(_records([value], headers=headers))
    assert decoded.rejected[0].reason == "envelope header 'event_id' is not UTF-8"


def test_decimal_too_wide_for_the_column_is_rejected_alone() -> None:
    """A decimal with more digits than its schema allows is a dead letter; the batch's others land."""
    registry = Registry()
    value = {"store_id": "s", "rating": None, "visits": 1, "internal": "", "opened_at": OPENED}
    small = registry.serialize(V1, {**value, "price": Decimal("12.00")})
    # Avro does not bound a decimal's digits: a careless producer's bytes under the same id.
    wide = {
        **V1,
        "fields": [
            *V1["fields"][:5],
            {
                "name": "price",
                "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2},
            },
        ],
    }
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(wide), {**value, "price": Decimal("1234567.89")})
    big = wire_value(int.from_bytes(small[1:5], "big"), body.getvalue())
    decoded = _decoder(registry).decode(_records([big, small]))
    assert decoded.table.column("PRICE").to_pylist() == [Decimal("12.00")]
    assert [r.record.offset for r in decoded.rejected] == [10]
    assert "does not fit" in decoded.rejected[0].reason


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=8), st.sampled_from([1, 2]))
def test_any_bytes_never_raise_out_of_the_decoder(bodies: list[bytes], schema_id: int) -> None:
    """Whatever bytes a value holds, each record ends as a row or a dead letter, in order."""
    registry = Registry()
    _v1(registry, 0)
    _v2(registry, 0)
    values = [wire_value(schema_id, body) for body in bodies] + [b"\x00" + body for body in bodies]
    decoded = _decoder(registry).decode(_records(values))
    offsets = decoded.table.column("_OFFSET").to_pylist() + [r.record.offset for r in decoded.rejected]
    assert sorted(offsets) == [r.offset for r in _records(values)]


def test_spec_format_avro_registry_selects_the_decoder(tmp_path: Path) -> None:
    """format avro-registry selects the Avro decoder, which needs a lookup; protobuf needs a message type."""
    (tmp_path / "s.avsc").write_text(json.dumps(READER))
    spec_file = tmp_path / "s.yaml"
    base = {
        "name": "stores",
        "kafka": {"topic": TOPIC},
        "s3": {"bucket": "bucket-b", "prefix": "stores"},
        "snowflake": {"database": "D", "schema": "S", "table": "T"},
    }
    spec_file.write_text(json.dumps({**base, "schema": {"path": "s.avsc", "format": "avro-registry"}}))
    spec = load_spec(spec_file)
    registry = Registry()
    decoder = decoder_for(spec, registry)
    assert isinstance(decoder, AvroRegistryDecoder)
    assert decoder.decode(_records([_v1(registry, 0)])).table.num_rows == 1
    with pytest.raises(ConfigError, match=r"schema_registry\.url"):
        decoder_for(spec)
    spec_file.write_text(json.dumps({**base, "schema": {"path": "s.avsc", "format": "protobuf-registry"}}))
    with pytest.raises(SpecError, match=r"schema\.message"):
        load_spec(spec_file)
    assert load_avro_schema(tmp_path / "s.avsc").version == 2
    assert pa.types.is_decimal(decoder.file_schema.field("PRICE").type)


NESTED_READER: dict[str, Any] = {
    "type": "record",
    "name": "Order",
    "fields": [
        {"name": "order_id", "type": "string", "aliases": ["id"]},
        {
            "name": "where",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "Geo",
                    "fields": [{"name": "lat", "type": "double"}, {"name": "lng", "type": "double"}],
                },
            ],
            "default": None,
        },
        {
            "name": "items",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Item",
                    "fields": [{"name": "sku", "type": "string"}, {"name": "quantity", "type": "long"}],
                },
            },
        },
        {"name": "seen_at", "type": {"type": "long", "logicalType": "timestamp-millis"}, "default": 1000},
    ],
}
NESTED_WRITER: dict[str, Any] = {
    "type": "record",
    "name": "Order",
    "fields": [
        {"name": "id", "type": "string"},
        {
            "name": "where",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "Geo",
                    "fields": [{"name": "lat", "type": "float"}, {"name": "lng", "type": ["null", "float"]}],
                },
            ],
        },
        {
            "name": "items",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Item",
                    "fields": [{"name": "sku", "type": "string"}, {"name": "quantity", "type": "int"}],
                },
            },
        },
    ],
}


def test_nested_records_arrays_aliases_and_defaults_resolve() -> None:
    """Aliases, promotions in records and arrays, null parents, a nested null refused, a default."""
    registry = Registry()
    values = [
        registry.serialize(NESTED_WRITER, {"id": "o-1", "where": None, "items": []}),
        registry.serialize(
            NESTED_WRITER,
            {"id": "o-2", "where": {"lat": 1.5, "lng": 2.5}, "items": [{"sku": "a", "quantity": 2}]},
        ),
        registry.serialize(NESTED_WRITER, {"id": "o-3", "where": {"lat": 1.5, "lng": None}, "items": []}),
    ]
    decoded = _decoder(registry, NESTED_READER).decode(_records(values))
    table = decoded.table
    assert table.column("ORDER_ID").to_pylist() == ["o-1", "o-2"]
    assert table.column("WHERE").to_pylist() == [None, {"lat": 1.5, "lng": 2.5}]
    assert table.column("ITEMS").to_pylist() == [[], [{"sku": "a", "quantity": 2}]]
    assert table.column("ITEMS").type == pa.list_(pa.struct([("sku", pa.string()), ("quantity", pa.int64())]))
    assert table.column("SEEN_AT").to_pylist() == [datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)] * 2
    assert [(r.record.offset, r.reason) for r in decoded.rejected] == [
        (12, "schema id 1: field 'where.lng' is null in the record but the spec requires it")
    ]


def test_writer_schemas_outside_the_columnar_set_are_read_record_by_record() -> None:
    """A writer with an enum (dropped by the reader) still decodes: fastavro reads it, resolution included."""
    registry = Registry()
    with_enum = {
        **V1,
        "fields": [
            *V1["fields"],
            {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
        ],
    }
    value = {
        "store_id": "s",
        "rating": 2.0,
        "visits": 3,
        "internal": "",
        "opened_at": OPENED,
        "price": Decimal("1.00"),
        "kind": "B",
    }
    good = registry.serialize(with_enum, value)
    decoded = _decoder(registry).decode(_records([good, good + b"\x00", good[:-2]]))
    assert decoded.table.column("VISITS").to_pylist() == [3]
    assert decoded.table.column("CITY").to_pylist() == ["unknown"]
    assert [r.record.offset for r in decoded.rejected] == [11, 12]
    assert "1 bytes left after the Avro record" in decoded.rejected[0].reason


def _mutated(good: list[bytes]) -> st.SearchStrategy[bytes]:
    """Good values, and the same with bytes flipped, cut or added: what a broken producer sends."""
    chosen = st.sampled_from(good)
    flipped = st.tuples(chosen, st.integers(5, 200), st.integers(1, 255)).map(
        lambda t: (
            t[0][: t[1]] + bytes([t[0][t[1] % len(t[0])] ^ t[2]]) + t[0][t[1] + 1 :]
            if t[1] < len(t[0])
            else t[0]
        )
    )
    cut = st.tuples(chosen, st.integers(1, 20)).map(lambda t: t[0][: max(5, len(t[0]) - t[1])])
    extended = st.tuples(chosen, st.binary(min_size=1, max_size=4)).map(lambda t: t[0] + t[1])
    return st.one_of(chosen, flipped, cut, extended)


GOOD_REGISTRY = Registry()
GOOD_VALUES = [
    _v1(GOOD_REGISTRY, 1),
    _v2(GOOD_REGISTRY, 2),
    _v2(GOOD_REGISTRY, 3, city=None),
    _v1(GOOD_REGISTRY, 4),
]


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(_mutated(GOOD_VALUES), min_size=2, max_size=12))
def test_a_records_verdict_is_the_same_alone_and_in_any_batch(values: list[bytes]) -> None:
    """Each record gets the same verdict (its row, or its reason) decoded alone as within the batch."""
    decoder = _decoder(GOOD_REGISTRY)
    records = _records(values)
    batch = decoder.decode(records)
    rows = {row["_OFFSET"]: row for row in batch.table.to_pylist()}
    reasons = {r.record.offset: r.reason for r in batch.rejected}
    assert sorted([*rows, *reasons]) == [r.offset for r in records]
    for record in records:
        alone = decoder.decode([record])
        if record.offset in rows:
            assert alone.table.to_pylist() == [rows[record.offset]]
        else:
            assert [r.reason for r in alone.rejected] == [reasons[record.offset]]


EXTRA_READER: dict[str, Any] = {
    "type": "record",
    "name": "Order",
    "version": 1,
    "fields": [
        {"name": "order_id", "type": "string", "aliases": ["id"]},
        {"name": "where", "type": ["null", {"type": "record", "name": "Place", "fields": [
            {"name": "lat", "type": "double"}]}], "default": None},
        {"name": "items", "type": {"type": "array", "items": {"type": "record", "name": "Item", "fields": [
            {"name": "sku", "type": "string"}]}}},
    ],
}  # fmt: skip
EXTRA_WRITER: dict[str, Any] = {
    "type": "record",
    "name": "Order",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "where", "type": ["null", {"type": "record", "name": "Place", "fields": [
            {"name": "lat", "type": "double"}, {"name": "floor", "type": "int"}]}], "default": None},
        {"name": "items", "type": {"type": "array", "items": {"type": "record", "name": "Item", "fields": [
            {"name": "sku", "type": "string"}, {"name": "gift", "type": ["null", "boolean"]}]}}},
        {"name": "channel", "type": {"type": "enum", "name": "Channel", "symbols": ["WEB", "APP"]}},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}},
    ],
}  # fmt: skip


@pytest.mark.parametrize("keep", [True, False])
def test_writer_only_fields_at_every_depth_are_kept_in_extra(keep: bool) -> None:
    """Writer-only fields (top level, in a nested record, in array items; enum and decimal values)
    go to _EXTRA as JSON and are counted; a field matched by a reader alias is not unknown;
    switched off, the file has no _EXTRA and the fields are still counted."""
    from loader.schema.avro import parse_avro_schema  # noqa: PLC0415

    registry = Registry()
    datum = {
        "id": "o-1",
        "where": {"lat": 1.5, "floor": 3},
        "items": [{"sku": "a", "gift": None}, {"sku": "b", "gift": True}],
        "channel": "APP",
        "price": Decimal("9.90"),
    }
    values = [
        registry.serialize(EXTRA_WRITER, datum),
        registry.serialize(EXTRA_WRITER, datum | {"where": None}),
    ]
    decoder = AvroRegistryDecoder(parse_avro_schema(EXTRA_READER), EXTRA_READER, registry, keep_extra=keep)
    decoded = decoder.decode(_records(values))
    assert decoded.rejected == []
    assert decoded.table.column("ORDER_ID").to_pylist() == ["o-1", "o-1"]
    assert decoded.unknown_fields == {"where.floor": 1, "items[].gift": 4, "channel": 2, "price": 2}
    if not keep:
        assert "_EXTRA" not in decoded.table.column_names
        return
    first, second = (json.loads(v) for v in decoded.table.column("_EXTRA").to_pylist())
    assert first == {
        "where": {"floor": 3},
        "items": [{"gift": None}, {"gift": True}],
        "channel": "APP",
        "price": "9.90",
    }
    assert second == {"items": [{"gift": None}, {"gift": True}], "channel": "APP", "price": "9.90"}


def test_writer_without_own_fields_has_null_extra() -> None:
    """A writer schema whose fields the reader all knows leaves _EXTRA NULL and counts nothing."""
    registry = Registry()
    writer = {**V1, "fields": [f for f in V1["fields"] if f["name"] != "internal"]}
    value = {"store_id": "s", "rating": None, "visits": 1, "opened_at": OPENED, "price": Decimal("1.00")}
    decoded = _decoder(registry).decode(_records([registry.serialize(writer, value)]))
    assert decoded.rejected == []
    assert decoded.table.column("_EXTRA").to_pylist() == [None]
    assert not decoded.unknown_fields


def test_a_writer_with_field_defaults_decodes_on_the_batch_path() -> None:
    """Regression: a writer schema whose fields carry defaults (a string's "unknown", an array's
    []) had every record refused as "not a valid Avro record"; such records decode as rows."""
    registry = Registry()
    value = {
        "store_id": "s-1",
        "rating": 1.0,
        "visits": 3,
        "city": "Paris",
        "tags": ["a", "b"],
        "opened_at": OPENED,
        "price": Decimal("1.00"),
    }
    data = registry.serialize(READER, value)
    decoded = _decoder(registry).decode(_records([data, data]))
    assert decoded.rejected == []
    rows = decoded.table.to_pylist()
    assert [(row["STORE_ID"], row["CITY"], row["TAGS"]) for row in rows] == [("s-1", "Paris", ["a", "b"])] * 2


ENVELOPE_WRITER: dict[str, Any] = {
    **V1,
    "fields": [
        *V1["fields"],
        {"name": "event_id", "type": ["null", "string"], "default": None},
        {"name": "created_at", "type": ["null", "string"], "default": None},
        {"name": "schema_version", "type": ["null", "int"], "default": None},
    ],
}
ENUM_WRITER: dict[str, Any] = {
    **ENVELOPE_WRITER,
    "fields": [
        *ENVELOPE_WRITER["fields"],
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A"]}},
    ],
}


def _two(low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(lambda n: f"{n:02d}")


_ISO_COMMON = st.builds(
    lambda *parts: "".join(parts),
    st.sampled_from(["0000", "0001", "2026", "9999"]),
    st.sampled_from(["-01-", "-02-", "-12-"]),
    st.sampled_from(["01", "28", "29", "31"]),
    st.sampled_from(["T", " "]),
    st.sampled_from(["00:00:00", "23:59:59", "12:30:05"]),
    st.sampled_from(["", ".1", ".123456"]),
    st.sampled_from(["", "Z", "+00:00", "+05:30", "-23:59"]),
)
"""The forms producers send, at the edges of the calendar and of Python's datetime range."""
_ISO_ODD = st.builds(
    lambda *parts: "".join(parts),
    st.sampled_from(["0000", "2026", "9999"]),
    st.sampled_from(["-12-", "-13-", "-00-"]),
    st.sampled_from(["01", "00", "32"]),
    st.sampled_from(["T", "t", "_"]),
    st.sampled_from(["00", "23", "24"]),
    st.sampled_from([":00:00", ":60:00", ":00:60", "0000", ":00", ""]),
    st.sampled_from(["", ".1234567", "."]),
    st.sampled_from(["", "Z", "z", "+24:00", "+0530", "+05", "+05:30:15", "+12:60"]),
)
"""Forms Python's ``fromisoformat`` may read or refuse, beside the common ones."""
_ISO_LIKE = st.one_of(_ISO_COMMON, _ISO_ODD)
_CREATED_TEXT = st.one_of(_ISO_LIKE, _ISO_LIKE.map(lambda t: t[:10]), st.text(max_size=12))
_VERSION_TEXT = st.one_of(
    st.integers(0, 10**20).map(str), st.sampled_from([" 7", "7 ", "007", "", "-1", "٣", "1e3"])
)
_HEADER_VALUE = {
    "event_id": st.one_of(st.text(max_size=4).map(str.encode), st.binary(max_size=3)),
    "event_name": st.one_of(st.text(max_size=4).map(str.encode), st.binary(max_size=3)),
    "created_at": st.one_of(_CREATED_TEXT.map(str.encode), st.binary(max_size=3)),
    "source": st.text(max_size=4).map(str.encode),
    "schema_version": _VERSION_TEXT.map(str.encode),
    "trace": st.binary(max_size=3),
}
_HEADER = st.sampled_from(sorted(_HEADER_VALUE)).flatmap(
    lambda key: st.tuples(st.just(key), st.one_of(st.none(), _HEADER_VALUE[key]))
)
_ENVELOPE_CASE = st.tuples(
    st.lists(_HEADER, max_size=7),
    st.one_of(st.none(), st.text(max_size=4)),
    st.one_of(st.none(), _CREATED_TEXT),
    st.one_of(st.none(), st.integers(0, 2**31 - 1)),
)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(_ENVELOPE_CASE, min_size=1, max_size=10))
def test_the_block_envelope_columns_match_the_record_by_record_envelope(
    cases: list[tuple[list[tuple[str, bytes | None]], str | None, str | None, int | None]],
) -> None:
    """The block's envelope columns give each record the verdict, reason and values reading it alone gives."""
    registry = Registry()
    payload = {
        "store_id": "s",
        "rating": None,
        "visits": 1,
        "internal": "",
        "opened_at": OPENED,
        "price": Decimal(1),
    }
    decoded = []
    for writer in (ENVELOPE_WRITER, ENUM_WRITER):
        records = [
            FakeRecord(TOPIC, 0, offset, 1_764_230_400_000, None, registry.serialize(writer, {
                **payload, "event_id": event_id, "created_at": created_at, "schema_version": version,
                "kind": "A",
            }), headers)
            for offset, (headers, event_id, created_at, version) in enumerate(cases)
        ]  # fmt: skip
        batch = _decoder(registry).decode(records)
        envelope = batch.table.select(
            ["_OFFSET", "_EVENT_ID", "_EVENT_NAME", "_CREATED_AT", "_SOURCE", "_SCHEMA_VERSION"]
        )
        decoded.append((envelope.to_pylist(), [(r.record.offset, r.reason) for r in batch.rejected]))
    block, each = decoded
    assert block == each


def test_envelope_fields_of_other_types_in_the_writer_record_never_raise() -> None:
    """Regression: a writer record declaring `event_id` as bytes (not UTF-8) or `source` as a long,
    with no envelope headers, raised out of decode. Now bytes must be UTF-8 (else a dead letter
    naming the field) and an integer is written in decimal."""
    writer = copy.deepcopy(READER)
    writer["fields"] += [
        {"name": "event_id", "type": "bytes"},
        {"name": "created_at", "type": "string"},
        {"name": "source", "type": "long"},
    ]
    registry = Registry()
    value = {
        "store_id": "s-1",
        "rating": 1.0,
        "visits": 3,
        "city": "Paris",
        "tags": [],
        "opened_at": OPENED,
        "price": Decimal("1.00"),
        "created_at": CREATED,
        "source": 7,
    }
    good = registry.serialize(writer, {**value, "event_id": b"e-9"})
    bad = registry.serialize(writer, {**value, "event_id": b"\xff\xfe"})
    decoded = _decoder(registry).decode(_records([good, bad], headers=()))
    assert [r.reason for r in decoded.rejected] == ["envelope field 'event_id' is not UTF-8"]
    assert [(row["_EVENT_ID"], row["_SOURCE"]) for row in decoded.table.to_pylist()] == [("e-9", "7")]
