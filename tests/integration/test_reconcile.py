"""Reconcile: a notification lost on purpose does not lose data, and nothing loads twice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from urllib.parse import unquote_plus

import pytest

from loader.devstack import DevStack
from loader.devstack.provision import provision
from loader.ops.pipe_status import pipe_status
from loader.ops.reconcile import reconcile
from loader.store.aws import aws_client
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.manager import PipeManager
from loader.warehouse.sqs_loader import SqsLoader
from loader.worker.worker import StreamWorker
from tests.integration.helpers import make_spec, produce, sample_values
from tests.integration.loading import run_loader_until
from tests.integration.workers import run_worker_until
from tests.waiting import eventually

pytestmark = pytest.mark.integration


def test_reconcile_loads_the_file_whose_notification_was_lost(
    dev_stack: DevStack, unique_name: Callable[..., str]
) -> None:
    """Drop one notification: status shows one file pending, reconcile loads it once, then none pend."""
    settings = dev_stack.settings
    spec = make_spec(unique_name("rec", sep="_"), bucket="it-reconcile", partitions=2, max_records=500)
    queue_url = asyncio.run(provision(settings, [spec], queue_name=unique_name("rq")))
    produced = produce(settings, spec, sample_values(spec, 2_000))
    worker = StreamWorker(spec, settings)
    run_worker_until(worker, lambda: worker.stats.records_read >= produced)

    # Lose one notification on purpose.
    sqs = aws_client("sqs", settings.aws)

    def drop_one() -> str | None:
        """Take one message off the queue; the key it names, if it is a file's notification."""
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=2)[
            "Messages"
        ]:
            body = json.loads(message["Body"])
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            if "Records" in body:
                return unquote_plus(body["Records"][0]["s3"]["object"]["key"])
        return None

    dropped = eventually(drop_one, 60, what="a file's notification to drop", interval_s=0)

    with Warehouse(settings.snowflake) as warehouse:
        manager = PipeManager(warehouse, settings)
        manager.apply(spec)
        objects = manager.objects(spec)
        run_loader_until(
            SqsLoader(settings, [spec], queue_url=queue_url, wait_time_s=1),
            lambda loader: loader.stats.files_loaded >= worker.stats.files_written - 1,
            60,
            what="every file but the dropped one loaded",
            join_timeout_s=30,
        )
        assert warehouse.execute(objects.count_statement())[0][0] < produced  # the dropped file is missing

        store = S3Store(settings.aws, spec.s3.bucket)
        before = pipe_status(warehouse, store, objects)
        assert before.files_pending == 1
        assert before.files_in_s3 == worker.stats.files_written
        assert before.last_file_loaded is not None
        assert before.errors == []
        dry = reconcile(warehouse, store, objects, dry_run=True)
        assert len(dry.missing) == 1
        assert dry.missing == [dropped]
        report = reconcile(warehouse, store, objects)
        assert len(report.loaded) == 1
        assert report.failed == []
        assert pipe_status(warehouse, store, objects).files_pending == 0
        again = reconcile(warehouse, store, objects)
        assert again.missing == []
        assert again.already_loaded == report.files_in_s3
        rows = warehouse.execute(f'SELECT "_PARTITION", "_OFFSET" FROM {objects.table}')
    assert len(rows) == len(set(rows)) == produced
