"""The notifications queue (with its dead-letter queue) and the buckets'
notification rules that send ObjectCreated events to it.

``loader pipes apply`` merges an event's rule in ``auto-ingest`` mode; the
local stack (:mod:`loader.devstack.provision`) and tests create the queue. In
production the queue comes from infrastructure as code.
"""

from __future__ import annotations

import json
from typing import Any

import structlog

from loader.config.settings import Settings
from loader.store.aws import aws_client, storage_errors

__all__ = ["ensure_notification_rules", "ensure_queue", "queue_arn"]

log = structlog.get_logger("loader.notify")

RULE_ID_PREFIX = "loader-"


def ensure_queue(settings: Settings, name: str, *, max_receive_count: int = 5) -> str:
    """Create the notifications queue and its dead-letter queue; return the queue URL."""
    sqs = aws_client("sqs", settings.aws)
    with storage_errors(f"create queue {name}"):
        dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = queue_arn(settings, dlq_url)
    with storage_errors(f"create queue {name}"):
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)})
        url: str = sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": redrive})["QueueUrl"]
    return url


def queue_arn(settings: Settings, queue_url: str) -> str:
    sqs = aws_client("sqs", settings.aws)
    with storage_errors("read queue attributes"):
        arn: str = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
    return arn


def ensure_notification_rules(settings: Settings, bucket: str, rules: dict[str, str]) -> bool:
    """Merge ``{prefix: queue ARN}`` ObjectCreated rules into the bucket's notification
    configuration. S3 replaces the whole configuration on write, so read, merge, write;
    rules that others own are kept. Returns True if the configuration changed."""
    s3 = aws_client("s3", settings.aws)
    with storage_errors(f"read notifications of {bucket}"):
        current = s3.get_bucket_notification_configuration(Bucket=bucket)
    current.pop("ResponseMetadata", None)
    queues: list[dict[str, Any]] = current.get("QueueConfigurations", [])
    wanted = {
        f"{RULE_ID_PREFIX}{prefix.strip('/').replace('/', '-')}": {
            "Id": f"{RULE_ID_PREFIX}{prefix.strip('/').replace('/', '-')}",
            "QueueArn": arn,
            "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
        }
        for prefix, arn in rules.items()
    }
    existing = {q.get("Id"): q for q in queues}
    if all(_same_rule(existing.get(rule_id), rule) for rule_id, rule in wanted.items()):
        return False
    merged = [q for q in queues if q.get("Id") not in wanted] + list(wanted.values())
    with storage_errors(f"write notifications of {bucket}"):
        s3.put_bucket_notification_configuration(
            Bucket=bucket, NotificationConfiguration={**current, "QueueConfigurations": merged}
        )
    log.info("notifications_updated", bucket=bucket, prefixes=sorted(rules))
    return True


def _same_rule(have: dict[str, Any] | None, want: dict[str, Any]) -> bool:
    if have is None:
        return False
    rules = {
        r["Name"].lower(): r["Value"] for r in have.get("Filter", {}).get("Key", {}).get("FilterRules", [])
    }
    want_prefix = want["Filter"]["Key"]["FilterRules"][0]["Value"]
    return bool(have.get("QueueArn") == want["QueueArn"] and rules.get("prefix") == want_prefix)
