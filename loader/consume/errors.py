"""aiokafka's errors translated at this boundary, the same shape as S3's ``storage_errors``.

Every call into aiokafka that can fail runs inside :class:`kafka_errors`, which
turns an aiokafka error into a :class:`~loader.errors.KafkaError` naming what
was being done. Whether retrying can help comes from aiokafka's own
``retriable`` flag, with the exceptions listed in :data:`_UNANSWERED`. Code
that reacts to one aiokafka error in particular (a topic that already exists,
a fenced commit) catches it inside the block; whatever it lets through is
translated here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiokafka.errors

from loader.errors import KafkaError

if TYPE_CHECKING:
    from loader.metrics import EventMetrics

__all__ = ["is_transient", "kafka_errors"]

_UNANSWERED: frozenset[type[aiokafka.errors.KafkaError]] = frozenset(
    {aiokafka.errors.KafkaError, aiokafka.errors.KafkaTimeoutError}
)
"""aiokafka errors not marked retriable that still mean "Kafka did not answer": a request
out of time (unmarked so that aiokafka's producer never resends a batch on its own), and
the bare base class, which aiokafka raises when no broker gave it the cluster's metadata.
A later try may succeed, as it did before this boundary existed."""


def is_transient(exc: aiokafka.errors.KafkaError) -> bool:
    """Whether retrying later can help after ``exc``: aiokafka's ``retriable`` flag, or Kafka
    did not answer at all."""
    return bool(exc.retriable) or type(exc) in _UNANSWERED


class kafka_errors:  # noqa: N801 - used as a lower-case context manager, like storage_errors
    """Translate aiokafka errors raised inside the block into KafkaError.

    The message is ``"<action>: <aiokafka's error>"``; ``action`` may be a callable, called
    only when an error is translated, for a description that changes as the block runs.
    With ``metrics``, each translated error is counted under its aiokafka class in
    ``loader_errors_total{component="kafka"}``.
    """

    def __init__(self, action: str | Callable[[], str], *, metrics: EventMetrics | None = None) -> None:
        self.action = action
        self._metrics = metrics

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if not isinstance(exc, aiokafka.errors.KafkaError):
            return
        if self._metrics is not None:
            self._metrics.error("kafka", type(exc).__name__)
        action = self.action if isinstance(self.action, str) else self.action()
        raise KafkaError(f"{action}: {exc}", transient=is_transient(exc)) from exc
