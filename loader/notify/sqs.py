"""S3 event notifications, as delivered to SQS.

A message body holds ``Records`` with the bucket and the URL-encoded key
(``quote_plus``: a space arrives as ``+``), or a one-off ``s3:TestEvent``
sent when a notification configuration is set. Anything else is not ours to
interpret: it is reported as unreadable and left for the redrive policy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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
    except ValueError as exc:
        return Notification(unreadable=f"not JSON: {exc}")
    if not isinstance(document, dict):
        return Notification(unreadable="not a JSON object")
    if document.get("Event") == "s3:TestEvent":
        return Notification(is_test_event=True)
    records = document.get("Records")
    if not isinstance(records, list):
        return Notification(unreadable="no Records list")
    objects = []
    for record in records:
        try:
            if not str(record["eventName"]).startswith("ObjectCreated"):
                continue
            objects.append((str(record["s3"]["bucket"]["name"]), unquote_plus(record["s3"]["object"]["key"])))
        except (KeyError, TypeError):
            return Notification(unreadable="a record lacks s3.bucket.name or s3.object.key")
    return Notification(objects=tuple(objects))
