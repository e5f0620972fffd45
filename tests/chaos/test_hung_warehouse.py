"""A warehouse that never answers a COPY: statements time out, SIGTERM still ends `pipes run`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from loader.config.settings import AwsSettings
from loader.config.spec import EventSpec
from loader.devstack import DevStack
from loader.notify.provision import ensure_notification_rules, ensure_queue, queue_arn
from loader.store.aws import aws_client
from loader.store.s3 import S3Store
from loader.warehouse.connection import Warehouse
from loader.warehouse.manager import PipeManager
from loader.warehouse.sqs_loader import SHUTDOWN_GRACE_S, SqsLoader
from tests.chaos.hung_warehouse import CopyBlackHole
from tests.integration.helpers import make_spec, upload_sample_file
from tests.integration.loading import running
from tests.integration.workers import cli_env
from tests.waiting import eventually

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]


def _queue_depth(aws: AwsSettings, queue_url: str) -> int:
    """Messages on the queue, visible or not (a deleted one is neither)."""
    sqs = aws_client("sqs", aws)
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def _setup(dev_stack: DevStack, unique_name: Callable[..., str]) -> tuple[EventSpec, str, str]:
    """An applied event type notifying its own queue, with one valid file notified; (spec, queue, key)."""
    settings = dev_stack.settings
    if dev_stack.service("fakesnow") is None or settings.snowflake.port is None:
        pytest.skip("needs the local fakesnow server started by the dev stack")
    spec = make_spec(unique_name("hung", sep="_"), bucket="it-hung")
    S3Store(settings.aws, spec.s3.bucket).create_bucket()
    queue_url = ensure_queue(settings, unique_name("hq"))
    ensure_notification_rules(settings, spec.s3.bucket, {spec.data_prefix: queue_arn(settings, queue_url)})
    # moto sends an s3:TestEvent as the rules are set: take it off, so the queue holds only files'.
    sqs = aws_client("sqs", settings.aws)
    for message in sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1).get("Messages", []):
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    with Warehouse(settings.snowflake) as warehouse:
        PipeManager(warehouse, settings).apply(spec)
    return spec, queue_url, upload_sample_file(S3Store(settings.aws, spec.s3.bucket), spec, 0, 10)


def test_a_copy_that_never_answers_times_out_and_the_loader_goes_on(
    dev_stack: DevStack, unique_name: Callable[..., str]
) -> None:
    """With statement_timeout_s=3 a COPY the warehouse never answers fails within seconds, the
    loader keeps polling, and the file's notification stays on the queue."""
    spec, queue_url, key = _setup(dev_stack, unique_name)
    settings = dev_stack.settings
    with CopyBlackHole(settings.snowflake.port or 0) as proxy:
        through = settings.model_copy(
            update={
                "snowflake": settings.snowflake.model_copy(
                    update={"port": proxy.port, "statement_timeout_s": 3}
                )
            }
        )
        loader = SqsLoader(through, [spec], queue_url=queue_url, wait_time_s=1, visibility_timeout_s=30)
        with running(loader) as handle:
            handle.until(lambda ldr: key in ldr.stats.not_loaded, 60, what="the COPY to time out")
            assert proxy.copies_held >= 1
            polled = loader.stats.messages
            time.sleep(2.5)
            assert handle.alive
    assert "timeout" in loader.stats.not_loaded[key].lower()
    assert loader.stats.files_loaded == 0
    assert polled >= 1
    assert _queue_depth(settings.aws, queue_url) == 1


def test_sigterm_ends_pipes_run_during_a_hung_copy(
    dev_stack: DevStack, unique_name: Callable[..., str], tmp_path: Path
) -> None:
    """`loader pipes run` logs one line naming its queue and events when it starts; SIGTERM in the
    middle of a COPY the warehouse never answers ends it within its grace period (exit 3), and
    the message is not deleted."""
    spec, queue_url, _ = _setup(dev_stack, unique_name)
    settings = dev_stack.settings
    specs_dir = tmp_path / "specs"
    specs_dir.mkdir()
    document = spec.model_dump(by_alias=True, mode="json", exclude={"source_path"})
    (specs_dir / f"{spec.name}.yaml").write_text(yaml.safe_dump(document))
    log_path = tmp_path / "pipes-run.log"
    with CopyBlackHole(settings.snowflake.port or 0) as proxy, log_path.open("wb") as log_file:
        env = cli_env(settings, LOADER_SNOWFLAKE__PORT=str(proxy.port), LOADER_LOG_FORMAT="json")
        command = [sys.executable, "-m", "loader", "pipes", "run", spec.name, "--specs", str(specs_dir)]
        process = subprocess.Popen(
            [*command, "--queue-url", queue_url, "--metrics-port", "0"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:

            def copy_held() -> bool:
                assert process.poll() is None, log_path.read_text()
                return proxy.copies_held > 0

            eventually(copy_held, 90, what="a COPY held by the proxy", detail=log_path.read_text)
            time.sleep(1)  # well inside the COPY
            sent = time.monotonic()
            os.kill(process.pid, signal.SIGTERM)
            code = process.wait(timeout=60)
            took = time.monotonic() - sent
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    output = log_path.read_text()
    assert code == 3, output
    assert took < SHUTDOWN_GRACE_S + 5, output
    started = [line for line in output.splitlines() if "loader_started" in line]
    assert len(started) == 1
    assert queue_url in started[0] and spec.name in started[0]
    assert "shutdown_abandoned_batch" in output
    assert _queue_depth(settings.aws, queue_url) == 1
