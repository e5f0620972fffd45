"""The gateway's HTTP API over an in-memory delivery: answers, records produced, access."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from loader.config.spec import EventSpec, load_specs
from loader.devstack.samples import SampleEvents
from loader.encode import decoder_for
from loader.gateway.outbound import OutboundRecord
from loader.schema import load_avro_schema
from tests.unit.example_specs import write_example_spec
from tests.unit.fakes import FakeRecord
from tests.unit.gateway_fakes import ALL_KEY, ORDERS, FakeDelivery, auth, gateway

pytestmark = pytest.mark.unit

assert ORDERS.schema_path is not None
SAMPLES = SampleEvents("order_created", load_avro_schema(ORDERS.schema_path), seed=5)
EVENTS = [SAMPLES.envelope(i) for i in range(5)]
NDJSON = {"Content-Type": "application/x-ndjson"}


def _rows(spec: EventSpec, records: list[OutboundRecord]) -> Any:
    """What the worker's decoder makes of ``records`` as consumed from the spec's topic."""
    consumed = [
        FakeRecord(spec.kafka.topic, 0, i, r.timestamp_ms, r.key, r.value, r.headers)
        for i, r in enumerate(records)
    ]
    return decoder_for(spec).decode(consumed)


def test_a_json_array_of_envelopes_is_produced_with_the_envelope_in_headers() -> None:
    """Every event of an array is acknowledged with its offset; each record carries the envelope
    in headers, the bare payload as value, and decodes to the posted event in a worker."""
    with gateway() as (client, delivery):
        answer = client.post("/v1/events/order_created", json=EVENTS, headers=auth())
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "accepted": 5,
        "rejected": [],
        "results": [{"index": i, "partition": 0, "offset": i} for i in range(5)],
    }
    records = [record for _, record in delivery.sent]
    for record, event in zip(records, EVENTS, strict=True):
        assert orjson.loads(record.value) == event["payload"]
        headers = dict(record.headers)
        assert headers["event_id"] == event["event_id"].encode()
        assert headers["schema_version"] == b"1"
    decoded = _rows(ORDERS, records)
    assert decoded.rejected == [] and decoded.table.num_rows == 5
    assert decoded.table.column("_EVENT_ID").to_pylist() == [e["event_id"] for e in EVENTS]


def test_a_mixed_ndjson_batch_produces_the_good_and_names_each_bad_one_by_index() -> None:
    """Good events are produced; each bad one is named by its index with the decoder's reason."""
    bad_type = {**EVENTS[1], "payload": {**EVENTS[1]["payload"], "item_count": "three"}}
    lines = [
        orjson.dumps(EVENTS[0]),
        orjson.dumps(bad_type),
        b'{"event_id": "x", "payload": ',
        b"[1, 2]",
        orjson.dumps({**EVENTS[2], "colour": "red"}),
        orjson.dumps(EVENTS[3]),
    ]
    with gateway() as (client, delivery):
        answer = client.post(
            "/v1/events/order_created", content=b"\n".join(lines), headers={**auth(), **NDJSON}
        )
    assert answer.status_code == 200
    body = answer.json()
    assert body["accepted"] == 2
    assert [r["index"] for r in body["results"]] == [0, 5]
    reasons = {r["index"]: r["reason"] for r in body["rejected"]}
    assert sorted(reasons) == [1, 2, 3, 4]
    assert "item_count" in reasons[1]
    assert reasons[2].startswith("malformed JSON")
    assert reasons[3].startswith("not a JSON object")
    assert "unknown envelope field 'colour'" in reasons[4]
    assert len(delivery.sent) == 2


def test_a_batch_with_no_good_event_is_400_with_every_reason() -> None:
    """All rejected: 400, nothing produced, each index with its reason."""
    with gateway() as (client, delivery):
        answer = client.post("/v1/events/order_created", json=[{"payload": {}}, 5], headers=auth())
    assert answer.status_code == 400
    assert [r["index"] for r in answer.json()["rejected"]] == [0, 1]
    assert delivery.sent == []


