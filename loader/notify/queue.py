"""The notifications queue as the loader reads it: receive, keep hidden, delete.

A batch is received with a long poll and a visibility timeout; while its
files load, :meth:`NotificationQueue.hidden` keeps extending that timeout so
no other loader picks the messages up; a message is deleted only once the
caller has handled everything it names. A message that is never deleted
comes back after its timeout, and the queue's redrive policy moves it to the
dead-letter queue in the end.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from loader.config.settings import AwsSettings
from loader.notify.message import Notification, parse_notification
from loader.store.aws import aws_client, storage_errors

__all__ = ["NotificationQueue", "Received"]

log = structlog.get_logger("loader.notify")


@dataclass(frozen=True)
class Received:
    """One message received, with what its body says."""

    message_id: str
    receipt: str
    notification: Notification
    sent_s: float | None
    """When SQS received the notification (Unix time), for the load latency."""


class NotificationQueue:
    """The SQS queue that receives the buckets' ObjectCreated notifications."""

    def __init__(
        self, settings: AwsSettings, url: str, *, visibility_timeout_s: int, wait_time_s: int
    ) -> None:
        self.url = url
        self._sqs = aws_client("sqs", settings)
        self._visibility_s = visibility_timeout_s
        self._wait_s = wait_time_s

    def receive(self) -> list[Received]:
        """One long poll: up to 10 messages, hidden for the visibility timeout."""
        with storage_errors("receive from the notifications queue"):
            response = self._sqs.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=self._wait_s,
                VisibilityTimeout=self._visibility_s,
                MessageSystemAttributeNames=["SentTimestamp"],
            )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        received = []
        for message in messages:
            sent_ms = message.get("Attributes", {}).get("SentTimestamp")
            received.append(
                Received(
                    message_id=message["MessageId"],
                    receipt=message["ReceiptHandle"],
                    notification=parse_notification(message.get("Body", "")),
                    sent_s=int(sent_ms) / 1000 if sent_ms else None,
                )
            )
        return received

    def hidden(self, receipts: Sequence[str]) -> _VisibilityExtender:
        """A context manager that keeps ``receipts`` hidden from other consumers while it is open."""
        return _VisibilityExtender(self._sqs, self.url, list(receipts), self._visibility_s)

    def delete(self, receipt: str) -> None:
        """Delete a handled message."""
        with storage_errors("delete a notification"):
            self._sqs.delete_message(QueueUrl=self.url, ReceiptHandle=receipt)


class _VisibilityExtender:
    """Keeps a batch's messages invisible to other consumers while it loads."""

    def __init__(self, sqs: Any, queue_url: str, receipts: list[str], timeout_s: int) -> None:
        self._sqs, self._queue_url, self._receipts, self._timeout_s = sqs, queue_url, receipts, timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqs-visibility", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._timeout_s / 2):
            for receipt in self._receipts:
                try:
                    self._sqs.change_message_visibility(
                        QueueUrl=self._queue_url, ReceiptHandle=receipt, VisibilityTimeout=self._timeout_s
                    )
                except Exception as exc:  # best effort: at worst the message reappears
                    log.warning("visibility_extend_failed", error=str(exc))

    def __enter__(self) -> _VisibilityExtender:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
