"""Several event types on one topic: the ``kafka.match`` model, which records each spec takes,
and a partition's accounting (records read = rows + dead letters + skipped)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from aiokafka import TopicPartition
from click.testing import CliRunner

import loader.ops.status as ops_status
from loader.checkpoint.committer import Generation
from loader.cli import cli
from loader.config.settings import Settings
from loader.config.spec import KafkaMatch, load_specs
from loader.devstack.samples import SampleEvents
from loader.encode.decode import BatchDecoder
from loader.encode.match import OTHER_EVENT, UNMATCHED, RecordMatcher, matcher_for
from loader.errors import ConfigError, SpecError
from loader.ops.status import event_status
from loader.schema import load_avro_schema
from loader.warehouse.connection import Warehouse
from loader.worker.partition import PartitionState
from tests.unit.example_specs import EXAMPLES, write_example_spec
from tests.unit.fakes import FakeRecord

pytestmark = pytest.mark.unit

HOUR = 3_600_000
SCHEMA = load_avro_schema(EXAMPLES.parent / "schemas" / "order_created.avsc")


def _write(folder: Path, name: str, match: dict[str, Any] | None, topic: str = "app_events") -> Path:
    return write_example_spec(
        folder,
        name,
        name=name,
        kafka__topic=topic,
        kafka__match=match,
        s3__prefix=f"events/{name}",
        snowflake__table=name.upper(),
    )


def _specs(folder: Path, matches: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    for name, match in matches.items():
        _write(folder, name, match)
    return {s.name: s for s in load_specs(folder)}


@pytest.mark.parametrize(
    "match",
    [
        {},
        {"catch_all": False},
        {"event_name": "a", "catch_all": True},
        {"header": "type"},
        {"equals": "a"},
        {"event_name": "a", "header": "type", "equals": "a"},
        {"event_name": ""},
        {"header": "bad key!", "equals": "a"},
        {"event_name": "a", "other": 1},
    ],
)
def test_a_match_needs_exactly_one_well_formed_rule(tmp_path: Path, match: dict[str, Any]) -> None:
    """kafka.match holds one rule (event_name, header with equals, or catch_all), or the spec is refused."""
    _write(tmp_path, "a_event", match)
    with pytest.raises(SpecError, match=r"kafka\.match"):
        load_specs(tmp_path)


def test_specs_sharing_a_topic_without_a_match_are_refused(tmp_path: Path) -> None:
    """Two specs on one topic, one without kafka.match: loading says which and why."""
    _write(tmp_path, "a_event", {"event_name": "a_event"})
    _write(tmp_path, "b_event", None)
    with pytest.raises(
        ConfigError, match=r"b_event\.yaml: topic 'app_events' is shared by .*needs kafka\.match"
    ):
        load_specs(tmp_path)


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        ({"event_name": "x"}, {"event_name": "x"}, "both take the records"),
        ({"header": "type", "equals": "x"}, {"header": "type", "equals": "x"}, "both take the records"),
        ({"event_name": "x"}, {"header": "type", "equals": "y"}, "match on different things"),
        ({"header": "type", "equals": "x"}, {"header": "kind", "equals": "y"}, "match on different things"),
        ({"catch_all": True}, {"catch_all": True}, "both the catch-all"),
    ],
)
def test_overlapping_matches_are_refused(
    tmp_path: Path, first: dict[str, Any], second: dict[str, Any], message: str
) -> None:
    """Matches that could take one record twice (same value, different keys, two catch-alls) are refused."""
    _write(tmp_path, "a_event", first)
    _write(tmp_path, "b_event", second)
    with pytest.raises(ConfigError, match=message):
        load_specs(tmp_path)


def test_a_catch_all_alone_on_its_topic_is_refused(tmp_path: Path) -> None:
    """A catch-all with no sibling in the folder would take everything: refused."""
    _write(tmp_path, "a_event", {"catch_all": True})
    with pytest.raises(ConfigError, match="no other spec in the folder reads that topic"):
        load_specs(tmp_path)


def test_specs_on_a_shared_topic_know_their_siblings(tmp_path: Path) -> None:
    """Each spec of a shared topic learns the others' matches; one alone on its topic has none."""
    _write(tmp_path, "solo", None, topic="other_topic")
    specs = _specs(
        tmp_path,
        {"a_event": {"event_name": "a"}, "b_event": {"event_name": "b"}, "rest": {"catch_all": True}},
    )
    assert {s.name for s in specs["a_event"].siblings} == {"b_event", "rest"}
    assert specs["rest"].siblings[0].match.value in {"a", "b"}
    assert specs["solo"].siblings == ()
    assert {s.consumer_group for s in specs.values()} == {
        "loader.a_event",
        "loader.b_event",
        "loader.rest",
        "loader.solo",
    }


