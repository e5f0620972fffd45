"""Create the infrastructure the specs need where it is missing: Kafka topics (and the
event gateway's canary topic on every cluster the specs name), buckets, the
notifications queue (with its dead-letter queue) and the buckets' notification rules.

:func:`provision` serves the demo and tests, on services they started
themselves; :func:`provision_dev_stack` serves ``loader dev up`` and
``loader dev provision``, and provisions only on the services the running dev
stack started (:class:`~loader.devstack.targets.DevTargets`). In production
the same pieces come from infrastructure as code. Every step creates only
what is missing, so running it again changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from loader.config.settings import Settings
from loader.config.spec import EventSpec
from loader.consume.kafka import ensure_topic
from loader.devstack.stack import record_settings
from loader.devstack.targets import DevTargets
from loader.notify.provision import ensure_notification_rules, ensure_queue, queue_arn
from loader.store.s3 import S3Store

__all__ = ["DEV_QUEUE", "DevProvisioning", "ensure_canary_topics", "provision", "provision_dev_stack"]

DEV_QUEUE = "loader-notifications"
"""The notifications queue of the demo and the dev stack (its dead-letter queue adds ``-dlq``)."""

log = structlog.get_logger("loader.devstack")


async def provision(settings: Settings, specs: Sequence[EventSpec], *, queue_name: str) -> str:
    """Topics, buckets, queue and notification rules for ``specs``; returns the queue URL."""
    await _ensure_topics(settings, specs)
    return _ensure_storage(settings, specs, queue_name=queue_name)


async def _ensure_topics(settings: Settings, specs: Sequence[EventSpec]) -> None:
    for spec in specs:
        await ensure_topic(spec, settings.kafka)
    await ensure_canary_topics(settings, specs)


async def ensure_canary_topics(settings: Settings, specs: Sequence[EventSpec]) -> list[str]:
    """The gateway's canary topic (``LOADER_GATEWAY__CANARY_TOPIC``, one partition) on every
    cluster ``specs`` name, where it is missing: ``/readyz`` needs a record acknowledged there.
    Returns the clusters it was created on."""
    created = []
    by_cluster = {spec.kafka.cluster: spec for spec in specs}
    for cluster, spec in sorted(by_cluster.items()):
        kafka = spec.kafka.model_copy(update={"topic": settings.gateway.canary_topic, "partitions": 1})
        if await ensure_topic(spec.model_copy(update={"kafka": kafka}), settings.kafka):
            created.append(cluster)
    return created


def _ensure_storage(settings: Settings, specs: Sequence[EventSpec], *, queue_name: str) -> str:
    """Buckets, the queue (unless one is configured) and each bucket's rules; the queue URL."""
    queue_url = settings.aws.notifications_queue_url or ensure_queue(settings, queue_name)
    arn = queue_arn(settings, queue_url)
    by_bucket: dict[str, dict[str, str]] = {}
    for spec in specs:
        S3Store(settings.aws, spec.s3.bucket).create_bucket()
        by_bucket.setdefault(spec.s3.bucket, {})[spec.data_prefix] = arn
    for bucket, rules in by_bucket.items():
        ensure_notification_rules(settings, bucket, rules)
    return queue_url


@dataclass
class DevProvisioning:
    """What :func:`provision_dev_stack` made sure of, and what it left alone and why."""

    topics: list[str] = field(default_factory=list)
    buckets: list[str] = field(default_factory=list)
    queue_url: str | None = None
    left_alone: list[str] = field(default_factory=list)

    @property
    def nothing(self) -> bool:
        """Whether everything was left alone: nothing asked for is on the dev stack's services."""
        return not self.topics and self.queue_url is None and bool(self.left_alone)


def provision_dev_stack(specs: Sequence[EventSpec]) -> DevProvisioning:
    """Provision ``specs`` on the running dev stack's own services, and record the queue URL.

    A topic is created only on the Kafka the stack started, buckets, queue and
    rules only on its moto; anything configured elsewhere is left alone and
    listed with the reason (:attr:`DevProvisioning.nothing` when that is all).
    Raises DevStackError when no dev stack is running.
    """
    targets = DevTargets.running()
    done = DevProvisioning()
    on_kafka = []
    for spec in specs:
        refusal = targets.kafka_refusal(spec)
        if refusal is None:
            on_kafka.append(spec)
        else:
            done.left_alone.append(refusal)
    if refusal := targets.aws_refusal():
        done.left_alone.append(refusal)
    elif specs:
        done.queue_url = _ensure_storage(targets.settings, specs, queue_name=DEV_QUEUE)
        done.buckets = sorted({spec.s3.bucket for spec in specs})
        # pipes run reads the queue URL from the settings, which merge the state file.
        record_settings(targets.stack, "aws", notifications_queue_url=done.queue_url)
    asyncio.run(_ensure_topics(targets.settings, on_kafka))
    done.topics = [spec.kafka.topic for spec in on_kafka]
    log.info("devstack.provisioned", topics=done.topics, buckets=done.buckets, left_alone=done.left_alone)
    return done
