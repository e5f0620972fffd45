"""Every object a worker writes carries the server-side encryption the settings request."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from loader.config.settings import AwsSettings
from loader.consume.kafka import ensure_topic
from loader.devstack import DevStack
from loader.store.aws import aws_client
from loader.store.s3 import S3Store
from loader.worker.worker import StreamWorker
from tests.integration.helpers import make_spec, produce, read_files, sample_values
from tests.integration.workers import run_worker_until

pytestmark = pytest.mark.integration

BROKEN = [b'{"event_id": "x"', b"", b"[1, 2]"]
MULTIPART_THRESHOLD = 32 * 1024
"""Data files (1,500 records) are larger and go up in parts; dead-letter files are smaller
and go up in one PUT, so one run writes both ways."""


@pytest.mark.parametrize("sse", ["AES256", "aws:kms"])
def test_worker_objects_carry_the_requested_encryption(
    dev_stack: DevStack, unique_name: Callable[..., str], sse: str
) -> None:
    """Data and dead-letter files, single PUTs and multipart uploads alike, are stored encrypted as set."""
    base = dev_stack.settings
    key_arn = None
    if sse == "aws:kms":
        kms = aws_client("kms", base.aws)
        key_arn = kms.create_key(Description="event-loader encryption test")["KeyMetadata"]["Arn"]
    aws = AwsSettings.model_validate(base.aws.model_dump() | {"sse": sse, "sse_kms_key_id": key_arn})
    settings = base.model_copy(update={"aws": aws})
    name = unique_name("sse", sep="_")
    spec = make_spec(name, bucket="it-sse", partitions=1, max_age_s=3600)
    asyncio.run(ensure_topic(spec, settings.kafka))
    store = S3Store(settings.aws, spec.s3.bucket, multipart_threshold=MULTIPART_THRESHOLD)
    store.create_bucket()
    produced = produce(settings, spec, sample_values(spec, 1500) + [(b"bad", value) for value in BROKEN])

    worker = StreamWorker(spec, settings, store=store)
    run_worker_until(worker, lambda: worker.stats.records_read >= produced)

    data, dead = read_files(store, spec.data_prefix), read_files(store, spec.dead_letter_prefix)
    assert sum(t.num_rows for t in data.values()) == 1500
    assert sum(t.num_rows for t in dead.values()) == len(BROKEN)
    s3 = aws_client("s3", base.aws)
    multipart = {}
    for key in [*data, *dead]:
        head = s3.head_object(Bucket=spec.s3.bucket, Key=key)
        assert head.get("ServerSideEncryption") == sse, key
        assert head.get("SSEKMSKeyId") == key_arn, key
        # A multipart upload's ETag is "<md5 of the parts' md5s>-<number of parts>".
        multipart[key] = "-" in head["ETag"]
        assert multipart[key] == (head["ContentLength"] > MULTIPART_THRESHOLD), key
    assert any(multipart[key] for key in data), "no data file went up in parts"
    assert not any(multipart[key] for key in dead), "dead letters went up in parts"
