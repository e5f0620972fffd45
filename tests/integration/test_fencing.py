"""Fencing: a commit under a generation the group has left behind is refused by the broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from loader.checkpoint.committer import Committer, Generation
from loader.checkpoint.marker import PendingFile
from loader.consume.kafka import ensure_topic
from loader.devstack import DevStack
from loader.errors import FencedError
from tests.integration.helpers import make_spec
from tests.waiting import eventually_async

pytestmark = pytest.mark.integration


def test_commits_under_an_old_generation_are_refused(
    dev_stack: DevStack, unique_name: Callable[..., str]
) -> None:
    """A zombie's commits carry its pinned generation, never -1, so the broker refuses them
    even when the group has moved on or is empty (where a -1 "admin" commit would be accepted)."""
    settings = dev_stack.settings
    spec = make_spec(unique_name("fence", sep="_"), bucket="it-fence", partitions=1)
    asyncio.run(ensure_topic(spec, settings.kafka))
    bootstrap = settings.kafka.bootstrap_for("default")
    tp = TopicPartition(spec.kafka.topic, 0)
    pending = PendingFile(first=0, last=9, period=1, rg=10, key="k", dlq="d")

    async def scenario() -> tuple[Generation, Generation, str | None]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()

        async def member() -> AIOKafkaConsumer:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=bootstrap,
                group_id=spec.consumer_group,
                enable_auto_commit=False,
                session_timeout_ms=6000,
                heartbeat_interval_ms=1000,
            )
            await consumer.start()
            consumer.subscribe([spec.kafka.topic])

            async def assigned() -> bool:
                await consumer.getmany(timeout_ms=200)
                return bool(consumer.assignment())

            await eventually_async(assigned, 60, what="the group to assign the member its partitions")
            return consumer

        first = await member()
        committer = Committer(first, admin, spec.consumer_group)
        old = committer.current_generation()
        await committer.record_pending(tp, pending, old)  # the owner's commit is accepted
        await first.stop()  # leaves: the group is empty now
        second = await member()
        newer = Committer(second, admin, spec.consumer_group)
        try:
            with pytest.raises(FencedError):
                await newer.record_done(tp, 9, old)  # a zombie's commit under the old generation
            with pytest.raises(FencedError):
                await newer.record_done(tp, 9, Generation(-1, ""))  # never sent as an admin commit
            current = newer.current_generation()
            committed = (await newer.fetch([tp]))[tp]
        finally:
            await second.stop()
            await admin.close()
        return old, current, committed.pending.key if committed.pending else None

    old, current, pending_key = asyncio.run(scenario())
    assert current.generation_id > old.generation_id
    assert pending_key == "k"  # the refused commits changed nothing
