"""The gateway's producing side: one idempotent producer per Kafka cluster the specs name.

Producers are tuned once for every client: idempotent (acks=all: a record retried after a
lost answer is written once), compressed, lingering tens of milliseconds to batch.

What aiokafka does while a broker is down decides the shape of this module. An idempotent
producer never expires a batch it could not deliver: it retries until the broker is back,
so a record's future may stay pending for as long as the outage lasts, and ``stop()``
waits for it (aiokafka issue #1101). So:

- every wait here has a deadline (``delivery_timeout_s``); a record not acknowledged by then
  is *failed, retryable* in sync mode (the client gets 503 and sends it again: the producer
  may still deliver the first copy when the broker returns, so a resent record can be in
  the topic twice, never zero times), and *spilled* to S3 in async mode
  (:mod:`loader.gateway.spill`; likewise it may also reach the topic later, which is logged);
- records whose future is still pending count as in flight; beyond
  ``max_in_flight_records`` a request is refused at once (failed, retryable: 503), which
  bounds the memory an outage can take;
- stopping waits a bounded time for what is pending, spills what async mode still holds,
  and then abandons the producer's sender instead of waiting for the broker.

Readiness (:mod:`loader.gateway.readiness`) is checked by a loop that also starts a
cluster's producer (again and again while the cluster cannot be reached: the gateway
starts without Kafka, and is not ready until it has it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiokafka.errors
import structlog
from aiokafka import AIOKafkaProducer

from loader.config.settings import Settings
from loader.config.spec import EventSpec
from loader.consume.errors import is_transient
from loader.consume.kafka import client_kwargs
from loader.errors import clip
from loader.gateway.batching import Batcher, Placed
from loader.gateway.outbound import OutboundRecord, Outcome
from loader.gateway.readiness import CHECK_INTERVAL_S, CHECK_TIMEOUT_S, RECHECK_S, Readiness, check_cluster
from loader.gateway.spill import Spiller
from loader.metrics import GATEWAY_ASYNC_FAILURES, GATEWAY_IN_FLIGHT, GATEWAY_PRODUCE_SECONDS
from loader.retry import Backoff

__all__ = ["KafkaDelivery", "producer_options"]

log = structlog.get_logger("loader.gateway")

MAX_BATCH_BYTES = 1_000_000
"""Per-partition batch size: large batches for throughput, under the broker's 1 MB message limit."""
STOP_FLUSH_S = 10.0
"""How long stopping waits for pending records to be acknowledged before spilling them."""
STOP_SPILL_S = 30.0
"""How long stopping lets spills retry (S3 down too) before giving up, loudly."""
REASON_CHARS = 300
_BROKEN = (
    aiokafka.errors.OutOfOrderSequenceNumber,
    aiokafka.errors.UnknownProducerId,
    aiokafka.errors.InvalidProducerEpoch,
    aiokafka.errors.ProducerFenced,
    aiokafka.errors.InvalidProducerIdMapping,
)
"""Errors after which an idempotent producer's sequence numbers no longer match the broker's
(seen after a broker restart): every later batch of that producer fails the same way, so the
producer is replaced, and its records count as not written (retryable)."""


def producer_options(settings: Settings) -> dict[str, Any]:
    """The producer tuning every cluster gets (besides its connection arguments)."""
    gateway = settings.gateway
    return {
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": gateway.linger_ms,
        "compression_type": None if gateway.compression == "none" else gateway.compression,
        "max_batch_size": MAX_BATCH_BYTES,
        # A produce request (and a wait for metadata in send()) should not outlast a record's deadline.
        "request_timeout_ms": int(min(max(gateway.delivery_timeout_s, 1.0), 40.0) * 1000),
    }


@dataclass
class _Cluster:
    name: str
    spec: EventSpec
    """A spec on the cluster: its connection arguments are the cluster's."""
    topics: set[str] = field(default_factory=set)
    producer: Any = None
    """The started producer (an AIOKafkaProducer), None until it could start."""
    batcher: Batcher | None = None
    """The cluster's open batches (set by :class:`KafkaDelivery`)."""


