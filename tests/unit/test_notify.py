"""S3 notifications from SQS: test events, encoded keys, poison messages."""

from __future__ import annotations

import json

import pytest

from loader.notify.message import parse_notification

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
