"""No record stops a partition: odd keys, header keys, values and timestamps end as rows or
dead letters, from fetched record to the bytes and keys of the files."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiokafka import TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loader.checkpoint.committer import Generation
from loader.config.spec import EventSpec, load_specs
from loader.devstack.samples import SampleEvents
from loader.encode.decode import BatchDecoder, Decoder
from loader.encode.raw import RawDecoder
from loader.schema import load_avro_schema
from loader.schema.types import KAFKA_TIMESTAMP_RANGE_MS
from loader.store.layout import parse_key
from loader.worker.partition import PartitionState, Roll
from loader.worker.rolling import split_at_boundaries
from tests.unit.fakes import FakeRecord

pytestmark = pytest.mark.unit

REPO = Path(__file__).parents[2]
SPECS = {s.name: s for s in load_specs(REPO / "pipelines")}
SPEC = SPECS["order_created"]
assert SPEC.schema_path is not None
SCHEMA = load_avro_schema(SPEC.schema_path)
SAMPLES = SampleEvents("order_created", SCHEMA, seed=11)
VALID = [SAMPLES.encoded(i)[1] for i in range(20)]
HOUR = 3_600_000
NOW = 1_796_000_000_000  # 2026-11-30
YEAR_MINUS_1199_MS = -100_000_000_000_000
INT64 = (-(2**63), 2**63 - 1)
TP = TopicPartition("t", 0)


def _spec(max_records: int = 1_000_000) -> EventSpec:
    return SPEC.model_copy(update={"rolling": SPEC.rolling.model_copy(update={"max_records": max_records})})


def _state(spec: EventSpec, decoder: Decoder, spool: Path) -> PartitionState:
    return PartitionState(
        TP,
        spec,
        decoder,
        next_offset=None,
        pending=None,
        generation=Generation(1, "m"),
        spool_dir=spool,
        row_group_records=lambda: 5,
    )


def _run(
    records: Sequence[FakeRecord], chunks: Sequence[int], spec: EventSpec, decoder: Decoder, spool: Path
) -> list[Roll]:
    """Ingest ``records`` in batches of the given sizes (cycled), then close the open file."""
    state = _state(spec, decoder, spool)
    rolls: list[Roll] = []
    start, index = 0, 0
    while start < len(records):
        size = chunks[index % len(chunks)]
        rolls += state.ingest(records[start : start + size], now=0.0)
        start, index = start + size, index + 1
    state.close_into(rolls)
    return rolls


def _read(path: Path | None) -> pa.Table | None:
    return None if path is None else pq.read_table(path)


def _record(offset: int, timestamp: int, headers: tuple[tuple[str, bytes | None], ...] = ()) -> FakeRecord:
    return FakeRecord("t", 0, offset, timestamp, None, VALID[offset % 20], headers)


@pytest.mark.parametrize("decoder", [BatchDecoder(SCHEMA), RawDecoder("order_created")], ids=["typed", "raw"])
def test_a_header_key_that_is_not_utf8_is_a_dead_letter_with_its_bytes(
    tmp_path: Path, decoder: Decoder
) -> None:
    """The record with the bad key is a dead letter keeping the key's exact bytes; its batch loads."""
    bad_key = b"\xff\xfe".decode("utf-8", "surrogateescape")  # as loader.consume.records reads it
    records = [
        _record(0, NOW),
        _record(1, NOW, headers=(("trace", b"1"), (bad_key, b"v"), ("n", None))),
        _record(2, NOW, headers=(("trace", b"2"),)),
    ]
    [roll] = _run(records, [3], _spec(), decoder, tmp_path)
    data, dead = _read(roll.closed.data_path), _read(roll.closed.dead_letter_path)
    assert data is not None and dead is not None
    assert data.column("_OFFSET").to_pylist() == [0, 2]
    [letter] = dead.to_pylist()
    assert letter["_OFFSET"] == 1
    assert letter["_REASON"] == "header key b'\\xff\\xfe' is not UTF-8"
    assert letter["_HEADERS"] == [
        {"key": "trace", "key_bytes": None, "value": b"1"},
        {"key": "\ufffd\ufffd", "key_bytes": b"\xff\xfe", "value": b"v"},
        {"key": "n", "key_bytes": None, "value": None},
    ]


