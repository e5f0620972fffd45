"""The gateway's producing side against the real local Kafka: what it answers is what the topic holds."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loader.config.settings import Settings
from loader.config.spec import EventSpec
from loader.devstack import DevStack
from loader.devstack.provision import ensure_canary_topics
from loader.gateway.delivery import KafkaDelivery
from loader.gateway.outbound import OutboundRecord
from loader.store.s3 import S3Store
from tests.integration.helpers import read_topic, spec_on_disk
from tests.waiting import eventually_async

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def gateway_settings(settings: Settings, **gateway: Any) -> Settings:
    """``settings`` with the gateway section changed."""
    return settings.model_copy(update={"gateway": settings.gateway.model_copy(update=gateway)})


def records(count: int) -> list[OutboundRecord]:
    """Records with an ``event_id`` header each (the value repeats it), as the HTTP side builds them."""
    now = int(time.time() * 1000)
    made = []
    for _ in range(count):
        event_id = str(uuid.uuid4())
        made.append(
            OutboundRecord(
                value=f'{{"id": "{event_id}"}}'.encode(),
                key=event_id.encode(),
                headers=(("event_id", event_id.encode()), ("source", b"gateway-test")),
                timestamp_ms=now,
            )
        )
    return made


def event_ids(consumed: list[Any]) -> list[str]:
    return [dict(r.headers)["event_id"].decode() for r in consumed]


@pytest.fixture
def event(dev_stack: DevStack, tmp_path: Path, unique_name: Callable[..., str]) -> tuple[EventSpec, S3Store]:
    spec, store = spec_on_disk(
        dev_stack.settings,
        tmp_path / "specs",
        unique_name("gwdel", sep="_"),
        bucket="gateway-delivery",
        partitions=3,
    )
    asyncio.run(ensure_canary_topics(dev_stack.settings, [spec]))
    return spec, store


async def ready(delivery: KafkaDelivery) -> None:
    await eventually_async(
        lambda: not delivery.readiness(), 60, what="the gateway ready", detail=delivery.readiness
    )


def test_sync_acknowledges_real_partitions_and_offsets(
    dev_stack: DevStack, event: tuple[EventSpec, S3Store]
) -> None:
    """Sync mode answers each record acknowledged at the partition and offset where the topic holds it."""
    spec, _ = event
    sent = records(60)

    async def run() -> list[Any]:
        delivery = KafkaDelivery([spec], gateway_settings(dev_stack.settings, mode="sync"))
        await delivery.start()
        try:
            await ready(delivery)
            return await delivery.send(spec, sent)
        finally:
            await delivery.stop()

    outcomes = asyncio.run(run())
    assert {o.state for o in outcomes} == {"acknowledged"}
    consumed = {(r.partition, r.offset): r for r in read_topic(dev_stack.settings, spec, spec.kafka.topic)}
    for record, outcome in zip(sent, outcomes, strict=True):
        stored = consumed[(outcome.partition, outcome.offset)]
        assert (stored.value, stored.key, stored.timestamp) == (record.value, record.key, record.timestamp_ms)
        assert tuple(stored.headers) == record.headers
    assert len(consumed) == len(sent)


def test_async_buffers_then_delivers(dev_stack: DevStack, event: tuple[EventSpec, S3Store]) -> None:
    """Async answers buffered before any ack; then every record is in the topic, none spilled."""
    spec, store = event
    sent = records(200)

    async def run() -> list[Any]:
        delivery = KafkaDelivery([spec], gateway_settings(dev_stack.settings, mode="async", linger_ms=500))
        await delivery.start()
        try:
            await ready(delivery)
            outcomes = await delivery.send(spec, sent)
            assert delivery.in_flight == len(sent)  # lingering 500 ms: answered before any ack
            await eventually_async(lambda: delivery.in_flight == 0, 60, what="every record acknowledged")
            return outcomes
        finally:
            await delivery.stop()

    outcomes = asyncio.run(run())
    assert {o.state for o in outcomes} == {"buffered"}
    assert sorted(event_ids(read_topic(dev_stack.settings, spec, spec.kafka.topic))) == sorted(
        dict(r.headers)["event_id"].decode() for r in sent
    )
    assert not list(store.list_objects(spec.dead_letter_prefix))


def test_in_flight_cap_answers_failed_retryable(
    dev_stack: DevStack, event: tuple[EventSpec, S3Store]
) -> None:
    """Beyond max_in_flight_records a request is refused at once (failed, retryable), none of it produced."""
    spec, _ = event
    first, second = records(8), records(5)

    async def run() -> tuple[list[Any], list[Any]]:
        settings = gateway_settings(
            dev_stack.settings, mode="async", linger_ms=1000, max_in_flight_records=10
        )
        delivery = KafkaDelivery([spec], settings)
        await delivery.start()
        try:
            await ready(delivery)
            taken = await delivery.send(spec, first)
            refused = await delivery.send(spec, second)
            await eventually_async(lambda: delivery.in_flight == 0, 60, what="the first request acknowledged")
            return taken, refused
        finally:
            await delivery.stop()

    taken, refused = asyncio.run(run())
    assert {o.state for o in taken} == {"buffered"}
    assert all(o.state == "failed" and o.retryable and "in flight" in (o.error or "") for o in refused)
    in_topic = set(event_ids(read_topic(dev_stack.settings, spec, spec.kafka.topic)))
    assert in_topic == {dict(r.headers)["event_id"].decode() for r in first}


def test_ready_only_after_metadata_and_canary(
    dev_stack: DevStack, event: tuple[EventSpec, S3Store], unique_name: Callable[..., str]
) -> None:
    """Not ready while a topic or the canary topic is missing (named); ready after a canary ack."""
    spec, _ = event
    canary = dev_stack.settings.gateway.canary_topic
    missing_topic = spec.model_copy(
        update={"kafka": spec.kafka.model_copy(update={"topic": unique_name("absent")})}
    )
    no_canary = gateway_settings(dev_stack.settings, canary_topic=unique_name("no-canary"))

    def canary_count() -> int:
        like = spec.model_copy(
            update={"kafka": spec.kafka.model_copy(update={"topic": canary, "partitions": 1})}
        )
        return len(read_topic(dev_stack.settings, like, canary))

    async def down_after_checks(specs: list[EventSpec], settings: Settings) -> dict[str, str]:
        delivery = KafkaDelivery(specs, settings, check_interval_s=0.5)
        await delivery.start()
        try:
            assert delivery.readiness()  # not before a check has answered
            await asyncio.sleep(5)
            return delivery.readiness()
        finally:
            await delivery.stop()

    down = asyncio.run(down_after_checks([missing_topic], dev_stack.settings))
    assert list(down) == [f"topic:{missing_topic.kafka.topic}"], down
    down = asyncio.run(down_after_checks([spec], no_canary))
    assert list(down) == ["canary:default"] and "not on Kafka cluster" in down["canary:default"], down

    before = canary_count()

    async def ready_run() -> None:
        delivery = KafkaDelivery([spec], dev_stack.settings)
        await delivery.start()
        try:
            await ready(delivery)
        finally:
            await delivery.stop()

    asyncio.run(ready_run())
    assert canary_count() > before
