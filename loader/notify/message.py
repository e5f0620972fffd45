"""S3 event notifications, as delivered to SQS.

A message body holds ``Records`` with the bucket and the URL-encoded key
(``quote_plus``: a space arrives as ``+``), or a one-off ``s3:TestEvent``
sent when a notification configuration is set. Anything else is not ours to
interpret: it is reported as unreadable and left for the redrive policy.

A body is untrusted input: whatever it holds (not JSON, nested too deep,
fields of the wrong type, keys that do not decode), reading it returns a
:class:`Notification` and never raises.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

__all__ = ["Notification", "parse_notification"]


@dataclass(frozen=True)
class Notification:
    """What one SQS message says."""

    objects: tuple[tuple[str, str], ...] = ()
    """(bucket, key) of each created object."""
    is_test_event: bool = False
    unreadable: str | None = None
    """Why the message could not be read (a poison message), or None."""


def parse_notification(body: str) -> Notification:
    """Read an SQS message body written by S3 (directly, not through SNS)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        return Notification(unreadable=f"not JSON: {type(exc).__name__}")
    if not isinstance(document, dict):
        return Notification(unreadable="not a JSON object")
    if document.get("Event") == "s3:TestEvent":
        return Notification(is_test_event=True)
    records = document.get("Records")
    if not isinstance(records, list):
        return Notification(unreadable="no Records list")
    objects = []
    for index, record in enumerate(records):
        read = _created_object(record)
        if isinstance(read, str):
            return Notification(unreadable=f"record {index}: {read}")
        if read is not None:
            objects.append(read)
    return Notification(objects=tuple(objects))


def _created_object(record: Any) -> tuple[str, str] | str | None:
    """(bucket, key) of an ObjectCreated record, None for another event, or why it is unreadable."""
    if not isinstance(record, dict):
        return "not an object"
    event = record.get("eventName")
    if not isinstance(event, str):
        return "no eventName"
    if not event.startswith("ObjectCreated"):
        return None
    s3 = record.get("s3")
    bucket = s3.get("bucket") if isinstance(s3, dict) else None
    item = s3.get("object") if isinstance(s3, dict) else None
    name = bucket.get("name") if isinstance(bucket, dict) else None
    key = item.get("key") if isinstance(item, dict) else None
    if not isinstance(name, str) or not isinstance(key, str) or not name or not key:
        return "lacks s3.bucket.name or s3.object.key (strings)"
    # Strict decoding: a key whose %-escapes are not UTF-8, or a name holding a lone surrogate
    # (a JSON escape such as \ud800), is not one S3 could have sent.
    try:
        decoded = unquote_plus(key, errors="strict")
        decoded.encode("utf-8")
        name.encode("utf-8")
    except UnicodeError:
        return "s3.bucket.name or s3.object.key is not (URL-encoded) UTF-8"
    return name, decoded