class KafkaDelivery:
    """:class:`~loader.gateway.outbound.Delivery` with aiokafka; ``start()`` before the first
    ``send()``, ``stop()`` at the end (the app's lifespan does both)."""

    def __init__(
        self,
        specs: Sequence[EventSpec],
        settings: Settings,
        *,
        make_producer: Callable[[EventSpec], Any] | None = None,
        spiller: Spiller | None = None,
        check_interval_s: float = CHECK_INTERVAL_S,
        check_timeout_s: float = CHECK_TIMEOUT_S,
        stop_flush_s: float = STOP_FLUSH_S,
    ) -> None:
        self._settings = settings
        self._mode = settings.gateway.mode
        self._deadline_s = settings.gateway.delivery_timeout_s
        self._cap = settings.gateway.max_in_flight_records
        self._canary_topic = settings.gateway.canary_topic
        self._make_producer = make_producer or self._new_producer
        self._spiller = spiller or Spiller(settings.aws)
        self._check_interval_s = check_interval_s
        self._check_timeout_s = check_timeout_s
        self._stop_flush_s = stop_flush_s
        self._clusters: dict[str, _Cluster] = {}
        for spec in specs:
            cluster = self._clusters.setdefault(spec.kafka.cluster, _Cluster(spec.kafka.cluster, spec))
            cluster.topics.add(spec.kafka.topic)
        linger_s = settings.gateway.linger_ms / 1000
        for cluster in self._clusters.values():
            cluster.batcher = Batcher(lambda c=cluster: c.producer, linger_s)  # type: ignore[misc]
        self._readiness = Readiness(self._clusters)
        self._in_flight = 0
        self._followers: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._give_up: asyncio.Future[None] | None = None
        self._stopping = False
        self._spilling = 0
        """Records being written to S3 right now."""

    def _new_producer(self, spec: EventSpec) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **client_kwargs(spec, self._settings.kafka), **producer_options(self._settings)
        )

    @property
    def in_flight(self) -> int:
        """Records handed to a producer and not yet acknowledged or failed by it."""
        return self._in_flight

    async def start(self) -> None:
        """Start every cluster's producer (one try, bounded) and the readiness checks, which
        keep trying a cluster that could not be reached."""
        self._give_up = asyncio.get_running_loop().create_future()
        await asyncio.gather(*(self._start_producer(c) for c in self._clusters.values()))
        self._watcher = asyncio.create_task(self._watch(), name="gateway-readiness")

    async def _start_producer(self, cluster: _Cluster) -> bool:
        producer = self._make_producer(cluster.spec)
        try:
            async with asyncio.timeout(self._check_timeout_s):
                await producer.start()
        except (aiokafka.errors.KafkaError, OSError, TimeoutError) as exc:
            await _abandon(producer)
            reason = "no answer" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            self._readiness.report(
                cluster.name, {f"kafka:{cluster.name}": clip(f"cannot connect: {reason}", REASON_CHARS)}
            )
            log.warning("gateway.kafka_unreachable", cluster=cluster.name, error=clip(reason, REASON_CHARS))
            return False
        cluster.producer = producer
        return True

    async def _watch(self) -> None:
        """Check every cluster now, and again every interval (sooner while one is not ready)."""
        while True:
            for cluster in self._clusters.values():
                if cluster.producer is None and not await self._start_producer(cluster):
                    continue
                problems = await check_cluster(
                    cluster.producer,
                    cluster.name,
                    cluster.topics,
                    self._canary_topic,
                    timeout_s=self._check_timeout_s,
                )
                was_ready = self._readiness.ready(cluster.name)
                self._readiness.report(cluster.name, problems)
                if problems or not was_ready:
                    log.info("gateway.readiness", cluster=cluster.name, down=problems)
            all_ready = not self._readiness.down()
            await asyncio.sleep(
                self._check_interval_s if all_ready else min(RECHECK_S, self._check_interval_s)
            )

    def readiness(self) -> dict[str, str]:
        """What keeps the gateway from taking traffic (empty when ready)."""
        return self._readiness.down()

    async def send(self, spec: EventSpec, records: Sequence[OutboundRecord]) -> list[Outcome]:
        """Produce ``records`` to the spec's topic; one outcome per record, in order (see the
        module docstring for what sync and async mode answer)."""
        if not records:
            return []
        producer = self._clusters[spec.kafka.cluster].producer
        refusal = (
            "the gateway is stopping"
            if self._stopping
            else f"Kafka cluster {spec.kafka.cluster} is not connected yet"
            if producer is None
            else f"{self._in_flight} records are in flight, at most {self._cap}: Kafka is slow or down"
            if self._in_flight + len(records) > self._cap
            else None
        )
        if refusal is not None:
            return [Outcome("failed", error=refusal, retryable=True)] * len(records)
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        deadline = loop.time() + self._deadline_s
        outcomes: list[Outcome | None] = [None] * len(records)
        sent = await self._hand_over(producer, spec, records, outcomes, deadline)
        if self._mode == "sync":
            if sent:
                batches = {placed.future for _, placed in sent}
                await asyncio.wait(batches, timeout=max(0.0, deadline - loop.time()))
                for future in batches:
                    self._renew_if_broken(spec, producer, future)
            for index, placed in sent:
                outcomes[index] = self._acknowledged(placed)
        else:
            for index, _ in sent:
                outcomes[index] = Outcome("buffered")
            if sent:
                follower = asyncio.create_task(
                    self._follow(producer, spec, [(records[i], p.future) for i, p in sent], deadline),
                    name=f"gateway-follow-{spec.name}",
                )
                self._followers.add(follower)
                follower.add_done_callback(self._followers.discard)
        GATEWAY_PRODUCE_SECONDS.labels(spec.name).observe(time.perf_counter() - started)
        return [o if o is not None else Outcome("failed", error="not sent", retryable=True) for o in outcomes]

    async def _hand_over(
        self,
        producer: Any,
        spec: EventSpec,
        records: Sequence[OutboundRecord],
        outcomes: list[Outcome | None],
        deadline: float,
    ) -> list[tuple[int, Placed]]:
        """Place each record in its partition's open batch (:mod:`loader.gateway.batching`)
        once the topic's partitions are known, by the deadline; where each record went. A
        record that cannot go gets its failed outcome in ``outcomes``."""
        topic = spec.kafka.topic
        try:
            async with asyncio.timeout_at(deadline):
                partitions = sorted(await producer.partitions_for(topic))
        except TimeoutError:
            reason = f"not handed to the producer within {self._deadline_s:g} s (no metadata for {topic})"
            outcomes[:] = [Outcome("failed", error=reason, retryable=True)] * len(records)
            return []
        except aiokafka.errors.KafkaError as exc:
            outcomes[:] = [_failure(exc)] * len(records)
            return []
        batcher = self._clusters[spec.kafka.cluster].batcher
        assert batcher is not None  # set in __init__
        sent: list[tuple[int, Placed]] = []
        for index, placed in enumerate(batcher.place(producer, topic, partitions, records)):
            if isinstance(placed, Outcome):
                outcomes[index] = placed
            else:
                sent.append((index, placed))
        for future, count in Counter(placed.future for _, placed in sent).items():
            self._track(future, count, spec.kafka.cluster)
        return sent

    def _renew_if_broken(
        self, spec: EventSpec, producer: Any, failed: asyncio.Future[Any] | BaseException
    ) -> None:
        """Replace the spec's cluster's ``producer`` if ``failed`` shows its sequence state is
        lost (:data:`_BROKEN`): new sends wait for the new one; its pending records fail."""
        error = (_error(failed) if failed.done() else None) if isinstance(failed, asyncio.Future) else failed
        cluster = self._clusters[spec.kafka.cluster]
        if not isinstance(error, _BROKEN) or cluster.producer is not producer:
            return
        cluster.producer = None
        log.warning("gateway.producer_replaced", cluster=cluster.name, error=_describe(error))
        renewal = asyncio.create_task(self._renew(cluster, producer), name=f"gateway-renew-{cluster.name}")
        self._followers.add(renewal)
        renewal.add_done_callback(self._followers.discard)

    async def _renew(self, cluster: _Cluster, broken: Any) -> None:
        await _abandon(broken)
        if not self._stopping:
            await self._start_producer(cluster)  # else the readiness loop tries again

    def _track(self, future: asyncio.Future[Any], count: int, cluster: str) -> None:
        """Count ``count`` records of ``future``'s batch in flight until the producer settles it."""
        self._in_flight += count
        gauge = GATEWAY_IN_FLIGHT.labels(cluster)
        gauge.inc(count)

        def settled(done: asyncio.Future[Any]) -> None:
            self._in_flight -= count
            gauge.dec(count)
            _error(done)  # retrieved: a sync record answered 503 may fail later, unread

        future.add_done_callback(settled)

    def _acknowledged(self, placed: Placed) -> Outcome:
        """A sync record's outcome once its wait is over."""
        future = placed.future
        if not future.done():
            return Outcome(
                "failed", error=f"not acknowledged by Kafka within {self._deadline_s:g} s", retryable=True
            )
        error = _error(future)
        if error is not None:
            return _failure(error)
        metadata = future.result()
        return Outcome("acknowledged", partition=metadata.partition, offset=metadata.offset + placed.position)

    async def _follow(
        self,
        producer: Any,
        spec: EventSpec,
        pending: list[tuple[OutboundRecord, asyncio.Future[Any]]],
        deadline: float,
    ) -> None:
        """Async mode: see the records delivered; send failed ones again (backoff) until the
        deadline; spill what is then still undelivered, and at once what Kafka refuses for good."""
        backoff = Backoff(0.2, 5.0, jitter=True)
        last_error = "no answer from Kafka"
        retry: list[OutboundRecord] = []
        while pending or retry:
            await self._wait([f for _, f in pending], deadline)
            failed = [(r, e) for r, f in pending if f.done() and (e := _error(f)) is not None]
            for _, error in failed:
                self._renew_if_broken(spec, producer, error)
            pending = [(r, f) for r, f in pending if not f.done()]
            if failed:
                GATEWAY_ASYNC_FAILURES.labels(spec.name).inc(len(failed))
                last_error = _describe(failed[-1][1])
                final = [r for r, e in failed if not _transient(e)]
                if final:
                    await self._spill(spec, final, f"Kafka refused the record: {last_error}")
                retry += [r for r, e in failed if _transient(e)]
            if self._out_of_time(deadline):
                late = retry + [r for r, _ in pending]
                if late:
                    reason = (
                        f"not acknowledged by Kafka within {self._deadline_s:g} s (last: {last_error}); "
                        "the producer may still have delivered it later: look for its event_id in the topic "
                        "before producing it again"
                    )
                    key = await self._spill(spec, late, reason)
                    _log_late_deliveries(spec, key, [f for _, f in pending])
                return
            if retry:
                await self._pause(backoff.take(), deadline)
                producer = self._clusters[spec.kafka.cluster].producer
                if producer is None:  # being replaced: try again after the next pause
                    continue
                outcomes: list[Outcome | None] = [None] * len(retry)
                resent = await self._hand_over(producer, spec, retry, outcomes, deadline)
                pending += [(retry[i], p.future) for i, p in resent]
                refused = [(retry[i], o) for i, o in enumerate(outcomes) if o is not None and not o.retryable]
                if refused:
                    await self._spill(
                        spec, [r for r, _ in refused], f"Kafka refused the record: {refused[-1][1].error}"
                    )
                taken = {i for i, _ in resent}
                retry = [
                    r
                    for i, (r, o) in enumerate(zip(retry, outcomes, strict=True))
                    if i not in taken and (o is None or o.retryable)
                ]

    async def _wait(self, futures: list[asyncio.Future[Any]], deadline: float) -> None:
        """Until every future is done, the deadline, or stopping gives up waiting."""
        if not futures:
            return
        assert self._give_up is not None  # set by start()
        everything: asyncio.Future[Any] = asyncio.gather(*futures, return_exceptions=True)
        remaining = max(0.0, deadline - asyncio.get_running_loop().time())
        await asyncio.wait(
            [everything, self._give_up], timeout=remaining, return_when=asyncio.FIRST_COMPLETED
        )

    async def _pause(self, seconds: float, deadline: float) -> None:
        assert self._give_up is not None  # set by start()
        remaining = max(0.0, deadline - asyncio.get_running_loop().time())
        await asyncio.wait([self._give_up], timeout=min(seconds, remaining))

    def _out_of_time(self, deadline: float) -> bool:
        given_up = self._give_up is not None and self._give_up.done()
        return given_up or asyncio.get_running_loop().time() >= deadline

    async def _spill(self, spec: EventSpec, records: list[OutboundRecord], reason: str) -> str:
        self._spilling += len(records)
        try:
            return await self._spiller.spill(spec, records, reason)
        finally:
            self._spilling -= len(records)

    async def stop(self) -> None:
        """Stop taking records; give pending ones :data:`STOP_FLUSH_S` to be acknowledged, spill
        what async mode still holds, and close the producers without waiting for a lost broker."""
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        handing_over = [
            task for c in self._clusters.values() if c.batcher is not None for task in c.batcher.send_all()
        ]
        if handing_over:  # into the producers' queues, which the flushes below wait for
            await asyncio.wait(handing_over, timeout=self._stop_flush_s)
        producers = [c.producer for c in self._clusters.values() if c.producer is not None]
        flushes = [asyncio.ensure_future(p.flush()) for p in producers]
        waits = [*flushes, *self._followers]
        if waits:
            await asyncio.wait(waits, timeout=self._stop_flush_s)
        if self._give_up is not None and not self._give_up.done():
            self._give_up.set_result(None)
        if self._followers:
            _, left = await asyncio.wait(set(self._followers), timeout=STOP_SPILL_S)
            if left:
                log.error(
                    "gateway.records_lost", records=self._spilling, why="S3 did not take the spill in time"
                )
                for follower in left:
                    follower.cancel()
                await asyncio.wait(left)
        for flush, producer in zip(flushes, producers, strict=True):
            if flush.done():
                await producer.stop()
            else:
                await _abandon(producer)
                flush.cancel()
        log.info("gateway.delivery_stopped", in_flight=self._in_flight)


