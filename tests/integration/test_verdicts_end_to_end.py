"""One verdict per record (issue 13, point 5), end to end: hostile records, each sent on one
line and pretty-printed among good records, through Kafka and a real worker to S3."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from loader.consume.kafka import ensure_topic
from loader.devstack import DevStack
from loader.store.s3 import S3Store
from loader.worker.worker import StreamWorker
from tests.integration.helpers import Message, make_spec, produce, read_files, sample_values
from tests.integration.workers import run_worker_until

pytestmark = pytest.mark.integration

DUPLICATE = "duplicate key 'city': a key may appear once per object"
DEEP = "nested deeper than 64 levels of objects and arrays (max_json_depth)"


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def test_hostile_records_get_one_verdict_whatever_their_layout(
    dev_stack: DevStack, unique_name: Callable[..., str]
) -> None:
    """NaN, a location without lng, a repeated key, a non-UTF-8 event_id header, a header-enveloped
    value that is not one object and a 3,000-deep unknown field are dead letters with their
    reasons, on one line and pretty-printed; the good records around them are rows."""
    settings = dev_stack.settings
    spec = make_spec(
        unique_name("verdicts", sep="_"), base="store_updated", bucket="it-verdicts", partitions=1
    )
    asyncio.run(ensure_topic(spec, settings.kafka))
    store = S3Store(settings.aws, spec.s3.bucket)
    store.create_bucket()

    event = json.loads(sample_values(spec, 1, seed=3)[0][1])
    payload = {**event["payload"], "rating": 4.5, "location": {"lat": 39.7, "lng": -104.9}}

    def value(**changes: Any) -> bytes:
        return json.dumps({**event, "payload": {**payload, **changes}}).encode()

    headers = [("event_id", b"e-h"), ("created_at", event["created_at"].encode())]
    hostile: dict[str, tuple[bytes, list[tuple[str, bytes]], str]] = {
        "nan": (value(rating=1.25).replace(b"1.25", b"NaN"), [], "NaN is not JSON"),
        "no-lng": (value(location={"lat": 1.0}), [], "missing required field 'location.lng'"),
        "repeated": (value(city="X").replace(b'"city": "X"', b'"city": "X", "city": "Y"'), [], DUPLICATE),
        "header-utf8": (
            json.dumps(payload).encode(),
            [("event_id", b"e-\xff\xfe"), headers[1]],
            "envelope header 'event_id' is not UTF-8",
        ),
        "header-not-object": (
            json.dumps(payload).encode() + b', "source": "x"',
            headers,
            "not a JSON object",
        ),
        "deep": (value(deep="D").replace(b'"D"', b"[" * 3000 + b"1" + b"]" * 3000), [], DEEP),
    }
    good = {
        "plain": (value(), []),
        "deep-62": (value(deep=_deep(62)), []),
        "header": (json.dumps(payload).encode(), headers),
    }
    messages: list[Message] = []
    for kind, (sent, sent_headers) in good.items():
        messages.append((f"good-{kind}".encode(), sent, sent_headers))
    for kind, (sent, sent_headers, _) in hostile.items():
        messages.append((f"bad-{kind}".encode(), sent, sent_headers))
        messages.append((f"good-{kind}".encode(), value(), []))
        pretty = sent.replace(b", ", b",\n  ").replace(b": {", b": {\n    ")
        messages.append((f"bad-{kind}-pretty".encode(), pretty, sent_headers))
    produced = produce(settings, spec, messages)

    worker = StreamWorker(spec, settings)
    run_worker_until(worker, lambda: worker.stats.records_read >= produced)

    dead = [row for table in read_files(store, spec.dead_letter_prefix).values() for row in table.to_pylist()]
    rows = [row for table in read_files(store, spec.data_prefix).values() for row in table.to_pylist()]
    reasons = {row["_KEY"].decode(): row["_REASON"] for row in dead}
    assert sorted(reasons) == sorted(f"bad-{kind}{form}" for kind in hostile for form in ("", "-pretty"))
    for kind, (_, _, reason) in hostile.items():
        assert reasons[f"bad-{kind}"].startswith(reason), (kind, reasons[f"bad-{kind}"])
        assert reasons[f"bad-{kind}-pretty"].startswith(reason), (kind, reasons[f"bad-{kind}-pretty"])
    assert sorted(row["_KEY"].decode() for row in rows) == sorted(
        f"good-{kind}" for kind in [*good, *hostile]
    )
    assert len(rows) + len(dead) == produced