def test_two_specs_with_one_consumer_group_are_refused(tmp_path: Path) -> None:
    """Each event type keeps its own consumer group: a shared one is refused."""
    write_example_spec(
        tmp_path,
        "a",
        name="a_event",
        kafka__consumer_group="g",
        kafka__topic="ta",
        s3__prefix="a",
        snowflake__table="A",
    )
    write_example_spec(
        tmp_path,
        "b",
        name="b_event",
        kafka__consumer_group="g",
        kafka__topic="tb",
        s3__prefix="b",
        snowflake__table="B",
    )
    with pytest.raises(ConfigError, match="same consumer group"):
        load_specs(tmp_path)


def _json(offset: int, name: str | None, **extra: Any) -> FakeRecord:
    body: dict[str, Any] = {"event_id": f"e{offset}", **extra}
    if name is not None:
        body["event_name"] = name
    return FakeRecord("t", 0, offset, HOUR, None, json.dumps(body).encode())


def _in_headers(offset: int, name: str) -> FakeRecord:
    headers = (("event_id", f"e{offset}".encode()), ("event_name", name.encode()))
    return FakeRecord("t", 0, offset, HOUR, None, b'{"a": 1}', headers)


def _names(matcher: RecordMatcher, records: list[FakeRecord]) -> list[int]:
    return [r.offset for r in matcher.split(records).taken]


def test_event_name_is_read_from_headers_or_the_json_value() -> None:
    """A spec takes the records with its event_name, from the header envelope or the JSON value."""
    matcher = RecordMatcher(KafkaMatch(event_name="a"), [KafkaMatch(event_name="b")])
    records = [
        _json(0, "a"),
        _in_headers(1, "a"),
        _json(2, "b"),
        _in_headers(3, "b"),
        FakeRecord("t", 0, 4, HOUR, None, b'{\n  "event_name": "a",\n  "x": [1, {"y": 2}]\n}'),
        _json(5, "c"),
    ]
    split = matcher.split(records)
    assert [r.offset for r in split.taken] == [0, 1, 4]
    assert split.skipped == {OTHER_EVENT: 2, UNMATCHED: 1}


def test_a_value_with_no_readable_event_name_is_nobodys_whatever_its_neighbours() -> None:
    """Broken values have no event name, alone or in a batch; the rest of the batch is still matched."""
    matcher = RecordMatcher(KafkaMatch(event_name="a"), [KafkaMatch(catch_all=True)])
    broken = [
        FakeRecord("t", 0, 1, HOUR, None, None),
        FakeRecord("t", 0, 2, HOUR, None, b"null"),
        FakeRecord("t", 0, 3, HOUR, None, b'{"event_name": 7}'),
        FakeRecord("t", 0, 4, HOUR, None, b'{"event_name": "a", "event_name": "a"}'),
        FakeRecord("t", 0, 5, HOUR, None, b'{"event_name": "\xff"}'),
        FakeRecord("t", 0, 6, HOUR, None, b'{"event_name": "a"} {"event_name": "a"}'),
    ]
    batch = [_json(0, "a"), *broken, _json(7, "a")]
    assert _names(matcher, batch) == [0, 7]
    for record in broken:
        assert _names(matcher, [record]) == []
    catch_all = RecordMatcher(KafkaMatch(catch_all=True), [KafkaMatch(event_name="a")])
    split = catch_all.split(batch)
    assert [r.offset for r in split.taken] == [1, 2, 3, 4, 5, 6]
    assert split.skipped == {OTHER_EVENT: 2}


def test_a_header_match_reads_the_last_header_of_that_key() -> None:
    """A header rule compares the last header of its key (as envelope headers count), as UTF-8 text."""
    matcher = RecordMatcher(KafkaMatch(header="type", equals="a"), [KafkaMatch(header="type", equals="b")])
    records = [
        FakeRecord("t", 0, 0, HOUR, None, b"{}", (("type", b"a"),)),
        FakeRecord("t", 0, 1, HOUR, None, b"{}", (("type", b"a"), ("type", b"b"))),
        FakeRecord("t", 0, 2, HOUR, None, b"{}", (("other", b"a"),)),
        FakeRecord("t", 0, 3, HOUR, None, b"{}", (("type", None),)),
    ]
    split = matcher.split(records)
    assert [r.offset for r in split.taken] == [0]
    assert split.skipped == {OTHER_EVENT: 1, UNMATCHED: 2}


