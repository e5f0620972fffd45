"""Create the infrastructure the specs need where it is missing: Kafka topics,
buckets, the notifications queue (with its dead-letter queue) and the
buckets' notification rules. Used by the demo, tests and ``loader dev up``;
in production the same pieces come from infrastructure as code.
"""

from __future__ import annotations

from collections.abc import Sequence

from loader.config.settings import Settings
from loader.config.spec import EventSpec
from loader.consume.kafka import ensure_topic
from loader.notify.provision import ensure_notification_rules, ensure_queue, queue_arn
from loader.store.s3 import S3Store

__all__ = ["provision"]


async def provision(settings: Settings, specs: Sequence[EventSpec], *, queue_name: str) -> str:
    """Topics, buckets, queue and notification rules for ``specs``; returns the queue URL."""
    for spec in specs:
        await ensure_topic(spec, settings.kafka)
    queue_url = settings.aws.notifications_queue_url or ensure_queue(settings, queue_name)
    arn = queue_arn(settings, queue_url)
    by_bucket: dict[str, dict[str, str]] = {}
    for spec in specs:
        S3Store(settings.aws, spec.s3.bucket).create_bucket()
        by_bucket.setdefault(spec.s3.bucket, {})[spec.data_prefix] = arn
    for bucket, rules in by_bucket.items():
        ensure_notification_rules(settings, bucket, rules)
    return queue_url
