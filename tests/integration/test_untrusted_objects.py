"""No single notification or S3 object stops the SQS loader, and nothing valid is lost.

Real moto S3/SQS and fakesnow: a key that tries to leave the stage, an object that only
looks like Parquet among valid files, a zero-byte object, and reconcile over all of them.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_plus

import pytest

from loader.config.settings import Settings
from loader.config.spec import EventSpec
from loader.devstack import DevStack
from loader.notify.provision import ensure_notification_rules, ensure_queue, queue_arn
from loader.ops.reconcile import reconcile
from loader.store.aws import aws_client
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.manager import PipeManager
from loader.warehouse.objects import EventObjects
from loader.warehouse.sqs_loader import SqsLoader
from tests.integration.helpers import make_spec, upload_sample_file
from tests.integration.loading import run_loader_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ROWS_PER_FILE = 20


@dataclass
class Pipeline:
    settings: Settings
    spec: EventSpec
    store: S3Store
    objects: EventObjects
    warehouse: Warehouse
    queue_url: str

    def rows(self) -> int:
        return int(self.warehouse.execute(self.objects.count_statement())[0][0])

    def keys_on_queues(self) -> list[str]:
        """Keys named by the messages left on the queue and its dead-letter queue."""
        sqs = aws_client("sqs", self.settings.aws)
        keys = []
        for url in (self.queue_url, self.queue_url + "-dlq"):
            while messages := sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=60
            ).get("Messages", []):
                for message in messages:
                    for record in json.loads(message["Body"]).get("Records", []):
                        keys.append(record["s3"]["object"]["key"])
        return keys


@pytest.fixture
def pipeline(dev_stack: DevStack, unique_name: Callable[..., str]) -> Iterator[Pipeline]:
    """An applied event type whose data prefix notifies its own queue (no Kafka involved)."""
    # Short statements: fakesnow answers a COPY of a broken file with HTTP 500, which the
    # connector retries until the statement's timeout.
    settings = dev_stack.settings.model_copy(
        update={"snowflake": dev_stack.settings.snowflake.model_copy(update={"statement_timeout_s": 5})}
    )
    spec = make_spec(unique_name("untrusted", sep="_"), bucket="it-untrusted")
    store = S3Store(settings.aws, spec.s3.bucket)
    store.create_bucket()
    queue_url = ensure_queue(settings, unique_name("uq"))
    ensure_notification_rules(settings, spec.s3.bucket, {spec.data_prefix: queue_arn(settings, queue_url)})
    with Warehouse(settings.snowflake) as warehouse:
        manager = PipeManager(warehouse, settings)
        manager.apply(spec)
        yield Pipeline(settings, spec, store, manager.objects(spec), warehouse, queue_url)


def _run_loader_until(
    pipeline: Pipeline, done: Callable[[SqsLoader], bool], *, what: str, timeout_s: float = 90
) -> SqsLoader:
    """Run the SQS loader on a thread until ``done``; it must still be running then."""
    loader = SqsLoader(
        pipeline.settings,
        [pipeline.spec],
        queue_url=pipeline.queue_url,
        wait_time_s=1,
        visibility_timeout_s=2,
    )
    return run_loader_until(loader, done, timeout_s, what=what)


def _notify(pipeline: Pipeline, key: str) -> None:
    """Send the notification S3 would send for ``key`` (as a stranger could)."""
    record = {
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": pipeline.spec.s3.bucket}, "object": {"key": quote_plus(key)}},
    }
    sqs = aws_client("sqs", pipeline.settings.aws)
    sqs.send_message(QueueUrl=pipeline.queue_url, MessageBody=json.dumps({"Records": [record]}))


def _data_key_like(valid: str, first: int) -> str:
    """A key of the exact data-file form next to ``valid``, for another offset range."""
    return valid.rsplit("/", 1)[0] + f"/p0000-{first:020d}-{first:020d}.parquet"


def test_a_key_that_leaves_the_stage_is_refused_and_kept_for_the_redrive_policy(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """A notified `../` key under the data prefix is refused, nothing is written outside the stage,
    nothing loads, and its message is left for the redrive policy."""
    key = f"{pipeline.spec.data_prefix}../../pwned/escape.parquet"
    upload_sample_file(pipeline.store, pipeline.spec, 0, ROWS_PER_FILE)
    _notify(pipeline, key)
    loader = _run_loader_until(
        pipeline,
        lambda ldr: key in ldr.stats.not_loaded and ldr.stats.files_loaded == 1,
        what="the escaping key refused and the valid file loaded",
    )
    assert loader.stats.not_loaded[key].startswith("REFUSED: not a data file name")
    local = pipeline.settings.snowflake.local_stage_dir
    assert local is not None
    assert not (local / pipeline.spec.s3.bucket / "events" / "pwned").exists()
    assert pipeline.rows() == ROWS_PER_FILE
    time.sleep(2.5)  # the loader's visibility timeout
    assert pipeline.keys_on_queues() == [quote_plus(key)]


def test_a_bad_file_among_good_ones_fails_alone(pipeline: Pipeline) -> None:
    """An object with Parquet's magic bytes but no Parquet inside, notified with three valid files:
    the three load, the bad one is reported with Snowflake's error, only its message remains;
    reconcile then lists it with the reason and loads nothing twice."""
    valid = [upload_sample_file(pipeline.store, pipeline.spec, i * 100, ROWS_PER_FILE) for i in range(3)]
    bad = _data_key_like(valid[0], 999)
    pipeline.store.upload_fileobj(io.BytesIO(b"PAR1" + b"not parquet at all" * 10 + b"PAR1"), bad)
    loader = _run_loader_until(
        pipeline,
        lambda ldr: ldr.stats.files_loaded == 3 and bad in ldr.stats.not_loaded,
        what="the three valid files loaded and the bad one failed",
    )
    assert sorted(loader.stats.loaded_keys) == sorted(valid)
    assert loader.stats.not_loaded[bad].startswith("LOAD_FAILED: ")
    assert pipeline.rows() == 3 * ROWS_PER_FILE
    time.sleep(2.5)  # the loader's visibility timeout
    assert set(pipeline.keys_on_queues()) == {quote_plus(bad)}

    report = reconcile(pipeline.warehouse, pipeline.store, pipeline.objects)
    assert report.missing == [bad]
    assert report.loaded == []
    assert report.failed == [bad]
    assert report.reasons[bad].startswith("LOAD_FAILED: ")
    assert pipeline.rows() == 3 * ROWS_PER_FILE


def test_a_zero_byte_object_is_refused_before_any_copy(pipeline: Pipeline) -> None:
    """A zero-byte object named like a data file is refused by its size, never reaches the stage or
    a COPY, and the loader goes on loading the next file."""
    valid = upload_sample_file(pipeline.store, pipeline.spec, 0, ROWS_PER_FILE)
    empty = _data_key_like(valid, 500)
    text = _data_key_like(valid, 600)
    pipeline.store.upload_fileobj(io.BytesIO(b""), empty)
    pipeline.store.upload_fileobj(io.BytesIO(b"a CSV file, say: id,name\n1,x\n"), text)
    loader = _run_loader_until(
        pipeline,
        lambda ldr: ldr.stats.files_loaded == 1 and {empty, text} <= ldr.stats.not_loaded.keys(),
        what="the valid file loaded and both impostors refused",
        timeout_s=60,
    )
    assert loader.stats.not_loaded[empty] == "REFUSED: 0 bytes: too small to be a Parquet file"
    assert loader.stats.not_loaded[text] == (
        "REFUSED: not a Parquet file (no PAR1 magic bytes at its start and end)"
    )
    local = pipeline.settings.snowflake.local_stage_dir
    assert local is not None
    assert not (local / pipeline.spec.s3.bucket / empty).exists()
    assert not (local / pipeline.spec.s3.bucket / text).exists()
    assert pipeline.rows() == ROWS_PER_FILE


def test_reconcile_lists_what_it_could_not_load_and_why(pipeline: Pipeline) -> None:
    """Reconcile loads the good files and lists every other object under the data prefix
    (a foreign name, an empty object) with the reason, loading it never."""
    valid = upload_sample_file(pipeline.store, pipeline.spec, 0, ROWS_PER_FILE)
    empty = _data_key_like(valid, 500)
    foreign = f"{pipeline.spec.data_prefix}notes/readme.txt"
    pipeline.store.upload_fileobj(io.BytesIO(b""), empty)
    pipeline.store.upload_fileobj(io.BytesIO(b"hello"), foreign)
    report = reconcile(pipeline.warehouse, pipeline.store, pipeline.objects)
    assert report.loaded == [valid]
    assert sorted(report.failed) == sorted([empty, foreign])
    assert report.reasons == {
        empty: "REFUSED: 0 bytes: too small to be a Parquet file",
        foreign: "REFUSED: not a data file name the workers write",
    }
    assert pipeline.rows() == ROWS_PER_FILE