def test_a_spec_without_a_match_takes_everything(tmp_path: Path) -> None:
    """No kafka.match: no matcher, every record is the spec's (the single-event topic)."""
    [spec] = load_specs(EXAMPLES, ["order_created"])
    assert matcher_for(spec) is None


def _partition(tmp_path: Path, matcher: RecordMatcher, **rolling: Any) -> PartitionState:
    [base] = load_specs(EXAMPLES, ["order_created"])
    spec = base.model_copy(update={"rolling": base.rolling.model_copy(update=rolling)})
    return PartitionState(
        TopicPartition("t", 0),
        spec,
        BatchDecoder(SCHEMA),
        next_offset=None,
        pending=None,
        generation=Generation(1, "m"),
        spool_dir=tmp_path,
        row_group_records=lambda: 100,
        matcher=matcher,
    )


def _mixed(count: int, start: int = 0) -> list[FakeRecord]:
    """order_created events, every third one renamed to another event type, one broken."""
    samples = SampleEvents("order_created", SCHEMA, seed=5)
    records = []
    for offset in range(start, start + count):
        key, value = samples.encoded(offset)
        if offset % 3 == 1:
            value = value.replace(b'"event_name":"order_created"', b'"event_name":"order_shipped"')
        if offset == 5:
            value = value.replace(b'"event_id"', b'"event_id":1,"x"')  # order_created, but bad
        records.append(FakeRecord("t", 0, offset, 10 * HOUR + offset, key, value))
    return records


def test_a_files_range_covers_the_records_it_skips(tmp_path: Path) -> None:
    """Per file: records = rows + dead letters + skipped, and the files' ranges cover every offset read."""
    matcher = RecordMatcher(KafkaMatch(event_name="order_created"), [KafkaMatch(event_name="order_shipped")])
    state = _partition(tmp_path, matcher, max_records=7)
    rolls = state.ingest(_mixed(12), now=0.0) + state.ingest(_mixed(9, start=12), now=1.0)
    state.close_into(rolls)
    ranges = [(r.closed.covered.first_offset, r.closed.covered.last_offset) for r in rolls]
    assert ranges == [(0, 6), (7, 13), (14, 20)]
    for roll in rolls:
        closed = roll.closed
        assert closed.records == closed.rows + closed.dead_letters + sum(closed.skipped.values())
        assert set(closed.skipped) == {OTHER_EVENT}
    assert sum(r.closed.rows for r in rolls) == 13  # 21 read, 7 order_shipped, offset 5 a dead letter
    assert sum(r.closed.dead_letters for r in rolls) == 1
    assert sum(r.closed.skipped[OTHER_EVENT] for r in rolls) == 7


def test_a_run_of_only_other_events_still_ends_in_a_range(tmp_path: Path) -> None:
    """Batches with nothing this spec takes still roll into a range with no file: the position moves."""
    matcher = RecordMatcher(KafkaMatch(event_name="order_returned"), [KafkaMatch(event_name="order_created")])
    state = _partition(tmp_path, matcher)
    assert state.ingest(_mixed(6), now=0.0) == []
    assert state.spool is not None
    assert state.opened_at == 0.0
    rolls: list[Any] = []
    state.close_into(rolls)
    [roll] = rolls
    closed = roll.closed
    assert (closed.covered.first_offset, closed.covered.last_offset) == (0, 5)
    assert (closed.rows, closed.dead_letters, closed.data_path, closed.dead_letter_path) == (0, 0, None, None)
    assert closed.skipped == {OTHER_EVENT: 4, UNMATCHED: 2}
    assert state.next_offset == 6