def test_payloads_get_a_filled_envelope_and_the_keys_name_as_source() -> None:
    """form=payload: each payload gets a new event_id, the receipt time, the event name and the
    key's holder as source; the worker makes rows of them."""
    payloads = [e["payload"] for e in EVENTS[:3]]
    with gateway() as (client, delivery):
        answer = client.post("/v1/events/order_created?form=payload", json=payloads, headers=auth())
    assert answer.status_code == 200, answer.text
    records = [record for _, record in delivery.sent]
    table = _rows(ORDERS, records).table
    assert table.num_rows == 3
    assert len(set(table.column("_EVENT_ID").to_pylist())) == 3
    assert set(table.column("_SOURCE").to_pylist()) == {"orders-app"}
    assert set(table.column("_EVENT_NAME").to_pylist()) == {"order_created"}


def test_the_json_envelope_form_puts_the_whole_event_in_the_value(tmp_path: Path) -> None:
    """kafka.envelope: json: the value is the envelope object with its payload, no headers."""
    write_example_spec(tmp_path, "order_created", kafka__envelope="json")
    [spec] = load_specs(tmp_path)
    with gateway([spec]) as (client, delivery):
        answer = client.post("/v1/events/order_created", json=EVENTS[:2], headers=auth())
    assert answer.status_code == 200
    records = [record for _, record in delivery.sent]
    assert all(r.headers == () for r in records)
    assert orjson.loads(records[0].value) == EVENTS[0]
    assert _rows(spec, records).table.num_rows == 2


def test_a_gzip_body_is_read() -> None:
    """Content-Encoding: gzip is decoded before the events are read."""
    body = gzip.compress(orjson.dumps(EVENTS))
    with gateway() as (client, delivery):
        answer = client.post(
            "/v1/events/order_created",
            content=body,
            headers={**auth(), "Content-Encoding": "gzip", "Content-Type": "application/json"},
        )
    assert answer.status_code == 200 and len(delivery.sent) == 5


def test_records_not_delivered_in_time_get_a_retryable_503_naming_them() -> None:
    """A record the delivery fails: 503 with Retry-After, the failed indexes listed as retryable,
    the others still reported produced."""
    with gateway(delivery=FakeDelivery(fail=[1])) as (client, _):
        answer = client.post("/v1/events/order_created", json=EVENTS[:3], headers=auth())
    assert answer.status_code == 503
    assert answer.headers["Retry-After"]
    body = answer.json()
    assert body["failed"] == [{"index": 1, "reason": "not acknowledged in time", "retryable": True}]
    assert [r["index"] for r in body["results"]] == [0, 2]


def test_async_mode_answers_202_without_offsets() -> None:
    """mode async: 202 once buffered, no offsets in the answer."""
    with gateway(delivery=FakeDelivery(state="buffered"), mode="async") as (client, _):
        answer = client.post("/v1/events/order_created", json=EVENTS[:2], headers=auth())
    assert answer.status_code == 202
    assert answer.json() == {"accepted": 2, "rejected": []}


def test_a_shared_topic_spec_rejects_what_its_match_would_not_take(tmp_path: Path) -> None:
    """On a shared topic, an event named for the sibling is rejected (not_taken), as the worker
    would skip it; one with the spec's name (given or defaulted) is produced."""
    write_example_spec(tmp_path, "a", name="order_created", kafka__match={"event_name": "order_created"})
    write_example_spec(
        tmp_path,
        "b",
        name="order_other",
        snowflake__table="ORDER_OTHER",
        s3__prefix="events/other",
        kafka__match={"event_name": "order_other"},
    )
    specs = {s.name: s for s in load_specs(tmp_path)}
    defaulted = {k: v for k, v in EVENTS[1].items() if k != "event_name"}
    posted = [EVENTS[0], {**EVENTS[2], "event_name": "order_other"}, defaulted]
    with gateway(list(specs.values())) as (client, delivery):
        answer = client.post("/v1/events/order_created", json=posted, headers=auth())
    body = answer.json()
    assert body["accepted"] == 2
    assert [r["index"] for r in body["rejected"]] == [1]
    assert "kafka.match" in body["rejected"][0]["reason"]
    assert [dict(r.headers)[("event_name")] for _, r in delivery.sent] == [b"order_created"] * 2


