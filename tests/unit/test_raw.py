"""Raw events: envelope columns typed, payload kept whole as JSON, bad records rejected."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from loader.devstack.samples import SampleEvents
from loader.encode.raw import RawDecoder
from loader.schema.model import raw_schema
from tests.unit.fakes import FakeRecord

pytestmark = pytest.mark.unit


def test_payload_is_kept_whole_as_json() -> None:
    """A raw event's payload lands as one JSON column; the envelope is typed."""
    samples = SampleEvents("app_click", raw_schema("app_click"), seed=2)
    values = [samples.encoded(i)[1] for i in range(30)]
    batch = RawDecoder("app_click").decode([FakeRecord("c", 1, i, 5, b"k", v) for i, v in enumerate(values)])
    assert batch.rejected == []
    assert batch.table.schema.field("PAYLOAD").type == pa.json_()
    row = batch.table.slice(4, 1).to_pylist()[0]
    source = json.loads(values[4])
    assert json.loads(row["PAYLOAD"]) == source["payload"]
    assert row["_EVENT_ID"] == source["event_id"]
    assert row["_CREATED_AT"].isoformat().startswith(source["created_at"][:19])


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b'{"event_id":"e","created_at":"2026-11-27T08:00:00Z"}', "missing payload"),
        (b'{"created_at":"2026-11-27T08:00:00Z","payload":{}}', "'event_id'"),
        (b'{"event_id":"e","created_at":"yesterday","payload":{}}', "not an ISO-8601 timestamp"),
        (b'{"event_id":"e","created_at":"2026-11-27","payload":{},"schema_version":"2"}', "schema_version"),
        (b"{bad}", "malformed JSON"),
        (b"{bad", "not a JSON object"),
        (b"null", "not a JSON object"),
        (None, "tombstone"),
    ],
)
def test_bad_raw_records_are_rejected_with_reasons(value: bytes | None, reason: str) -> None:
    """Each broken raw record becomes a reject saying why; good neighbours still load."""
    good = b'{"event_id":"ok","created_at":"2026-11-27T08:00:00Z","payload":{"a":[1,2]}}'
    batch = RawDecoder("clicks").decode(
        [FakeRecord("c", 0, 0, 0, None, value), FakeRecord("c", 0, 1, 0, None, good)]
    )
    assert [r.record.offset for r in batch.rejected] == [0]
    assert reason in batch.rejected[0].reason
    assert batch.table.column("_OFFSET").to_pylist() == [1]


def test_header_envelope_for_raw_events() -> None:
    """A raw payload may come bare, with the envelope in headers."""
    headers = (("event_id", b"h1"), ("created_at", b"2026-11-27T08:00:00Z"), ("source", b"ios"))
    batch = RawDecoder("clicks").decode([FakeRecord("c", 0, 0, 0, None, b'{"screen":"home"}', headers)])
    row = batch.table.to_pylist()[0]
    assert (row["_EVENT_ID"], row["_SOURCE"], json.loads(row["PAYLOAD"])) == ("h1", "ios", {"screen": "home"})
