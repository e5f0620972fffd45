"""`loader pipes run` on the real local services: what ends it (configuration) and what never does
(hostile messages)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from loader.config.spec import EventSpec
from loader.devstack import DevStack
from loader.metrics import exposition, render
from loader.notify.provision import ensure_notification_rules, ensure_queue, queue_arn
from loader.store.aws import aws_client
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.manager import PipeManager
from loader.warehouse.sqs_loader import SqsLoader
from tests.integration.helpers import make_spec, upload_sample_file
from tests.integration.loading import running
from tests.integration.workers import cli_env

pytestmark = pytest.mark.integration


def _queued(queue_url: str, dev_stack: DevStack) -> int:
    """Messages on the queue, visible or not (a deleted one is neither)."""
    attributes = aws_client("sqs", dev_stack.settings.aws).get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def _unreadable_counted() -> float:
    """loader_errors_total of unreadable messages (in this process)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(render(exposition()).decode())
        for sample in family.samples
        if sample.name == "loader_errors_total"
        and sample.labels == {"event": "", "component": "sqs", "kind": "unreadable_message"}
    )


def _spec_file(spec: EventSpec, specs_dir: Path) -> None:
    specs_dir.mkdir()
    document = spec.model_dump(by_alias=True, mode="json", exclude={"source_path"})
    (specs_dir / f"{spec.name}.yaml").write_text(yaml.safe_dump(document))


def test_a_queue_that_does_not_exist_ends_pipes_run_with_a_message(
    dev_stack: DevStack, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    """A queue URL that names no queue is a configuration error: exit 2, a message naming the
    queue setting to fix, no traceback (not retried as an outage)."""
    settings = dev_stack.settings
    assert settings.aws.endpoint_url is not None
    spec = make_spec(unique_name("noq", sep="_"), bucket="it-pipes-run")
    S3Store(settings.aws, spec.s3.bucket).create_bucket()
    _spec_file(spec, tmp_path / "specs")
    missing = f"{settings.aws.endpoint_url}/123456789012/{unique_name('missing')}"
    command = [sys.executable, "-m", "loader", "pipes", "run", spec.name, "--specs", str(tmp_path / "specs")]
    result = subprocess.run(
        [*command, "--queue-url", missing, "--metrics-port", "0"],
        env=cli_env(settings, LOADER_LOG_FORMAT="json"),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "error: " in result.stderr
    assert "NonExistentQueue" in result.stderr or "QueueDoesNotExist" in result.stderr
    assert "--queue-url" in result.stderr
    assert "Traceback" not in output


def test_hostile_messages_are_counted_and_left_while_files_load(
    dev_stack: DevStack, unique_name: Callable[..., str]
) -> None:
    """Regression: deeply nested arrays and a null key crashed the loader. Now such messages are
    counted as unreadable and left on the queue (for its redrive policy), and files still load."""
    settings = dev_stack.settings
    if dev_stack.service("fakesnow") is None:
        pytest.skip("needs the local fakesnow server started by the dev stack")
    spec = make_spec(unique_name("hostile", sep="_"), bucket="it-pipes-run")
    store = S3Store(settings.aws, spec.s3.bucket)
    store.create_bucket()
    queue_url = ensure_queue(settings, unique_name("hq"))
    ensure_notification_rules(settings, spec.s3.bucket, {spec.data_prefix: queue_arn(settings, queue_url)})
    with Warehouse(settings.snowflake) as warehouse:
        PipeManager(warehouse, settings).apply(spec)
    sqs = aws_client("sqs", settings.aws)
    for message in sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1).get("Messages", []):
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])  # the s3:TestEvent
    null_key = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": spec.s3.bucket}, "object": {"key": None}},
            }
        ]
    }
    hostile = ["[" * 50_000 + "]" * 50_000, json.dumps(null_key)]
    for body in hostile:
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    key = upload_sample_file(store, spec, 0, 10)
    counted = _unreadable_counted()
    loader = SqsLoader(settings, [spec], queue_url=queue_url, wait_time_s=1, visibility_timeout_s=5)
    with running(loader) as handle:
        handle.until(
            lambda ldr: key in ldr.stats.loaded_keys and ldr.stats.unreadable >= 2 * len(hostile),
            120,
            what="the file loaded and each hostile message read (and left) twice",
        )
        assert handle.alive
    assert _unreadable_counted() - counted >= 2 * len(hostile)
    # Never deleted: still on the queue, or moved by its redrive policy after maxReceiveCount reads.
    assert _queued(queue_url, dev_stack) + _queued(f"{queue_url}-dlq", dev_stack) == len(hostile)


def test_a_file_of_no_loaded_event_is_left_on_the_queue_not_deleted(
    dev_stack: DevStack, unique_name: Callable[..., str]
) -> None:
    """Regression: a notification of an event the loader does not load (a spec added after it
    started) was deleted, so that file waited for a reconcile. Now it is counted and left for the
    redrive policy, while the loaded event's files still load and their messages go."""
    settings = dev_stack.settings
    if dev_stack.service("fakesnow") is None:
        pytest.skip("needs the local fakesnow server started by the dev stack")
    loaded = make_spec(unique_name("known", sep="_"), bucket="it-pipes-run")
    added_later = make_spec(unique_name("later", sep="_"), bucket="it-pipes-run")
    store = S3Store(settings.aws, loaded.s3.bucket)
    store.create_bucket()
    queue_url = ensure_queue(settings, unique_name("uq"))
    arn = queue_arn(settings, queue_url)
    ensure_notification_rules(
        settings, loaded.s3.bucket, {loaded.data_prefix: arn, added_later.data_prefix: arn}
    )
    with Warehouse(settings.snowflake) as warehouse:
        PipeManager(warehouse, settings).apply(loaded)
    sqs = aws_client("sqs", settings.aws)
    for message in sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1).get("Messages", []):
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])  # the s3:TestEvent
    upload_sample_file(store, added_later, 0, 10)
    key = upload_sample_file(store, loaded, 0, 10)
    loader = SqsLoader(settings, [loaded], queue_url=queue_url, wait_time_s=1, visibility_timeout_s=5)
    with running(loader) as handle:
        handle.until(
            lambda ldr: key in ldr.stats.loaded_keys and ldr.stats.unknown_event >= 2,
            120,
            what="the loaded event's file loaded and the other event's notification read (and left) twice",
        )
        assert handle.alive
    # The loaded event's message was deleted; the other one is still there (or in the DLQ).
    assert _queued(queue_url, dev_stack) + _queued(f"{queue_url}-dlq", dev_stack) == 1
