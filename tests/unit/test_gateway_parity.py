"""Decoder parity: what the gateway accepts, the worker's decoder turns into a row, on the
corpus of broken records the events tests use; what it rejects gets a reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loader.config.spec import EventSpec, load_specs
from loader.devstack.samples import SampleEvents
from loader.encode import decoder_for
from loader.encode.avro_registry import AvroRegistryDecoder
from loader.encode.protobuf_registry import ProtobufRegistryDecoder
from loader.schema import load_avro_schema
from tests.integration.test_events_end_to_end import _broken  # the events tests' corpus
from tests.integration.test_pipeline import BROKEN
from tests.unit.example_specs import write_example_spec
from tests.unit.fakes import FakeRecord
from tests.unit.gateway_fakes import ORDERS, auth, gateway

pytestmark = pytest.mark.unit

assert ORDERS.schema_path is not None
SAMPLES = SampleEvents("order_created", load_avro_schema(ORDERS.schema_path), seed=7)
VALID = SAMPLES.encoded(0)[1]
_EVENT = json.loads(VALID)


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


HOSTILE = {
    "nan": VALID.replace(b'"item_count":', b'"item_count":NaN,"x":'),
    "duplicate": VALID.replace(b'"currency":', b'"currency":"EUR","currency":'),
    "deep_unknown": json.dumps({**_EVENT, "payload": {**_EVENT["payload"], "x": _deep(80)}}).encode(),
    "lone_surrogate": VALID.replace(b'"currency":"', b'"currency":"\\ud800'),
    "huge_int": VALID.replace(b'"item_count":', b'"item_count":123456789012345678901234567890,"y":'),
    "float_count": VALID.replace(b'"item_count":', b'"item_count":2.5,"z":'),
    "bad_created_at": json.dumps({**_EVENT, "created_at": "yesterday"}).encode(),
    "numeric_event_id": json.dumps({**_EVENT, "event_id": 17}).encode(),
    "negative_version": json.dumps({**_EVENT, "schema_version": -1}).encode(),
    "valid": VALID,
}
STRICTER = {"negative_version"}
"""Rows of the worker as sent that the gateway refuses: a header holds schema_version in
decimal digits, so a negative one could not travel in the header form (refused in both)."""
CORPUS = {
    **{name: value for name, value in _broken(VALID).items() if value},
    **{f"pipeline_{i}": value for i, value in enumerate(BROKEN) if value},
    **HOSTILE,
}


def _worker_rows(spec: EventSpec, value: bytes, headers: tuple[tuple[str, bytes], ...] = ()) -> int:
    """Rows the worker's decoder makes of one consumed record."""
    record = FakeRecord(spec.kafka.topic, 0, 0, 1_796_000_000_000, None, value, headers)
    decoded = decoder_for(spec).decode([record])
    return int(decoded.table.num_rows)


def _json_envelope_spec(tmp_path: Path) -> EventSpec:
    write_example_spec(tmp_path, "order_created", kafka__envelope="json")
    [spec] = load_specs(tmp_path)
    return spec


@pytest.mark.parametrize("form", ["headers", "json"])
def test_every_record_the_gateway_accepts_is_a_row_and_every_reject_has_a_reason(
    form: str, tmp_path: Path
) -> None:
    """Each corpus record posted alone: accepted ones decode to one row in the worker (as
    produced: value and headers), rejected ones carry a reason; and the gateway is not stricter
    than the worker here: a record the worker makes a row of as sent is accepted."""
    spec = ORDERS if form == "headers" else _json_envelope_spec(tmp_path)
    verdicts: dict[str, bool] = {}
    with gateway([spec]) as (client, delivery):
        for name, value in CORPUS.items():
            before = len(delivery.sent)
            answer = client.post(
                "/v1/events/order_created",
                content=value,
                headers={**auth(), "Content-Type": "application/x-ndjson"},
            )
            body = answer.json()
            if answer.status_code == 200:
                [(_, record)] = delivery.sent[before:]
                assert _worker_rows(spec, record.value, record.headers) == 1, name
                verdicts[name] = True
            else:
                assert answer.status_code == 400, (name, answer.text)
                assert len(delivery.sent) == before, name
                reasons = [r["reason"] for r in body.get("rejected", [])] or [body.get("error")]
                assert all(reasons), (name, body)
                verdicts[name] = False
    # The worker's verdict on the record as a producer would send it (a JSON envelope).
    worker = {
        name: _worker_rows(ORDERS, value) == 1 and name not in STRICTER for name, value in CORPUS.items()
    }
    assert verdicts == worker
    assert verdicts["valid"] and not verdicts["malformed"]


def test_the_corpus_in_one_batch_gets_the_same_verdicts_by_index() -> None:
    """Posted together as NDJSON, each record gets the verdict it got alone, by its index."""
    names = [n for n, v in CORPUS.items() if b"\n" not in v]
    body = b"\n".join(CORPUS[n] for n in names)
    with gateway() as (client, delivery):
        answer = client.post(
            "/v1/events/order_created",
            content=body,
            headers={**auth(), "Content-Type": "application/x-ndjson"},
        )
    result = answer.json()
    accepted = {r["index"] for r in result["results"]}
    rejected = {r["index"] for r in result["rejected"]}
    assert accepted | rejected == set(range(len(names))) and not accepted & rejected
    rows = {n for n in names if _worker_rows(ORDERS, CORPUS[n]) == 1}
    assert {names[i] for i in accepted} == rows - STRICTER
    assert len(delivery.sent) == len(accepted)
    assert all(_worker_rows(ORDERS, r.value, r.headers) == 1 for _, r in delivery.sent)


@pytest.mark.parametrize("mode", ["typed", "raw"])
def test_the_check_rejects_what_decoding_rejects(mode: str, tmp_path: Path) -> None:
    """The gateway's check (``rejects``, which builds no rows) names the same records, with the
    same reasons, as the worker's ``decode`` of the same mixed batch, for typed and raw specs."""
    if mode == "raw":
        write_example_spec(tmp_path, "order_created", schema__mode="raw", schema__path=None)
        [spec] = load_specs(tmp_path)
    else:
        spec = ORDERS
    records = [
        FakeRecord(spec.kafka.topic, 0, offset, 1_796_000_000_000, None, value)
        for offset, value in enumerate(v for v in CORPUS.values() if b"\n" not in v)
    ]
    decoder = decoder_for(spec)
    assert not isinstance(decoder, AvroRegistryDecoder | ProtobufRegistryDecoder)
    rejected = decoder.decode(records).rejected
    assert rejected and len(rejected) < len(records)  # a mixed batch: both paths ran
    assert [(r.record.offset, r.reason) for r in decoder.rejects(records)] == [
        (r.record.offset, r.reason) for r in rejected
    ]
