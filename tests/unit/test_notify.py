"""S3 notifications from SQS: test events, encoded keys, poison messages."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loader.notify.message import Notification, parse_notification

pytestmark = pytest.mark.unit


def _body(*keys: str, event: str = "ObjectCreated:Put") -> str:
    return json.dumps(
        {
            "Records": [
                {"eventName": event, "s3": {"bucket": {"name": "b"}, "object": {"key": k}}} for k in keys
            ]
        }
    )


def test_keys_are_unquoted_plus() -> None:
    """Keys arrive quote_plus-encoded ('+' for space, %2F, %3D) and are decoded."""
    note = parse_notification(_body("events%2Fx%2Fdata%2Fdt%3D2026-11-27%2Fa+b.parquet"))
    assert note.objects == (("b", "events/x/data/dt=2026-11-27/a b.parquet"),)
    assert not note.is_test_event and note.unreadable is None


def test_test_event_is_recognised() -> None:
    """The s3:TestEvent sent when notifications are configured is flagged, not loaded."""
    note = parse_notification(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"}))
    assert note.is_test_event and note.objects == ()


def test_non_created_events_are_skipped() -> None:
    """Only ObjectCreated events name files to load."""
    assert parse_notification(_body("a", event="ObjectRemoved:Delete")).objects == ()


@pytest.mark.parametrize(
    "body", ["not json", "[]", '{"Records": "x"}', '{"Records": [{"eventName": "ObjectCreated:Put"}]}']
)
def test_poison_messages_are_unreadable(body: str) -> None:
    """Messages that are not S3 notifications are reported unreadable (left for the DLQ)."""
    assert parse_notification(body).unreadable


def _created(bucket: object, key: object) -> str:
    return json.dumps(
        {
            "Records": [
                {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}
            ]
        }
    )


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000,  # nested past the parser's recursion limit
        '{"Records": ["x"]}',
        '{"Records": [{"eventName": 5}]}',
        '{"Records": [{"eventName": "ObjectCreated:Put", "s3": "x"}]}',
        _created("b", 5),
        _created(["b"], "k"),
        _created("b", "%ff"),  # not UTF-8 once decoded
        _created("b", ""),
    ],
)
def test_any_malformed_body_is_reported_not_raised(body: str) -> None:
    """Whatever a stranger puts in a message body, reading it reports it unreadable and never raises."""
    note = parse_notification(body)
    assert note.unreadable
    assert note.objects == ()


def test_deeply_nested_arrays_are_unreadable_not_a_recursion_error() -> None:
    """Regression: a body of deeply nested JSON arrays raised RecursionError and crashed `pipes run`."""
    depth = 100_000
    for body in ("[" * depth + "]" * depth, '{"Records": ' + "[" * depth + "]" * depth + "}"):
        note = parse_notification(body)
        assert note.unreadable and note.objects == ()


def test_a_null_key_is_unreadable_not_an_attribute_error() -> None:
    """Regression: a record whose s3.object.key is null raised AttributeError in unquote_plus."""
    note = parse_notification(_created("b", None))
    assert note.unreadable == "record 0: lacks s3.bucket.name or s3.object.key (strings)"
    assert note.objects == ()


def test_a_key_that_is_not_utf8_text_is_unreadable() -> None:
    """A lone surrogate (a JSON escape no S3 key can hold) is refused, so no later encode can fail."""
    assert parse_notification(_created("b", "events/\ud800.parquet")).unreadable
    assert parse_notification(_created("b\udc80", "k")).unreadable


def _json_values() -> st.SearchStrategy[Any]:
    """Any JSON value, and records shaped like S3's with any JSON in each field."""
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    anything = st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4)
    )
    record = st.fixed_dictionaries(
        {
            "eventName": st.sampled_from(["ObjectCreated:Put", "ObjectRemoved:Delete"]) | anything,
            "s3": st.fixed_dictionaries(
                {
                    "bucket": st.fixed_dictionaries({"name": st.text() | anything}) | anything,
                    "object": st.fixed_dictionaries({"key": st.text() | anything}) | anything,
                }
            )
            | anything,
        }
    )
    return anything | st.fixed_dictionaries({"Records": st.lists(record | anything, max_size=4) | anything})


def _assert_read_or_unreadable(note: Notification) -> None:
    """The one documented outcome: objects (UTF-8 text pairs), a test event, or a reason."""
    assert isinstance(note, Notification)
    if note.unreadable is not None:
        assert isinstance(note.unreadable, str) and note.unreadable
        assert note.objects == ()
    for bucket, key in note.objects:
        assert isinstance(bucket, str) and isinstance(key, str) and bucket and key
        bucket.encode("utf-8")
        key.encode("utf-8")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_json_values())
def test_any_json_value_is_read_or_reported_unreadable(value: Any) -> None:
    """Whatever JSON a message holds, parse_notification returns a Notification and never raises."""
    _assert_read_or_unreadable(parse_notification(json.dumps(value)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2_000) | st.builds(lambda b: b"[" * b, st.integers(0, 50_000)))
def test_any_bytes_are_read_or_reported_unreadable(data: bytes) -> None:
    """Arbitrary bytes, however decoded into the body's text, are read or reported, never raised."""
    for body in (data.decode("utf-8", "surrogateescape"), data.decode("latin-1")):
        _assert_read_or_unreadable(parse_notification(body))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=2_000))
def test_any_text_is_read_or_reported_unreadable(body: str) -> None:
    """Arbitrary text (lone surrogates included) is read or reported, never raised."""
    _assert_read_or_unreadable(parse_notification(body))