def _error(future: asyncio.Future[Any]) -> BaseException | None:
    """A done future's exception (a cancelled one: CancelledError), marking it retrieved."""
    if future.cancelled():
        return asyncio.CancelledError("the record's future was cancelled")
    return future.exception()


def _transient(error: BaseException) -> bool:
    """Whether sending the record again can help (a replaced producer's records: yes)."""
    return isinstance(error, _BROKEN) or (
        isinstance(error, aiokafka.errors.KafkaError) and is_transient(error)
    )


def _describe(error: BaseException) -> str:
    return clip(f"{type(error).__name__}: {error}", REASON_CHARS)


def _failure(error: BaseException) -> Outcome:
    return Outcome("failed", error=_describe(error), retryable=_transient(error))


def _log_late_deliveries(spec: EventSpec, key: str, futures: list[asyncio.Future[Any]]) -> None:
    """Log when records spilled while still in the producer reach Kafka after all (the spill
    file ``key`` then holds records the topic has too)."""
    if not futures:
        return

    def report(everything: asyncio.Future[list[Any]]) -> None:
        if everything.cancelled():
            return
        delivered = sum(1 for r in everything.result() if not isinstance(r, BaseException))
        if delivered:
            log.warning("gateway.spilled_then_delivered", event_type=spec.name, records=delivered, spill=key)

    asyncio.gather(*futures, return_exceptions=True).add_done_callback(report)


async def _abandon(producer: Any) -> None:
    """Close ``producer`` without waiting for its pending records: with idempotence its
    ``stop()`` waits for the broker for ever (aiokafka #1101). Its pending batches are failed
    first (their futures settle), then its sender stops; aiokafka has no public call for
    this, hence the private attributes, each checked."""
    accumulator = getattr(producer, "_message_accumulator", None)
    if accumulator is not None:
        accumulator.fail_all(
            aiokafka.errors.KafkaConnectionError("the gateway stopped before Kafka answered")
        )
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        await sender.close()
    await producer.stop()
