"""What the gateway's HTTP side hands to its producing side, and what it gets back.

The HTTP side (:mod:`loader.gateway.app`) turns posted events into :class:`OutboundRecord`
values, checked with the worker's decoder; the producing side
(:mod:`loader.gateway.delivery`) sends them with the cluster's producer and answers one
:class:`Outcome` per record, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from loader.config.spec import EventSpec

__all__ = ["Delivery", "OutboundRecord", "Outcome", "OutcomeState"]


@dataclass(frozen=True)
class OutboundRecord:
    """One record exactly as it goes to Kafka (and as the gateway's check decoded it)."""

    value: bytes
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int
    """The record's Kafka timestamp, set by the gateway (the one the check used)."""
    partition: int | None = None
    """A partition the client asked for (REST Proxy ``partition``); None: the partitioner's."""


OutcomeState = Literal["acknowledged", "buffered", "failed"]


@dataclass(frozen=True)
class Outcome:
    """What became of one record.

    - ``acknowledged`` (sync mode): the broker has it, at ``partition``/``offset``;
    - ``buffered`` (async mode): in the producer, delivered or spilled later;
    - ``failed``: not delivered by its deadline, or refused; ``error`` says why and
      ``retryable`` whether the client should send it again.
    """

    state: OutcomeState
    partition: int | None = None
    offset: int | None = None
    error: str | None = None
    retryable: bool = False


class Delivery(Protocol):
    """The producing side: one producer per Kafka cluster named in the specs."""

    async def send(self, spec: EventSpec, records: Sequence[OutboundRecord]) -> list[Outcome]:
        """Produce ``records`` to the spec's topic on its cluster; one outcome per record, in
        order. Sync mode waits for the broker (at most the records' deadline), async mode for
        the producer's buffer. Never raises for a broker problem: that is a failed outcome."""
        ...

    def readiness(self) -> dict[str, str]:
        """What keeps the gateway from taking traffic (empty when ready): the topic metadata
        of every spec fetched, and a canary record acknowledged on every cluster."""
        ...