# -- access and limits ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-key"}, {"X-API-Key": "wrong"}, {"Authorization": "Basic abc"}],
    ids=["none", "wrong-bearer", "wrong-x-api-key", "not-bearer"],
)
def test_a_missing_or_wrong_key_is_401(headers: dict[str, str]) -> None:
    """No key, or one no hash matches: 401 on both APIs, nothing produced."""
    with gateway() as (client, delivery):
        events = client.post("/v1/events/order_created", json=EVENTS, headers=headers)
        proxy = client.post(
            "/topics/orders.order_created",
            json={"records": [{"value": EVENTS[0]}]},
            headers={**headers, "Content-Type": "application/vnd.kafka.json.v2+json"},
        )
    assert events.status_code == 401 and events.headers["WWW-Authenticate"] == "Bearer"
    assert proxy.status_code == 401 and proxy.json()["error_code"] == 40101
    assert delivery.sent == []


def test_the_x_api_key_header_works_too() -> None:
    """X-API-Key: <key> is accepted like a bearer token."""
    with gateway() as (client, delivery):
        answer = client.post("/v1/events/order_created", json=EVENTS[:1], headers={"X-API-Key": ALL_KEY})
    assert answer.status_code == 200 and len(delivery.sent) == 1


def test_a_key_posting_an_event_it_may_not_is_403(tmp_path: Path) -> None:
    """A key allowed only order_created gets 403 for store_updated; the '*' key may post it."""
    store = next(s for s in load_specs(Path(__file__).parents[2] / "pipelines") if s.name == "store_updated")
    event = {"event_id": "e", "created_at": "2026-11-27T08:00:00Z", "payload": {}}
    with gateway([ORDERS, store]) as (client, delivery):
        forbidden = client.post("/v1/events/store_updated", json=[event], headers=auth())
        proxy = client.post(
            f"/topics/{store.kafka.topic}",
            json={"records": [{"value": event}]},
            headers={**auth(), "Content-Type": "application/vnd.kafka.json.v2+json"},
        )
        allowed = client.post("/v1/events/store_updated", json=[event], headers=auth(ALL_KEY))
    assert forbidden.status_code == 403 and "store_updated" in forbidden.json()["error"]
    assert proxy.status_code == 403 and proxy.json()["error_code"] == 40301
    # Past access, the payload's verdict decides: the empty payload misses required fields.
    assert allowed.status_code == 400 and "missing required field" in allowed.json()["rejected"][0]["reason"]
    assert delivery.sent == []


def test_an_unknown_event_is_404_and_an_unknown_topic_40401() -> None:
    """An event type no spec defines: 404 with an error; a topic none reads: REST Proxy's 40401."""
    with gateway() as (client, _):
        events = client.post("/v1/events/no_such_event", json=EVENTS, headers=auth())
        proxy = client.post(
            "/topics/no.such.topic",
            json={"records": [{"value": EVENTS[0]}]},
            headers={**auth(), "Content-Type": "application/vnd.kafka.json.v2+json"},
        )
    assert events.status_code == 404 and "no_such_event" in events.json()["error"]
    assert proxy.status_code == 404 and proxy.json() == {"error_code": 40401, "message": "Topic not found"}


def test_a_body_over_the_size_limit_is_413_before_and_after_gzip() -> None:
    """A body larger than max_body_bytes, or one whose gzip inflates past it, is 413."""
    big = orjson.dumps([EVENTS[0]] * 40)
    bomb = gzip.compress(b"[" + b" " * 1_000_000 + b"]")
    with gateway(max_body_bytes=4096) as (client, delivery):
        plain = client.post("/v1/events/order_created", content=big, headers=auth())
        inflated = client.post(
            "/v1/events/order_created", content=bomb, headers={**auth(), "Content-Encoding": "gzip"}
        )
        proxy = client.post(
            "/topics/orders.order_created",
            content=orjson.dumps({"records": [{"value": EVENTS[0]}] * 40}),
            headers={**auth(), "Content-Type": "application/vnd.kafka.json.v2+json"},
        )
    assert len(bomb) < 4096
    assert plain.status_code == 413 and "max_body_bytes" in plain.json()["error"]
    assert inflated.status_code == 413
    assert proxy.status_code == 413 and proxy.json()["error_code"] == 41301
    assert delivery.sent == []


