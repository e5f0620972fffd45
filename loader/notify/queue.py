"""The notifications queue as the loader reads it: receive, keep hidden, delete.

A batch is received with a long poll and a visibility timeout; while its
files load, :meth:`NotificationQueue.hidden` keeps extending that timeout so
no other loader picks the messages up; a message is deleted only once the
caller has handled everything it names. A message that is never deleted
comes back after its timeout, and the queue's redrive policy moves it to the
dead-letter queue in the end.

Every call's botocore errors become a :class:`~loader.errors.StorageError`
(:mod:`loader.store.aws` says which are terminal) and are handed to
``on_error`` before they are raised (the loader counts them). botocore tries
each call :data:`MAX_ATTEMPTS` times only: the loader retries for as long as
the queue is down, and sees an outage within seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import botocore.exceptions
import structlog

from loader.config.settings import AwsSettings
from loader.errors import StorageError
from loader.notify.message import Notification, parse_notification
from loader.store.aws import aws_client, storage_errors

__all__ = ["MAX_ATTEMPTS", "NotificationQueue", "Received"]

log = structlog.get_logger("loader.notify")

T = TypeVar("T")

MAX_ATTEMPTS = 3
"""botocore's tries of one call (its standard retry mode) before the error reaches the loader."""
_RECEIPT_GONE = {"ReceiptHandleIsInvalid", "InvalidParameterValue"}
"""SQS's answer to a receipt that no longer names a message in flight: it became visible
again (a timeout passed while the queue was down) or was deleted already."""


@dataclass(frozen=True)
class Received:
    """One message received, with what its body says."""

    message_id: str
    receipt: str
    body: str
    notification: Notification
    sent_s: float | None
    """When SQS received the notification (Unix time), for the load latency."""


def _ignore(_exc: StorageError) -> None:
    """The default ``on_error``: nothing to count."""


def _sent_s(message: dict[str, Any]) -> float | None:
    sent_ms = message.get("Attributes", {}).get("SentTimestamp")
    try:
        return int(sent_ms) / 1000 if sent_ms else None
    except ValueError:
        return None


class NotificationQueue:
    """The SQS queue that receives the buckets' ObjectCreated notifications."""

    def __init__(
        self,
        settings: AwsSettings,
        url: str,
        *,
        visibility_timeout_s: int,
        wait_time_s: int,
        on_error: Callable[[StorageError], None] = _ignore,
    ) -> None:
        self.url = url
        self._sqs = aws_client("sqs", settings, max_attempts=MAX_ATTEMPTS)
        self._visibility_s = visibility_timeout_s
        self._wait_s = wait_time_s
        self._on_error = on_error

    def _call(self, action: str, call: Callable[[], T]) -> T:
        try:
            with storage_errors(action):
                return call()
        except StorageError as exc:
            self._on_error(exc)
            raise

    def check(self) -> None:
        """Read one attribute of the queue: it exists and answers (readiness)."""
        self._call(
            "read the notifications queue's attributes",
            lambda: self._sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"]),
        )

    def depth(self) -> tuple[int, int]:
        """SQS's approximate counts of messages waiting (visible) and received but not deleted
        (in flight): one call, so also a readiness check."""
        response = self._call(
            "read the notifications queue's attributes",
            lambda: self._sqs.get_queue_attributes(
                QueueUrl=self.url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            ),
        )
        attributes = response.get("Attributes", {})
        return (
            int(attributes.get("ApproximateNumberOfMessages", 0)),
            int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        )

    @property
    def name(self) -> str:
        """The queue's name: the last part of its URL."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    def receive(self) -> list[Received]:
        """One long poll: up to 10 messages, hidden for the visibility timeout."""
        response = self._call(
            "receive from the notifications queue",
            lambda: self._sqs.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=self._wait_s,
                VisibilityTimeout=self._visibility_s,
                MessageSystemAttributeNames=["SentTimestamp"],
            ),
        )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        received = []
        for message in messages:
            body = message.get("Body", "")
            received.append(
                Received(
                    message_id=str(message.get("MessageId", "")),
                    receipt=message["ReceiptHandle"],
                    body=body,
                    notification=parse_notification(body),
                    sent_s=_sent_s(message),
                )
            )
        return received

    def hidden(self, receipts: Sequence[str]) -> _VisibilityExtender:
        """A context manager that keeps ``receipts`` hidden from other consumers while it is open."""
        return _VisibilityExtender(self, list(receipts))

    def delete(self, receipt: str) -> bool:
        """Delete a handled message; False if its receipt is no longer valid (the message comes
        back, and what it names is found loaded then)."""
        try:
            self._call(
                "delete a notification",
                lambda: self._sqs.delete_message(QueueUrl=self.url, ReceiptHandle=receipt),
            )
        except StorageError as exc:
            if _receipt_gone(exc):
                log.warning("notification_receipt_expired", error=str(exc))
                return False
            raise
        return True

    def extend(self, receipt: str) -> None:
        """Hide a message for another visibility timeout."""
        self._call(
            "extend a notification's visibility",
            lambda: self._sqs.change_message_visibility(
                QueueUrl=self.url, ReceiptHandle=receipt, VisibilityTimeout=self._visibility_s
            ),
        )

    @property
    def visibility_timeout_s(self) -> int:
        return self._visibility_s


def _receipt_gone(exc: StorageError) -> bool:
    cause = exc.__cause__
    return (
        isinstance(cause, botocore.exceptions.ClientError)
        and cause.response.get("Error", {}).get("Code") in _RECEIPT_GONE
    )


class _VisibilityExtender:
    """Keeps a batch's messages invisible to other consumers while it loads."""

    def __init__(self, queue: NotificationQueue, receipts: list[str]) -> None:
        self._queue, self._receipts = queue, receipts
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqs-visibility", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._queue.visibility_timeout_s / 2):
            for receipt in self._receipts:
                try:
                    self._queue.extend(receipt)
                except StorageError as exc:  # best effort (counted): at worst the message reappears
                    log.warning("visibility_extend_failed", error=str(exc))

    def __enter__(self) -> _VisibilityExtender:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