@pytest.mark.parametrize("decoder", [BatchDecoder(SCHEMA), RawDecoder("order_created")], ids=["typed", "raw"])
def test_an_envelope_header_that_is_not_utf8_is_a_dead_letter_with_its_bytes(
    tmp_path: Path, decoder: Decoder
) -> None:
    """A header envelope whose event_id is not UTF-8 makes no row: a dead letter keeping the
    header's exact bytes; the same payload under a UTF-8 event_id is a row."""
    payload = json.dumps(json.loads(VALID[1])["payload"]).encode()
    created = ("created_at", b"2026-11-27T08:00:00Z")
    records = [
        _record(0, NOW),
        FakeRecord("t", 0, 1, NOW, None, payload, (("event_id", b"e-\xff"), created)),
        FakeRecord("t", 0, 2, NOW, None, payload, (("event_id", b"e-2"), created)),
    ]
    [roll] = _run(records, [3], _spec(), decoder, tmp_path)
    data, dead = _read(roll.closed.data_path), _read(roll.closed.dead_letter_path)
    assert data is not None and dead is not None
    assert data.column("_OFFSET").to_pylist() == [0, 2]
    [letter] = dead.to_pylist()
    assert letter["_REASON"] == "envelope header 'event_id' is not UTF-8: b'e-\\xff'"
    assert letter["_VALUE"] == payload
    assert letter["_HEADERS"][0] == {"key": "event_id", "key_bytes": None, "value": b"e-\xff"}


@pytest.mark.parametrize(
    ("timestamp", "reason"),
    [
        (-1, "the record has no Kafka timestamp (-1)"),
        (-2, "Kafka timestamp -2 ms is outside"),
        (YEAR_MINUS_1199_MS, "Kafka timestamp -100000000000000 ms is outside"),
        (KAFKA_TIMESTAMP_RANGE_MS[1] + 1, "ms is outside 1970-01-01..9999-12-31"),
        (INT64[0], "outside"),
        (INT64[1], "outside"),
    ],
)
def test_a_timestamp_no_row_can_hold_is_a_dead_letter(tmp_path: Path, timestamp: int, reason: str) -> None:
    """Before 1970 (-1 included) or after 9999: a dead letter with its raw timestamp; its file's
    key is a real date, and the records after it are rows in their own hour."""
    records = [_record(0, timestamp), _record(1, NOW), _record(2, NOW + 1)]
    rolls = _run(records, [3], _spec(), BatchDecoder(SCHEMA), tmp_path)
    assert [r.pending.key.split("/data/")[1][:24] for r in rolls] == ["dt=1970-01-01/hour=00/t/", _hour(NOW)]
    first, second = rolls
    assert first.closed.data_path is None
    dead = _read(first.closed.dead_letter_path)
    assert dead is not None
    assert dead.column("_KAFKA_TIMESTAMP_MS").to_pylist() == [timestamp]
    assert dead.column("_KAFKA_TIMESTAMP").to_pylist() == [None]
    assert reason in dead.column("_REASON")[0].as_py()
    data = _read(second.closed.data_path)
    assert data is not None
    assert data.column("_OFFSET").to_pylist() == [1, 2]


def test_a_timestamp_no_row_can_hold_joins_the_open_file(tmp_path: Path) -> None:
    """A record without a usable timestamp in the middle of an hour neither ends nor moves the file."""
    records = [_record(0, NOW), _record(1, -1), _record(2, YEAR_MINUS_1199_MS), _record(3, NOW + 1)]
    [roll] = _run(records, [4], _spec(), BatchDecoder(SCHEMA), tmp_path)
    assert _hour(NOW) in roll.pending.key
    assert (roll.closed.rows, roll.closed.dead_letters) == (2, 2)


def _hour(timestamp_ms: int) -> str:
    moment = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
    return f"dt={moment:%Y-%m-%d}/hour={moment:%H}/t/"