def test_a_batch_over_the_record_limit_is_413() -> None:
    """More events than max_batch_records: 413, nothing produced."""
    with gateway(max_batch_records=3) as (client, delivery):
        answer = client.post("/v1/events/order_created", json=EVENTS[:4], headers=auth())
    assert answer.status_code == 413 and "max_batch_records" in answer.json()["error"]
    assert delivery.sent == []


def test_an_unsupported_content_type_or_registry_format_is_415(tmp_path: Path) -> None:
    """A body type the API does not read is 415; so is an avro-registry event (a registry
    serializer must produce it)."""
    write_example_spec(tmp_path, "order_created", schema__format="avro-registry")
    [avro] = load_specs(tmp_path)
    with gateway() as (client, _):
        xml = client.post(
            "/v1/events/order_created", content=b"<a/>", headers={**auth(), "Content-Type": "text/xml"}
        )
        binary = client.post(
            "/topics/orders.order_created",
            json={"records": [{"value": "AAEC"}]},
            headers={**auth(), "Content-Type": "application/vnd.kafka.binary.v2+json"},
        )
    with gateway([avro]) as (client, _):
        registry = client.post("/v1/events/order_created", json=EVENTS, headers=auth())
    assert xml.status_code == 415
    assert binary.status_code == 415 and binary.json()["error_code"] == 41501
    assert registry.status_code == 415 and "schema-registry serializer" in registry.json()["error"]


def test_a_malformed_array_body_is_400() -> None:
    """A JSON array that does not parse cannot be split by index: 400 for the whole body."""
    with gateway() as (client, delivery):
        answer = client.post(
            "/v1/events/order_created",
            content=b'[{"a": 1},',
            headers={**auth(), "Content-Type": "application/json"},
        )
    assert answer.status_code == 400 and answer.json()["error"].startswith("malformed JSON")
    assert delivery.sent == []


def test_cors_preflight_is_answered_for_configured_origins_only() -> None:
    """A configured origin gets CORS headers on a preflight; another does not."""
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    with gateway(cors_origins=["https://app.example.com"]) as (client, _):
        good = client.options(
            "/v1/events/order_created", headers={**preflight, "Origin": "https://app.example.com"}
        )
        bad = client.options(
            "/v1/events/order_created", headers={**preflight, "Origin": "https://evil.example.com"}
        )
    assert good.status_code == 200
    assert good.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "access-control-allow-origin" not in bad.headers


# -- REST Proxy v2 -------------------------------------------------------------------------------


def test_rest_proxy_records_get_offsets_or_per_record_errors_in_confluents_shape() -> None:
    """A REST Proxy v2 produce answers key/value schema ids and one offset entry per record:
    partition and offset when produced, error_code 1 and a reason when rejected; keys are JSON
    bytes; partitions asked for are passed on."""
    records = [
        {"key": "k-1", "value": EVENTS[0]},
        {"value": {**EVENTS[1], "payload": {"order_id": 5}}},
        {"key": {"id": 7}, "value": EVENTS[2], "partition": 3, "headers": {"trace": "t-1"}},
    ]
    with gateway() as (client, delivery):
        answer = client.post(
            "/topics/orders.order_created",
            content=json.dumps({"records": records}),
            headers={**auth(), "Content-Type": "application/vnd.kafka.json.v2+json"},
        )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/vnd.kafka.v2+json")
    body = answer.json()
    assert body["key_schema_id"] is None and body["value_schema_id"] is None
    first, second, third = body["offsets"]
    assert first == {"partition": 0, "offset": 0, "error_code": None, "error": None}
    assert second["error_code"] == 1 and second["partition"] is None and "order_id" in second["error"]
    assert third == {"partition": 0, "offset": 1, "error_code": None, "error": None}
    sent = [record for _, record in delivery.sent]
    assert sent[0].key == b'"k-1"' and sent[1].key == b'{"id":7}'
    assert sent[1].partition == 3 and ("trace", b"t-1") in sent[1].headers