def test_plan_shows_what_each_spec_takes_and_with_whom_it_shares(tmp_path: Path) -> None:
    """`loader plan` names the spec's match and the other specs on its topic with theirs, as text and JSON."""
    _specs(tmp_path, {"a_event": {"header": "type", "equals": "a"}, "rest": {"catch_all": True}})
    result = CliRunner().invoke(cli, ["plan", "a_event", "--specs", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "takes           header 'type' = 'a'\n" in result.output
    assert "shared with     rest: catch-all (what no other spec on the topic takes)\n" in result.output
    result = CliRunner().invoke(cli, ["plan", "rest", "--json", "--specs", str(tmp_path)])
    assert result.exit_code == 0, result.output
    kafka = json.loads(result.output)["kafka"]
    assert kafka["takes"] == "catch-all (what no other spec on the topic takes)"
    assert kafka["shared_with"] == ["a_event: header 'type' = 'a'"]


def test_plan_of_a_spec_alone_on_its_topic_takes_every_record() -> None:
    """A spec without kafka.match takes every record and shares with no one."""
    result = CliRunner().invoke(cli, ["plan", "order_created", "--json", "--specs", str(EXAMPLES)])
    assert result.exit_code == 0, result.output
    kafka = json.loads(result.output)["kafka"]
    assert (kafka["takes"], kafka["shared_with"]) == ("every record of the topic", [])


def test_status_shows_what_each_spec_takes_and_with_whom_it_shares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`loader status` carries the sharing from the specs (JSON fields) and prints a line for it."""
    specs = _specs(tmp_path, {"a_event": {"event_name": "a"}, "b_event": {"event_name": "b"}})
    down = {"kafka:default": "down", "s3": "down", "warehouse": "down"}  # nothing is contacted
    now = datetime.now(UTC)
    status = event_status(specs["a_event"], Settings(), cast(Warehouse, None), now=now, down=down)
    assert status.to_json()["topic"] == "app_events"
    assert status.to_json()["takes"] == "event_name = 'a'"
    assert status.to_json()["shared_with"] == ["b_event: event_name = 'b'"]
    monkeypatch.setattr(ops_status, "gather_status", lambda specs, settings, now: [status])
    result = CliRunner().invoke(cli, ["status", "a_event", "--specs", str(tmp_path)])
    assert result.exit_code == 0, result.output
    line = "a_event: topic app_events is shared; a_event takes event_name = 'a'; the others: b_event:"
    assert line in " ".join(result.output.split())  # the terminal wraps it


def test_avro_values_are_matched_by_their_event_name_header() -> None:
    """Avro-registry values are never read for matching: the event_name header decides."""
    matcher = RecordMatcher(KafkaMatch(event_name="a"), [KafkaMatch(event_name="b")], json_values=False)
    records = [
        FakeRecord("t", 0, 0, HOUR, None, b"\x00\x00\x00\x00\x01\x02", (("event_name", b"a"),)),
        FakeRecord("t", 0, 1, HOUR, None, b'{"event_name": "a"}'),
        FakeRecord("t", 0, 2, HOUR, None, b"\x00\x00\x00\x00\x01\x02", (("event_name", b"b"),)),
    ]
    split = matcher.split(records)
    assert [r.offset for r in split.taken] == [0]
    assert split.skipped == {OTHER_EVENT: 1, UNMATCHED: 1}


def test_specs_on_one_topic_with_different_value_formats_are_refused(tmp_path: Path) -> None:
    """JSON and Avro specs on one topic would read event names differently: refused."""
    _write(tmp_path, "a_event", {"event_name": "a"})
    path = _write(tmp_path, "b_event", {"event_name": "b"})
    path.write_text(path.read_text().replace("schema:\n", "schema:\n  format: avro-registry\n", 1))
    with pytest.raises(ConfigError, match="different value formats"):
        load_specs(tmp_path)


def test_batch_and_alone_give_each_record_the_same_event_name() -> None:
    """Compact, pretty-printed and broken values: a record is taken alone exactly when it is in any batch."""
    matcher = RecordMatcher(KafkaMatch(event_name="a"), [KafkaMatch(event_name="b")])
    values = [
        b'{"event_name":"a"}',
        b'{"event_name":"b"}',
        b'{\n "event_name": "a"\n}',
        b'  {"event_name":"a"}  ',
        b'{"event_name":"a"',
        b'{"x":NaN,"event_name":"a"}',
        b"",
    ]
    records = [FakeRecord("t", 0, i, HOUR, None, v) for i, v in enumerate(values)]
    alone = [i for i, r in enumerate(records) if matcher.split([r]).taken]
    assert alone == [0, 2, 3, 5]
    for start in range(len(records)):
        batch = records[start:] + records[:start]
        assert sorted(r.offset for r in matcher.split(batch).taken) == alone