def test_a_far_future_record_does_not_drag_later_records_into_its_folder() -> None:
    """One record from a clock centuries ahead gets a file of its own; the next records go back."""
    far = 32_503_680_000_000  # 3000-01-01
    records = [
        _record(i, ts) for i, ts in enumerate([10 * HOUR, 10 * HOUR + 1, far, 10 * HOUR + 2, 11 * HOUR])
    ]
    segments = split_at_boundaries(_spec(), 0, None, records)
    assert [([r.offset for r in s], period, ends) for s, period, ends in segments] == [
        ([0, 1], 10, True),
        ([2], far // HOUR, True),
        ([3], 10, True),
        ([4], 11, False),
    ]


def test_a_record_late_by_less_than_a_day_stays_in_the_open_file() -> None:
    """Late records within a day of the open file's hour join it, as before (no flapping)."""
    records = [_record(i, ts) for i, ts in enumerate([30 * HOUR, 30 * HOUR - 23 * HOUR, 30 * HOUR + 5])]
    segments = split_at_boundaries(_spec(), 0, None, records)
    assert [([r.offset for r in s], period, ends) for s, period, ends in segments] == [([0, 1, 2], 30, False)]


def test_a_record_late_by_more_than_a_day_starts_a_new_file() -> None:
    """A record more than a day before the open file's hour ends it and opens its own hour."""
    records = [_record(i, ts) for i, ts in enumerate([30 * HOUR, 30 * HOUR - 25 * HOUR])]
    segments = split_at_boundaries(_spec(), 0, None, records)
    assert [([r.offset for r in s], period, ends) for s, period, ends in segments] == [
        ([0], 30, True),
        ([1], 5, False),
    ]


_TIMESTAMPS = st.one_of(
    st.integers(NOW - 30 * HOUR, NOW + 30 * HOUR),
    st.integers(*INT64),
    st.sampled_from([-1, 0, -2, KAFKA_TIMESTAMP_RANGE_MS[1], KAFKA_TIMESTAMP_RANGE_MS[1] + 1, *INT64]),
)
_HEADER_KEYS = st.one_of(
    st.sampled_from(["event_id", "created_at", "trace"]),
    st.binary(max_size=6).map(lambda b: b.decode("utf-8", "surrogateescape")),
)
_RECORD = st.tuples(
    _TIMESTAMPS,
    st.one_of(st.none(), st.binary(max_size=8)),
    st.one_of(st.sampled_from(VALID), st.none(), st.binary(max_size=40)),
    st.lists(st.tuples(_HEADER_KEYS, st.one_of(st.none(), st.binary(max_size=6))), max_size=3),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(_RECORD, min_size=1, max_size=25),
    st.lists(st.integers(1, 7), min_size=1, max_size=4),
    st.integers(1, 12),
    st.booleans(),
)
def test_every_record_is_one_row_or_one_dead_letter(
    drawn: list[tuple[int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]],
    chunks: list[int],
    max_records: int,
    raw: bool,
) -> None:
    """From fetched record to file bytes: every offset is in exactly one file, as one row or one
    dead letter keeping its bytes; keys are real dates; the same records give the same files
    however they were batched."""
    records = [
        FakeRecord("t", 0, 100 + i, ts, key, value, tuple(headers))
        for i, (ts, key, value, headers) in enumerate(drawn)
    ]
    decoder: Decoder = RawDecoder("order_created") if raw else BatchDecoder(SCHEMA)
    spec = _spec(max_records)
    with tempfile.TemporaryDirectory() as spool:
        rolls = _run(records, chunks, spec, decoder, Path(spool))
        once = _run(records, [len(records)], spec, decoder, Path(spool))
        assert [_digests(r) for r in rolls] == [_digests(r) for r in once]
        covered: list[int] = []
        seen: list[int] = []
        for roll in rolls:
            first, last = roll.closed.covered.first_offset, roll.closed.covered.last_offset
            covered += range(first, last + 1)
            for key in (roll.pending.key, roll.pending.dlq):
                assert parse_key(key) is not None, key
            data, dead = _read(roll.closed.data_path), _read(roll.closed.dead_letter_path)
            rows = [] if data is None else data.column("_OFFSET").to_pylist()
            letters = [] if dead is None else dead.to_pylist()
            assert (len(rows), len(letters)) == (roll.closed.rows, roll.closed.dead_letters)
            if data is not None:
                data.column("_KAFKA_TIMESTAMP").to_pylist()  # every row's timestamp is a datetime
            for letter in letters:
                sent = records[letter["_OFFSET"] - 100]
                assert letter["_REASON"]
                assert (letter["_KEY"], letter["_VALUE"]) == (sent.key, sent.value)
                assert [h["key_bytes"] or h["key"].encode() for h in letter["_HEADERS"]] == [
                    k.encode("utf-8", "surrogateescape") for k, _ in sent.headers
                ]
                assert letter["_KAFKA_TIMESTAMP_MS"] == sent.timestamp
            seen += rows + [letter["_OFFSET"] for letter in letters]
            roll.closed.discard()
        for roll in once:
            roll.closed.discard()
    assert covered == [r.offset for r in records]
    assert sorted(seen) == [r.offset for r in records]


def _digests(roll: Roll) -> tuple[str, str, str | None, str | None]:
    def digest(path: Path | None) -> str | None:
        return None if path is None else hashlib.sha256(path.read_bytes()).hexdigest()

    return (
        roll.pending.key,
        roll.pending.dlq,
        digest(roll.closed.data_path),
        digest(roll.closed.dead_letter_path),
    )
