"""Spilling: records the gateway could not deliver to Kafka by their deadline go to S3.

Async mode answers a client before Kafka has its records; one that Kafka still has not
acknowledged at its deadline must not vanish. It is written, with the reason, to the
event's dead-letter area (:func:`~loader.store.layout.spill_key`) in the worker's
dead-letter columns (:func:`~loader.encode.dead_letter.unsent_dead_letter_table`), where
``loader dead-letters`` lists it, and counted in ``loader_gateway_spilled_total``.

S3 may be down as well: a spill is retried with backoff until it is written (the key is
fixed before the first try and written with a conditional PUT, so a try whose answer was
lost and its retry make one object), logging each failure.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

import structlog

from loader.config.settings import AwsSettings
from loader.config.spec import EventSpec
from loader.encode.dead_letter import unsent_dead_letter_table
from loader.encode.parquet import write_parquet
from loader.errors import LoaderError, clip
from loader.gateway.outbound import OutboundRecord
from loader.metrics import GATEWAY_SPILLED
from loader.retry import Backoff
from loader.store.layout import spill_key
from loader.store.s3 import S3Store

__all__ = ["SpillStore", "Spiller"]

log = structlog.get_logger("loader.gateway")


class SpillStore(Protocol):
    """What a spill needs of a bucket (:class:`~loader.store.s3.S3Store`)."""

    def put_new(self, body: bytes, key: str) -> bool: ...


class Spiller:
    """Writes undelivered records to their event's dead-letter area, retrying until S3 takes them."""

    def __init__(
        self,
        aws: AwsSettings,
        *,
        store_for: Callable[[str], SpillStore] | None = None,
        backoff: Callable[[], Backoff] = lambda: Backoff(0.5, 30.0, jitter=True),
    ) -> None:
        # Few attempts per try: the loop below retries, and logs each failure.
        self._store_for = store_for or (lambda bucket: S3Store(aws, bucket, max_attempts=2))
        self._stores: dict[str, SpillStore] = {}
        self._backoff = backoff

    def _store(self, bucket: str) -> SpillStore:
        if bucket not in self._stores:
            self._stores[bucket] = self._store_for(bucket)
        return self._stores[bucket]

    async def spill(self, spec: EventSpec, records: Sequence[OutboundRecord], reason: str) -> str:
        """Write ``records`` (meant for the spec's topic) to one dead-letter file and count them;
        returns its key. Retries while S3 fails; cancelling stops the retries."""
        sink = io.BytesIO()
        write_parquet(
            unsent_dead_letter_table(spec.kafka.topic, records, reason), sink, spec.rolling.row_group_records
        )
        body = sink.getvalue()
        key = spill_key(spec, datetime.now(UTC), uuid.uuid4().hex)
        backoff = self._backoff()
        while True:
            try:
                # False: an earlier try wrote it and its answer was lost; the object is there.
                await asyncio.to_thread(self._store(spec.s3.bucket).put_new, body, key)
                break
            except LoaderError as exc:  # StorageError, or a ConfigError for a bad bucket name
                log.warning(
                    "gateway.spill_failed",
                    event_type=spec.name,
                    records=len(records),
                    key=key,
                    error=clip(str(exc), 300),
                    retry_in_s=round(backoff.next_s, 2),
                )
                await backoff.wait()
        GATEWAY_SPILLED.labels(spec.name).inc(len(records))
        log.warning(
            "gateway.spilled", event_type=spec.name, records=len(records), key=key, reason=clip(reason, 300)
        )
        return key
