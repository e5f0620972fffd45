"""Property tests: the decoder never raises, and every schema maps consistently."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loader.config.settings import SnowflakeSettings
from loader.config.spec import load_specs
from loader.devstack.samples import SampleEvents
from loader.encode.decode import BatchDecoder
from loader.encode.reencode import RecordEncoder
from loader.schema import arrow_schema, load_avro_schema, parse_avro_schema, snowflake_columns
from loader.warehouse.objects import EventObjects
from tests.unit.fakes import FakeRecord

pytestmark = pytest.mark.unit

REPO = Path(__file__).parents[2]
SCHEMA = load_avro_schema(REPO / "schemas" / "order_created.avsc")
DECODER = BatchDecoder(SCHEMA)
VALID = [SampleEvents("order_created", SCHEMA, seed=5).encoded(i)[1] for i in range(20)]


def _mutations() -> st.SearchStrategy[bytes | None]:
    """Valid events, random bytes, truncations, splices, type swaps, tombstones, huge values."""
    valid = st.sampled_from(VALID)
    return st.one_of(
        valid,
        st.none(),
        st.binary(max_size=300),
        st.builds(lambda v, n: v[:n], valid, st.integers(0, 600)),
        st.builds(
            lambda v, i, b: v[:i] + b + v[i:], valid, st.integers(0, 600), st.binary(min_size=1, max_size=8)
        ),
        st.builds(
            lambda v, a, b: v.replace(a, b),
            valid,
            st.sampled_from([b'"', b":", b"{", b"1", b"true", b"payload"]),
            st.sampled_from([b"", b"'", b"null", b'"x"', b"[]", b"\n", b"\xff"]),
        ),
        st.builds(lambda v, n: v[:-1] + b',"pad":"' + b"x" * n + b'"}', valid, st.integers(0, 200_000)),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_mutations(), min_size=1, max_size=30))
def test_any_bytes_become_a_row_or_a_dead_letter(values: list[bytes | None]) -> None:
    """Whatever a producer sends, each record is exactly one row or one reject, and nothing raises."""
    records = [FakeRecord("t", 0, i, 1_764_230_400_000, None, v) for i, v in enumerate(values)]
    batch = DECODER.decode(records)
    rows = batch.table.column("_OFFSET").to_pylist()
    rejects = [r.record.offset for r in batch.rejected]
    assert sorted(rows + rejects) == list(range(len(values)))
    assert all(r.reason for r in batch.rejected)
    for offset in rows:  # a row is only ever a valid event
        assert json.loads(values[offset] or b"")["payload"]


_PRIMITIVE = st.sampled_from(
    [
        "int",
        "long",
        "float",
        "double",
        "boolean",
        "string",
        {"type": "long", "logicalType": "timestamp-micros"},
        {"type": "int", "logicalType": "date"},
        {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 4},
    ]
)
_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)


def _types(depth: int = 0) -> st.SearchStrategy[Any]:
    if depth >= 2:
        return _PRIMITIVE
    nested = st.one_of(
        st.builds(lambda items: {"type": "array", "items": items}, _types(depth + 1)),
        st.builds(lambda fs: {"type": "record", "name": f"R{depth}", "fields": fs}, _fields(depth + 1)),
    )
    return st.one_of(_PRIMITIVE, _PRIMITIVE, nested)


def _fields(depth: int = 0) -> st.SearchStrategy[list[dict[str, Any]]]:
    field = st.builds(
        lambda name, typ, nullable: {"name": name, "type": ["null", typ] if nullable else typ},
        _NAMES,
        _types(depth),
        st.booleans(),
    )
    return st.lists(field, min_size=1, max_size=6, unique_by=lambda f: f["name"].upper())


@settings(max_examples=80, deadline=None)
@given(_fields())
def test_every_schema_maps_to_arrow_parquet_and_snowflake(fields: list[dict[str, Any]]) -> None:
    """Any supported schema gives one Arrow schema that round-trips through Parquet, and DDL that parses."""
    schema = parse_avro_schema({"type": "record", "name": "E", "version": 1, "fields": fields})
    arrow = arrow_schema(schema)
    assert arrow.names[: len(fields)] == [f["name"].upper() for f in fields]
    sink = io.BytesIO()
    pq.write_table(arrow.empty_table(), sink)
    assert pq.read_schema(pa.BufferReader(sink.getvalue())).equals(arrow)
    spec = load_specs(REPO / "pipelines", ["order_created"])[0]
    objects = EventObjects(spec, schema, SnowflakeSettings())
    create_table = next(s for s in objects.create_statements() if s.startswith("CREATE TABLE"))
    sqlglot.parse_one(create_table, read="snowflake")
    assert [name for name, _ in snowflake_columns(schema)] == arrow.names


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_fields(), st.integers(0, 2**32), st.booleans())
def test_reencoded_records_decode_to_the_same_rows(
    fields: list[dict[str, Any]], seed: int, header_envelope: bool
) -> None:
    """For any schema, rows → records (replay publish) → rows gives the rows back."""
    schema = parse_avro_schema({"type": "record", "name": "E", "version": 1, "fields": fields})
    samples = SampleEvents("e", schema, seed=seed)
    records = []
    for i in range(12):
        key, value = samples.encoded(i)
        headers: list[tuple[str, bytes]] = [("trace", f"t-{i}".encode())]
        if header_envelope:
            event = json.loads(value)
            headers += [(name, str(event[name]).encode()) for name in ("event_id", "created_at")]
            value = json.dumps(event["payload"]).encode()
        records.append(FakeRecord("t", 2, 40 + i, 1_764_230_400_000 + i, key, value, tuple(headers)))
    decoder = BatchDecoder(schema)
    first = decoder.decode(records)
    assert first.rejected == []
    rebuilt = [
        FakeRecord("t", r.partition, r.offset, r.timestamp_ms, r.key, r.value, tuple(r.headers))
        for r in RecordEncoder(schema, raw=False).records(first.table)
    ]
    second = decoder.decode(rebuilt)
    assert second.rejected == []
    assert second.table.equals(first.table)