def test_rest_proxy_failed_delivery_is_error_code_2() -> None:
    """A record the delivery fails is retriable for the REST Proxy client: error_code 2."""
    with gateway(delivery=FakeDelivery(fail=[0])) as (client, _):
        answer = client.post(
            "/topics/orders.order_created",
            json={"records": [{"value": EVENTS[0]}, {"value": EVENTS[1]}]},
            headers={**auth(), "Content-Type": "application/vnd.kafka.json.v2+json"},
        )
    offsets = answer.json()["offsets"]
    assert offsets[0]["error_code"] == 2 and offsets[1]["error_code"] is None


def test_rest_proxy_on_a_shared_topic_routes_each_record_to_the_spec_that_takes_it(tmp_path: Path) -> None:
    """Each record goes to the spec whose match takes it; one no spec takes is error_code 1."""
    write_example_spec(tmp_path, "a", name="order_created", kafka__match={"event_name": "order_created"})
    write_example_spec(
        tmp_path,
        "b",
        name="order_other",
        snowflake__table="ORDER_OTHER",
        s3__prefix="events/other",
        kafka__match={"event_name": "order_other"},
    )
    specs = load_specs(tmp_path)
    records = [
        {"value": {**EVENTS[0], "event_name": "order_other"}},
        {"value": EVENTS[1]},
        {"value": {**EVENTS[2], "event_name": "nobody"}},
    ]
    with gateway(specs) as (client, delivery):
        answer = client.post(
            "/topics/orders.order_created",
            json={"records": records},
            headers={
                "Authorization": f"Bearer {ALL_KEY}",
                "Content-Type": "application/vnd.kafka.json.v2+json",
            },
        )
    offsets = answer.json()["offsets"]
    assert [o["error_code"] for o in offsets] == [None, None, 1]
    assert sorted(name for name, _ in delivery.sent) == ["order_created", "order_other"]


def test_rest_proxy_body_that_is_not_records_is_42201() -> None:
    """A body without a records list is 422 with error_code 42201."""
    with gateway() as (client, _):
        answer = client.post(
            "/topics/orders.order_created",
            json={"value": EVENTS[0]},
            headers={**auth(), "Content-Type": "application/vnd.kafka.json.v2+json"},
        )
    assert answer.status_code == 422 and answer.json()["error_code"] == 42201


_DEEP = b'{"a":' * 253 + b"1" + b"}" * 253
HOSTILE_BODIES = {
    "brackets": b"[" * 100_000,
    "deep-array-element": b"[" + _DEEP + b"]",
    "deep-ndjson-line": _DEEP,
    "deep-repeated-key": b'[{"a":1,"a":' + _DEEP + b"}]",
    "not-utf8": b"\xff\xfe",
    "nul": b"\x00" * 10,
    "huge-number": b"[1e999999]",
    "lone-surrogate": b'{"event_id":"\\ud800","created_at":"2026-01-01T00:00:00Z","payload":{}}',
    "bool-version": b'{"event_id":"a","created_at":"2026-01-01T00:00:00Z","payload":{},'
    b'"schema_version":true}',
    "truncated-gzip": gzip.compress(b"[{}]")[:-3],
}


@pytest.mark.parametrize("body", HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
@pytest.mark.parametrize("form", ["envelope", "payload"])
def test_hostile_bodies_get_a_4xx_answer_never_a_server_error(body: bytes, form: str) -> None:
    """Deep nesting (past orjson's own depth), bad bytes, huge numbers and broken gzip are
    answered 400 or 413 with reasons, on both forms; nothing is produced."""
    headers = {**auth(), "Content-Encoding": "gzip"} if body.startswith(b"\x1f\x8b") else auth()
    with gateway() as (client, delivery):
        answer = client.post(f"/v1/events/order_created?form={form}", content=body, headers=headers)
    assert answer.status_code in (400, 413), answer.text
    assert delivery.sent == []
